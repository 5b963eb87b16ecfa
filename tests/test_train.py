"""agents.train: the REINFORCE loop on the tiny model (learning, metrics, checkpoints, resume)
and the ``train``/``sample`` CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from agents.train import (
    METRIC_COLUMNS,
    PromptSchedule,
    TrainConfig,
    find_checkpoint,
    read_metrics,
    train,
)
from rlaif_gym.data.records import PromptRecord

PROMPTS = [PromptRecord(f"p{i}", "tldr", f"TITLE: Post {i}\nPOST: " + "word " * (i % 4 + 1))
           for i in range(16)]
LETTERS = frozenset("abcdefghijklmnopqrstuvwxyz")


class LetterFraction:
    """Toy reward: the fraction of a completion's characters that are ASCII lowercase letters
    (about 0.1 for the random tiny model). Raises once more than ``fail_after`` episodes
    were scored, to simulate a crash (the env scores the episodes that end in one env step
    together, so a batch may take several calls)."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.episodes = 0
        self.fail_after = fail_after

    def __call__(self, prompts, completions):
        self.episodes += len(completions)
        if self.fail_after is not None and self.episodes > self.fail_after:
            raise RuntimeError("simulated crash")
        return [sum(ch in LETTERS for ch in c) / max(len(c), 1) for c in completions]

    def __repr__(self) -> str:
        return "LetterFraction()"


def tiny_config(out_dir, **overrides) -> TrainConfig:
    options = dict(
        out_dir=str(out_dir), reward=LetterFraction(), policy="tiny-random", steps=6,
        batch_size=4, lr=1e-2, value_lr=1e-2, max_new_tokens=6, max_prompt_tokens=160,
        checkpoint_every=3, env_options={"prompts": PROMPTS}, progress=False, threads=1,
    )
    options.update(overrides)
    return TrainConfig(**options)


def _without_time(rows):
    return [{k: v for k, v in row.items() if not k.startswith("time")} for row in rows]


def test_training_on_a_toy_reward_increases_the_mean_reward(tmp_path):
    config = tiny_config(tmp_path / "run", steps=30, batch_size=8, max_new_tokens=8,
                         checkpoint_every=100)
    result = train(config)
    rewards = [row["reward"] for row in result.metrics]
    assert len(rewards) == 30
    first, last = np.mean(rewards[:5]), np.mean(rewards[-5:])
    # gains over seeds 0-3 with either value_init: 0.07-0.27 (reward of the random model ~0.1)
    assert last > first + 0.05, (first, last, rewards)


