"""agents.rollout.collect_episodes: one scored episode per sub-env, sampled with a KV cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from agents.rollout import collect_episodes
from rlaif_gym.data.records import PromptRecord
from rlaif_gym.envs.vector_env import TextGenerationVectorEnv
from rlaif_gym.testing import make_tiny_causal_lm, make_tiny_tokenizer

TOKENIZER = make_tiny_tokenizer()
PROMPTS = [
    PromptRecord(f"p{i}", "tldr", f"TITLE: Post {i}\nPOST: " + "word " * (3 * i + 1))
    for i in range(5)
]


class CountingReward:
    def __init__(self) -> None:
        self.episodes = 0

    def __call__(self, prompts, completions):
        self.episodes += len(prompts)
        return [float(len(c)) for c in completions]


def make_envs(num_envs: int, reward, mode=AutoresetMode.DISABLED, max_new_tokens: int = 12):
    return TextGenerationVectorEnv(
        num_envs=num_envs, tokenizer=TOKENIZER, prompts=PROMPTS, reward=reward,
        max_prompt_tokens=96, max_new_tokens=max_new_tokens, autoreset_mode=mode,
    )


@pytest.fixture(scope="module")
def eos_happy_model():
    """A tiny model whose EOS logit is raised so that episodes end at different steps."""
    model = make_tiny_causal_lm(seed=1)
    with torch.no_grad():
        model.lm_head.bias = None
        model.lm_head.weight[258] *= 0.0
        model.model.norm.weight.fill_(1.0)
    return model


def test_every_sub_env_yields_exactly_one_scored_episode(eos_happy_model):
    reward = CountingReward()
    envs = make_envs(6, reward)
    batch = collect_episodes(eos_happy_model, envs, seed=0,
                             generator=torch.Generator().manual_seed(0))
    assert reward.episodes == 6
    assert len(batch.completion_ids) == 6
    # the reward is the completion's character count, so rewards and texts must line up
    assert batch.rewards.tolist() == [float(len(c)) for c in batch.completions]
    assert batch.steps == int(batch.completion_lengths.max())


def test_completions_match_the_env_decoding_of_the_sampled_tokens(eos_happy_model):
    envs = make_envs(4, CountingReward())
    batch = collect_episodes(eos_happy_model, envs, seed=1,
                             generator=torch.Generator().manual_seed(1))
    for ids, text in zip(batch.completion_ids, batch.completions, strict=True):
        assert TOKENIZER.decode(ids, skip_special_tokens=True) == text
        assert len(ids) <= 12


def test_same_seeds_give_the_same_batch(eos_happy_model):
    runs = []
    for _ in range(2):
        envs = make_envs(3, CountingReward())
        runs.append(collect_episodes(eos_happy_model, envs, seed=5,
                                     generator=torch.Generator().manual_seed(7)))
    for a, b in zip(runs[0].completion_ids, runs[1].completion_ids, strict=True):
        assert np.array_equal(a, b)


def test_kv_cache_rollout_log_probs_match_a_full_forward_pass(eos_happy_model):
    envs = make_envs(3, CountingReward())
    batch = collect_episodes(eos_happy_model, envs, seed=2, temperature=0.9,
                             generator=torch.Generator().manual_seed(3))
    for prompt, completion, logp in zip(batch.prompt_ids, batch.completion_ids,
                                        batch.sample_logprobs, strict=True):
        ids = torch.as_tensor(np.concatenate([prompt, completion]))[None]
        with torch.no_grad():
            logits = eos_happy_model(ids).logits[0, len(prompt) - 1 : -1].float() / 0.9
        expected = torch.log_softmax(logits, -1).gather(-1, torch.as_tensor(completion)[:, None])
        assert np.allclose(expected.squeeze(-1).numpy(), logp, atol=1e-4)


def test_next_step_envs_warn_about_discarded_episodes(eos_happy_model):
    envs = make_envs(2, CountingReward(), mode=AutoresetMode.NEXT_STEP)
    with pytest.warns(UserWarning, match="DISABLED"):
        collect_episodes(eos_happy_model, envs, seed=0)


def test_non_positive_temperature_is_rejected(eos_happy_model):
    with pytest.raises(ValueError, match="temperature"):
        collect_episodes(eos_happy_model, make_envs(1, CountingReward()), temperature=0.0)
