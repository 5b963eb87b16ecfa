"""Reward-model rewards in the envs ("ai-rm", "human-rm", a directory) and NormalizedReward."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rlaif_gym  # noqa: F401 - registers the env ids
from rewards.reward_model import RewardModel, RewardModelReward
from rewards.wrappers import NormalizedReward
from rlaif_gym.data.records import PromptRecord
from rlaif_gym.reward_protocol import RewardError, RewardFunction, RewardOutput
from rlaif_gym.reward_registry import make_reward
from rlaif_gym.testing import make_tiny_tokenizer

TOKENIZER = make_tiny_tokenizer()
PROMPTS = [PromptRecord(f"p{i}", "tldr", f"SUBREDDIT: r/test\nTITLE: Post {i}\nPOST: words {i}")
           for i in range(5)]
A = TOKENIZER("a", add_special_tokens=False)["input_ids"][0]


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory):
    rm = RewardModel.from_base("tiny-random", task="tldr", max_length=256, seed=0)
    rm.meta["label_source"] = "ai"
    return rm.save_pretrained(tmp_path_factory.mktemp("rm") / "rm-ai")


def env_kwargs(**extra):
    return {"tokenizer": TOKENIZER, "prompts": PROMPTS, "max_prompt_tokens": 256,
            "max_new_tokens": 4, **extra}


# -- reward-model rewards -----------------------------------------------------------------------


def test_ai_rm_env_passes_check_env(rm_dir):
    env = gym.make("RLAIF-TLDR-v0", reward="ai-rm", path=rm_dir, **env_kwargs())
    assert isinstance(env.unwrapped.reward_fn, RewardModelReward)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)


def test_episode_reward_is_the_rm_score_of_prompt_and_completion(rm_dir):
    env = gym.make("RLAIF-TLDR-v0", reward="ai-rm", path=rm_dir, **env_kwargs())
    env.reset(seed=0, options={"index": 2})
    for _ in range(4):
        _, reward, terminated, _, info = env.step(A)
    assert terminated and info["completion"] == "aaaa"
    expected = RewardModel.from_pretrained(rm_dir).score([PROMPTS[2].text], ["aaaa"])[0]
    assert reward == pytest.approx(expected, abs=1e-6)
    assert info["rm_raw_score"] == pytest.approx(expected, abs=1e-6)


def test_vector_env_scores_16_episodes_ending_together_with_one_forward_pass(rm_dir):
    envs = gym.make_vec("RLAIF-TLDR-v0", num_envs=16, vectorization_mode="vector_entry_point",
                        reward="ai-rm", path=rm_dir, **env_kwargs(max_new_tokens=3))
    rm = envs.unwrapped.reward_fn.rm
    calls: list[int] = []
    original = rm.forward

    def counting_forward(input_ids, attention_mask):
        calls.append(input_ids.shape[0])
        return original(input_ids, attention_mask)

    rm.forward = counting_forward
    envs.reset(seed=0)
    actions = np.full(16, A)
    for _ in range(2):
        _, rewards, terminated, _, _ = envs.step(actions)
        assert not terminated.any() and np.all(rewards == 0.0)
    assert calls == []
    _, rewards, terminated, _, infos = envs.step(actions)
    assert terminated.all()
    assert calls == [16]  # ONE forward pass over all 16 episodes
    assert np.all(rewards != 0.0) and np.array_equal(rewards, infos["rm_raw_score"])


def test_a_bare_directory_is_a_reward_model_spec(rm_dir):
    for spec in (str(rm_dir), rm_dir):
        reward = make_reward(spec)
        assert isinstance(reward, RewardModelReward)
        assert reward.name == f"rm:{rm_dir}"
    env = gym.make("RLAIF-TLDR-v0", reward=str(rm_dir), **env_kwargs())
    assert isinstance(env.unwrapped.reward_fn, RewardModelReward)


def test_human_rm_is_registered_and_warns_about_an_ai_trained_model(rm_dir):
    with pytest.warns(UserWarning, match="'ai' labels"):
        reward = make_reward("human-rm", path=rm_dir)
    assert reward.name == "human-rm"


@pytest.mark.parametrize("name", ["ai-rm", "human-rm"])
def test_a_missing_path_is_a_clear_error(name, tmp_path):
    with pytest.raises(ValueError, match=f"reward '{name}' needs path="):
        make_reward(name)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_reward(name, path=tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="not a reward model directory"):
        make_reward(name, path=tmp_path)


def test_a_task_mismatch_is_refused(rm_dir):
    with pytest.raises(ValueError, match="task 'tldr', not 'helpful'"):
        make_reward("ai-rm", path=rm_dir, task="helpful")


def test_a_non_finite_rm_score_raises_a_reward_error_naming_the_reward(rm_dir):
    env = gym.make("RLAIF-TLDR-v0", reward="ai-rm", path=rm_dir, **env_kwargs(max_new_tokens=1))
    env.unwrapped.reward_fn.rm.forward = lambda ids, mask: torch.full((ids.shape[0],), np.nan)
    env.reset(seed=0)
    with pytest.raises(RewardError, match="'ai-rm'.*non-finite"):
        env.step(A)


def test_a_wrong_number_of_rm_scores_raises_a_reward_error_naming_the_reward(rm_dir):
    reward = make_reward("ai-rm", path=rm_dir)
    reward.rm.score = lambda contexts, responses, batch_size=None: np.zeros(len(contexts) - 1)
    with pytest.raises(RewardError, match="'ai-rm'.*one score per episode"):
        reward(["a", "b"], ["c", "d"])


# -- normalization ------------------------------------------------------------------------------


class ListReward(RewardFunction):
    """Returns the scores it is given, batch by batch, with a detail."""

    name = "list"

    def __init__(self, batches):
        self.batches = list(batches)

    def score(self, prompts, completions):
        scores = np.asarray(self.batches.pop(0), dtype=np.float64)
        return RewardOutput(scores=scores, details={"twice": 2 * scores})


def run(reward: RewardFunction, scores) -> RewardOutput:
    n = len(scores)
    return reward(["p"] * n, ["c"] * n)


FINITE = st.floats(-1e6, 1e6, allow_nan=False)
BATCHES = st.lists(st.lists(FINITE, min_size=1, max_size=16), min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(batches=BATCHES, low=st.floats(-10, 0), width=st.floats(0.01, 20),
       whiten=st.booleans(), running=st.booleans())
def test_normalized_scores_respect_the_clip_bounds_and_are_finite(batches, low, width, whiten,
                                                                  running):
    reward = NormalizedReward(ListReward(batches), whiten=whiten, clip=(low, low + width),
                              running=running)
    for batch in list(batches):
        out = run(reward, batch)
        assert np.all(np.isfinite(out.scores))
        assert np.all((out.scores >= low) & (out.scores <= low + width))
        assert np.array_equal(out.details["raw_score"], np.asarray(batch, dtype=np.float64))
        assert np.array_equal(out.details["twice"], 2 * np.asarray(batch, dtype=np.float64))


@settings(max_examples=60, deadline=None)
@given(batches=BATCHES, running=st.booleans())
def test_whitening_never_produces_nan(batches, running):
    reward = NormalizedReward(ListReward(batches), whiten=True, running=running)
    for batch in list(batches):
        assert np.all(np.isfinite(run(reward, batch).scores))


@settings(max_examples=60, deadline=None)
@given(batch=st.lists(FINITE, min_size=1, max_size=16), low=st.floats(-10, 0),
       width=st.floats(0.01, 20))
def test_clipping_is_idempotent(batch, low, width):
    clip = (low, low + width)
    once = NormalizedReward(ListReward([batch]), whiten=False, clip=clip)
    twice = NormalizedReward(NormalizedReward(ListReward([batch]), whiten=False, clip=clip),
                             whiten=False, clip=clip)
    out_once, out_twice = run(once, batch), run(twice, batch)
    assert np.array_equal(out_once.scores, out_twice.scores)
    assert np.array_equal(out_twice.details["inner_raw_score"], np.asarray(batch, float))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mean=st.floats(-100, 100), std=st.floats(0.01, 50), seed=st.integers(0, 2**32 - 1))
def test_running_whitening_of_a_stationary_stream_converges_to_mean_0_std_1(mean, std, seed):
    rng = np.random.default_rng(seed)
    batches = [rng.normal(mean, std, size=32) for _ in range(300)]
    reward = NormalizedReward(ListReward(batches), whiten=True, running=True)
    outputs = [run(reward, b).scores for b in list(batches)]
    late = np.concatenate(outputs[-100:])
    assert abs(late.mean()) < 0.1
    assert abs(late.std() - 1.0) < 0.1


def test_batch_whitening_without_running_statistics_standardizes_each_batch():
    reward = NormalizedReward(ListReward([[1.0, 2.0, 3.0], [10.0, 30.0]]), running=False)
    first, second = run(reward, [1, 2, 3]).scores, run(reward, [10, 30]).scores
    assert first.mean() == pytest.approx(0) and first.std() == pytest.approx(1, rel=1e-6)
    assert second.tolist() == pytest.approx([-1.0, 1.0], rel=1e-6)


def test_running_statistics_survive_a_state_dict_round_trip():
    reward = NormalizedReward(ListReward([[1.0, 5.0, 9.0], [4.0]]))
    run(reward, [1, 5, 9])
    copy = NormalizedReward(ListReward([[4.0]]))
    copy.load_state_dict(reward.state_dict())
    assert run(copy, [4.0]).scores == pytest.approx(run(reward, [4.0]).scores)


def test_make_reward_normalize_option_wraps_any_reward():
    def constant(prompts, completions):
        return [3.0] * len(prompts)

    reward = make_reward(constant, normalize={"whiten": True, "clip": [-5, 5]})
    assert isinstance(reward, NormalizedReward) and reward.clip == (-5.0, 5.0)
    assert reward.name == "normalized(constant)"
    assert isinstance(make_reward("none", normalize=True), NormalizedReward)
    assert not isinstance(make_reward("none", normalize=False), NormalizedReward)
    with pytest.raises(ValueError, match="unknown normalize options"):
        make_reward(constant, normalize={"whitening": True})
    with pytest.raises(ValueError, match="low < high"):
        make_reward(constant, normalize={"clip": [1, -1]})


def test_env_rewards_are_normalized_and_the_raw_rm_score_is_kept(rm_dir):
    env = gym.make("RLAIF-TLDR-v0", reward="ai-rm", path=rm_dir,
                   normalize={"whiten": False, "clip": [-1e-4, 1e-4]}, **env_kwargs())
    assert isinstance(env.unwrapped.reward_fn, NormalizedReward)
    env.reset(seed=0)
    for _ in range(4):
        _, reward, terminated, _, info = env.step(A)
    assert terminated
    assert abs(reward) <= 1e-4
    assert info["raw_score"] == info["rm_raw_score"] == pytest.approx(
        RewardModel.from_pretrained(rm_dir).score([info["prompt"]], [info["completion"]])[0],
        abs=1e-6)