def test_metrics_csv_curves_and_checkpoint_are_written(tmp_path):
    out = tmp_path / "run"
    result = train(tiny_config(out, steps=4, checkpoint_every=2))
    with open(out / "metrics.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == METRIC_COLUMNS
        rows = list(reader)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert all(np.isfinite(float(r[c])) for r in rows for c in METRIC_COLUMNS)
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert find_checkpoint(out) == out / "checkpoint"
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["step"] == 4 and state["config"]["batch_size"] == 4
    assert json.loads((out / "config.json").read_text())["reward"] == "LetterFraction()"
    assert result.step == 4 and len(result.metrics) == 4
    assert not list(out.glob("checkpoint.*"))  # no temporary or old folders left
    # the saved policy loads as a plain causal LM and holds the trained weights
    from rlaif_gym.models import load_causal_lm, load_tokenizer

    loaded = load_causal_lm(out / "checkpoint" / "policy")
    assert not torch.equal(loaded.lm_head.weight,
                           load_causal_lm("tiny-random").lm_head.weight)
    assert len(load_tokenizer(out / "checkpoint" / "policy")) == 259


def test_resume_after_a_crash_reproduces_the_uninterrupted_run(tmp_path):
    reference = train(tiny_config(tmp_path / "straight"))
    out = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(tiny_config(out, reward=LetterFraction(fail_after=16)))  # dies in step 5
    assert [r["step"] for r in read_metrics(out / "metrics.csv")] == [1, 2, 3, 4]
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 3
    resumed = train(tiny_config(out, resume=True))
    assert [r["step"] for r in resumed.metrics] == [1, 2, 3, 4, 5, 6]  # step 4 redone once
    assert _without_time(resumed.metrics) == _without_time(reference.metrics)
    from rlaif_gym.models import load_causal_lm

    a = load_causal_lm(tmp_path / "straight" / "checkpoint" / "policy")
    b = load_causal_lm(out / "checkpoint" / "policy")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


def test_a_finished_run_is_not_overwritten_without_resume(tmp_path):
    out = tmp_path / "run"
    train(tiny_config(out, steps=1))
    with pytest.raises(FileExistsError, match="resume"):
        train(tiny_config(out, steps=1))


def test_resume_with_more_steps_extends_the_curve(tmp_path):
    out = tmp_path / "run"
    train(tiny_config(out, steps=2, checkpoint_every=2))
    result = train(tiny_config(out, steps=3, checkpoint_every=2, resume=True))
    assert [r["step"] for r in result.metrics] == [1, 2, 3]
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 3


def test_a_final_checkpoint_without_training_state_is_evaluable_but_not_extendable(tmp_path):
    from rlaif_gym.errors import UsageError
    from rlaif_gym.pipelines.evaluate import resolve_policy

    out = tmp_path / "run"
    train(tiny_config(out, steps=2, checkpoint_every=1, keep_training_state=False))
    checkpoint = out / "checkpoint"
    assert find_checkpoint(out) == checkpoint
    assert not (checkpoint / "trainer_state.pt").exists()
    assert not (checkpoint / "value.safetensors").exists()
    assert json.loads((checkpoint / "state.json").read_text())["training_state"] is False
    assert resolve_policy(str(out)).step == 2
    again = train(tiny_config(out, steps=2, checkpoint_every=1, resume=True))
    assert again.step == 2 and [r["step"] for r in again.metrics] == [1, 2]
    with pytest.raises(UsageError, match="cannot be extended"):
        train(tiny_config(out, steps=3, checkpoint_every=1, resume=True))
    assert json.loads((checkpoint / "state.json").read_text())["step"] == 2


def test_a_crash_before_the_end_resumes_from_a_full_checkpoint_without_training_state_flag(
        tmp_path):
    reference = train(tiny_config(tmp_path / "straight"))
    out = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(tiny_config(out, reward=LetterFraction(fail_after=16), keep_training_state=False))
    assert (out / "checkpoint" / "trainer_state.pt").is_file()  # step 3 of 6: not final
    resumed = train(tiny_config(out, resume=True, keep_training_state=False))
    assert _without_time(resumed.metrics) == _without_time(reference.metrics)
    assert not (out / "checkpoint" / "trainer_state.pt").exists()


def test_prompt_schedule_visits_every_prompt_once_per_epoch():
    schedule = PromptSchedule(num_prompts=10, seed=3)
    first_epoch = [i for step in range(5) for i in schedule.indices(step, 2)]
    assert sorted(first_epoch) == list(range(10))
    second_epoch = [i for step in range(5, 10) for i in schedule.indices(step, 2)]
    assert sorted(second_epoch) == list(range(10)) and second_epoch != first_epoch
    assert schedule.indices(7, 2) == PromptSchedule(10, 3).indices(7, 2)
    # batches that straddle an epoch boundary
    straddle = [i for step in range(4) for i in schedule.indices(step, 3)]
    assert sorted(straddle[:10]) == list(range(10))


def test_bad_config_values_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="kl_coef"):
        tiny_config(tmp_path, kl_coef=2.0)
    with pytest.raises(ValueError, match="batch_size"):
        tiny_config(tmp_path, batch_size=0)
    with pytest.raises(ValueError, match="postprocess"):
        tiny_config(tmp_path, postprocess="shout")
    with pytest.raises(ValueError, match="value_init"):
        tiny_config(tmp_path, value_init="ones")


class Constant:
    """Toy reward: the same score for every completion."""

    def __init__(self, value: float) -> None:
        self.value = value

    def __call__(self, prompts, completions):
        return [self.value] * len(completions)


