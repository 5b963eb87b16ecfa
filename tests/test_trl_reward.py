"""rlaif-gym rewards as TRL reward functions (as_trl_reward), the TRL prompt dataset, and two
real GRPOTrainer steps on tiny models with the "pairwise" reward."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from rewards.judges.base import Judge, as_segments
from rewards.prompts import render_plain
from rlaif_gym.data import TRL_COLUMNS, trl_prompt_dataset
from rlaif_gym.data.records import PromptRecord
from rlaif_gym.reward_protocol import RewardFunction, RewardOutput
from rlaif_gym.tasks import TLDR_INSTRUCTION, get_task
from rlaif_gym.testing import make_tiny_tokenizer
from rlaif_gym.trl_reward import as_trl_reward, completion_text

TOKENIZER = make_tiny_tokenizer()
SUMMARIES = re.compile(r"Summary 1 - (.*)\nSummary 2 - (.*)\n", re.S)
RECORDS = [PromptRecord(f"p{i}", "tldr", f"SUBREDDIT: r/test\nTITLE: Post {i}\nPOST: "
                        + "word " * (5 + 20 * i), reference=f"reference {i}")
           for i in range(4)]


class Recorder(RewardFunction):
    """Length reward that records what it was called with."""

    name = "recorder"

    def __init__(self, needs_references: bool = False) -> None:
        self.needs_references = needs_references
        self.calls: list[tuple] = []

    def score(self, prompts, completions, references=None):
        self.calls.append((list(prompts), list(completions), references))
        return RewardOutput(scores=np.array([len(c) / 10 for c in completions]))


# -- the adapter ---------------------------------------------------------------------------------


def test_standard_and_conversational_formats_give_the_same_call():
    inner = Recorder()
    fn = as_trl_reward(inner, task="tldr")
    assert fn.__name__ == "rlaif_recorder"
    text = RECORDS[0].text
    standard = fn(prompts=[f"{text}\n\nTL;DR:"] * 2, completions=["abc", "de"],
                  completion_ids=[[1], [2]], trainer_state=None)
    chat = [{"role": "user", "content": f"{TLDR_INSTRUCTION}\n\n{text}"}]
    conversational = fn(prompts=[chat] * 2,
                        completions=[[{"role": "assistant", "content": "abc"}],
                                     [{"role": "assistant", "content": [
                                         {"type": "text", "text": "de"}]}]])
    assert standard == conversational == [0.3, 0.2]
    assert inner.calls[0][:2] == inner.calls[1][:2] == ([text, text], ["abc", "de"])


def test_the_task_input_column_wins_over_the_prompt_and_references_reach_the_reward():
    inner = Recorder(needs_references=True)
    fn = as_trl_reward(inner, task="tldr", name="mine")
    fn(prompts=["templated prompt"] * 2, completions=["a", "b"],
       task_input=["post A", "post A"], reference=["ref", "ref"])
    assert inner.calls == [(["post A", "post A"], ["a", "b"], ["ref", "ref"])]
    with pytest.raises(ValueError, match="reference"):
        fn(prompts=["x"], completions=["a"])
    assert fn.__name__ == "mine"


def test_hh_prompts_map_back_to_the_dialogue():
    task = get_task("helpful")
    context = "\n\nHuman: hi there\n\nAssistant: hello\n\nHuman: tell me a joke"
    assert task.task_input(task.policy_messages(PromptRecord("h", "helpful", context))) == context
    assert task.task_input(task.plain_prompt(task.policy_messages(
        PromptRecord("h", "helpful", context)))) == context


def test_num_generations_checks_that_groups_are_whole():
    fn = as_trl_reward(Recorder(), num_generations=2)
    fn(prompts=["a", "a", "b", "b"], completions=["1", "2", "3", "4"])
    with pytest.raises(ValueError, match="num_generations"):
        fn(prompts=["a", "b", "b", "c"], completions=["1", "2", "3", "4"])


class LongerWins(Judge):
    """Prefers the longer of the two summaries, in both orders."""

    name = "longer-wins"

    def render(self, messages, assistant_prefix=""):
        return render_plain(messages, assistant_prefix)

    def next_token_logprobs(self, prompts, candidates):
        rows = []
        for prompt in prompts:
            a, b = SUMMARIES.findall("".join(as_segments(prompt)))[-1]
            x = float(len(a) - len(b))
            logp = {"1": -math.log1p(math.exp(-x)), "2": -math.log1p(math.exp(x))}
            rows.append([logp[c] for c in candidates])
        return np.array(rows)

    def generate(self, prompts, max_new_tokens):  # pragma: no cover - no CoT here
        raise NotImplementedError

    def is_single_token(self, text):
        return len(text) == 1


def test_pairwise_metrics_go_to_trl_log_metric():
    logged = {}
    fn = as_trl_reward("pairwise", task="tldr", judge=LongerWins())
    scores = fn(prompts=["x"] * 4, completions=["a", "bb", "ccc", "dddd"],
                task_input=["post"] * 4, log_metric=lambda k, v: logged.__setitem__(k, v))
    assert abs(sum(scores)) < 1e-12
    assert logged == {"rlaif_pairwise/position_consistency": 1.0,
                      "rlaif_pairwise/judge_prompts": 12.0}


def test_completion_text_of_each_format():
    assert completion_text("plain") == "plain"
    assert completion_text([{"role": "assistant", "content": "x"}]) == "x"
    assert completion_text([]) == ""


# -- the dataset ---------------------------------------------------------------------------------


@pytest.mark.parametrize("max_prompt_tokens", [None, 400, 150])
def test_dataset_prompts_render_to_the_envs_prompt_ids(max_prompt_tokens):
    data = trl_prompt_dataset("tldr", prompts=RECORDS, tokenizer=TOKENIZER,
                              max_prompt_tokens=max_prompt_tokens)
    assert tuple(data.column_names) == TRL_COLUMNS and len(data) == 4
    task = get_task("tldr")
    for row, record in zip(data, RECORDS, strict=True):
        ids = TOKENIZER.apply_chat_template(row["prompt"], tokenize=True,
                                            add_generation_prompt=True, return_dict=True
                                            )["input_ids"]
        budget = max_prompt_tokens or 10**6
        assert list(ids) == task.render_prompt(record, TOKENIZER, budget)
        assert row["task_input"] == record.text and row["reference"] == record.reference
    standard = trl_prompt_dataset("tldr", prompts=RECORDS, tokenizer=TOKENIZER,
                                  max_prompt_tokens=150, conversational=False, limit=2)
    assert len(standard) == 2
    assert TOKENIZER(standard[0]["prompt"], add_special_tokens=False)["input_ids"] == \
        task.render_prompt(RECORDS[0], TOKENIZER, 150)


# -- two real GRPO steps ---------------------------------------------------------------------------


def test_grpo_trainer_logs_the_rewards_our_pairwise_reward_returned(tmp_path):
    pytest.importorskip("trl", reason="the 'trl' extra is not installed")
    import torch
    from trl import GRPOConfig, GRPOTrainer

    from rewards.judges.transformers_judge import TransformersJudge
    from rlaif_gym.testing import make_tiny_causal_lm

    torch.manual_seed(0)
    judge = TransformersJudge(make_tiny_causal_lm(seed=1), make_tiny_tokenizer(), batch_size=4)
    reward = as_trl_reward("pairwise", task="tldr", judge=judge, num_generations=2)
    returned: list[list[float]] = []

    def recording(*args, **kwargs):
        out = reward(*args, **kwargs)
        returned.append(out)
        return out

    recording.__name__ = reward.__name__
    dataset = trl_prompt_dataset("tldr", prompts=RECORDS, tokenizer=TOKENIZER,
                                 max_prompt_tokens=96)
    config = GRPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2,
        max_completion_length=6, max_steps=2, learning_rate=1e-3, logging_steps=1,
        report_to="none", save_strategy="no", use_cpu=True, bf16=False,
        activation_checkpointing=False, disable_tqdm=True, dataloader_num_workers=0, seed=0,
    )
    trainer = GRPOTrainer(model=make_tiny_causal_lm(), reward_funcs=recording, args=config,
                          train_dataset=dataset, processing_class=make_tiny_tokenizer())
    trainer.train()
    assert len(returned) == 2 and all(len(r) == 4 for r in returned)
    logged = [h["rewards/rlaif_pairwise/mean"] for h in trainer.state.log_history
              if "rewards/rlaif_pairwise/mean" in h]
    assert len(logged) == 2
    for got, ours in zip(logged, returned, strict=True):
        assert got == pytest.approx(float(np.mean(np.float32(ours))), abs=1e-6)
    last = list(trainer._logs["rewards"]["rlaif_pairwise"])
    np.testing.assert_allclose(last, np.float32(returned[-1]), atol=1e-7)
    consistency = [h.get("rlaif_pairwise/position_consistency") for h in trainer.state.log_history]
    assert any(c is not None and 0.0 <= c <= 1.0 for c in consistency)
    # each call held two groups of two completions of one prompt: sum of scores 0 per group
    for ours in returned:
        assert math.isclose(ours[0] + ours[1], 0.0, abs_tol=1e-9)
        assert math.isclose(ours[2] + ours[3], 0.0, abs_tol=1e-9)