@pytest.mark.parametrize("value_init", ["first-batch", "zero"])
def test_value_baseline_starts_at_the_first_batch_mean_return_unless_zero(tmp_path, value_init):
    config = tiny_config(tmp_path / value_init, reward=Constant(0.8), steps=1, kl_coef=0.05,
                         value_init=value_init)
    first = train(config).metrics[0]
    # value_mean is measured before the first optimiser step: exactly the starting baseline
    expected = (1 - 0.05) * 0.8 if value_init == "first-batch" else 0.0
    assert first["value_mean"] == pytest.approx(expected, abs=1e-6)
    if value_init == "first-batch":  # advantage = R - V = 0: no policy gradient at all
        assert first["pg_loss"] == pytest.approx(0.0, abs=1e-6)
    else:
        assert first["pg_loss"] != pytest.approx(0.0, abs=1e-3)


def test_train_and_sample_cli_on_the_tiny_model(tmp_path, capsys):
    from rlaif_gym.cli import main

    out = tmp_path / "cli-run"
    code = main(["train", "--policy", "tiny-random", "--reward", "none", "--steps", "2",
                 "--batch-size", "2", "--max-new-tokens", "4", "--max-prompt-tokens", "256",
                 "--split", "sample", "--out", str(out), "--threads", "1", "--no-progress",
                 "--postprocess", "strip-trailing-punctuation"])
    assert code == 0
    assert [r["step"] for r in read_metrics(out / "metrics.csv")] == [1, 2]
    capsys.readouterr()
    code = main(["sample", str(out), "--n", "2", "--split", "sample", "--threads", "1"])
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.count("COMPLETION") == 2


def test_cli_defaults_match_the_train_config_defaults():
    import dataclasses

    from rlaif_gym.cli import TRAIN_DEFAULTS

    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for name, value in TRAIN_DEFAULTS.items():
        assert fields[name] == value, name


def test_reward_options_are_parsed_as_json_when_possible():
    from rlaif_gym.cli import build_parser, train_config_from_args

    args = build_parser().parse_args([
        "train", "--out", "x", "--reward-option", "batch_size=4",
        "--reward-option", "dtype=bfloat16", "--max-grad-norm", "0",
    ])
    config = train_config_from_args(args)
    assert config.reward_options == {"batch_size": 4, "dtype": "bfloat16"}
    assert config.max_grad_norm is None and config.reward == "direct"


def test_direct_reward_gets_the_judge_option_and_the_postprocess_wrapper(tmp_path):
    from agents.postprocess import PostprocessedReward
    from agents.train import build_reward

    config = tiny_config(tmp_path, reward="direct", judge="tiny-random",
                         postprocess="strip-trailing-punctuation")
    reward = build_reward(config)
    assert isinstance(reward, PostprocessedReward)
    out = reward(["TITLE: a post\nPOST: text"], ["a summary . ."])
    assert out.scores.shape == (1,) and -1.0 <= out.scores[0] <= 1.0
    assert "direct_expected_score" in out.details  # the d-RLAIF reward did the scoring
    assert reward.inner.judge.model.config.vocab_size == 259  # the tiny judge, not the default


class RecordingPrompts:
    """Reward 0 that remembers which prompts it saw."""

    def __init__(self) -> None:
        self.prompts: set[str] = set()

    def __call__(self, prompts, completions):
        self.prompts.update(prompts)
        return [0.0] * len(completions)


def test_train_prompts_keeps_the_remaining_prompts_out_of_training(tmp_path):
    reward = RecordingPrompts()
    train(tiny_config(tmp_path / "run", reward=reward, train_prompts=5, steps=4, batch_size=4,
                      max_new_tokens=2, checkpoint_every=100))
    assert reward.prompts == {p.text for p in PROMPTS[:5]}


def test_train_prompts_larger_than_the_split_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="train_prompts=17"):
        train(tiny_config(tmp_path / "run", train_prompts=17, steps=1))
    with pytest.raises(ValueError, match="train_prompts"):
        tiny_config(tmp_path, train_prompts=0)


def test_update_micro_batch_defaults_to_at_most_eight_sequences_in_whole_groups():
    from agents.train import TrainConfig, update_micro_batch

    def micro(**kw):
        return update_micro_batch(TrainConfig(out_dir="unused", policy="tiny-random", reward="none",
                                              **kw))

    assert micro(batch_size=16) == 8
    assert micro(batch_size=4) == 4
    assert micro(batch_size=18, samples_per_prompt=3, baseline="loo") == 6
    assert micro(batch_size=16, micro_batch_size=16) == 16
