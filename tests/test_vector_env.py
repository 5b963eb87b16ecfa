"""TextGenerationVectorEnv: batched stepping, autoreset modes, one reward call per step, and
equivalence with gymnasium's SyncVectorEnv over single envs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlaif_gym.data.records import PromptRecord
from rlaif_gym.envs.text_env import TextGenerationEnv
from rlaif_gym.envs.vector_env import TextGenerationVectorEnv
from rlaif_gym.reward_protocol import RewardFunction, RewardOutput
from rlaif_gym.testing import make_tiny_tokenizer

EOS = 258
PAD = 256
VOCAB = 259
A = 65  # an ordinary byte token

PROMPTS = [
    PromptRecord(f"p{i}", "tldr", f"SUBREDDIT: r/test\nTITLE: Post {i}\nPOST: " + "word " * (4 * i))
    for i in range(7)
]
TOKENIZER = make_tiny_tokenizer()


def length_reward(prompts, completions):
    """Deterministic and depends on both inputs, so mixing episodes up would show."""
    return [len(c) / 10 + len(p) / 1000 for p, c in zip(prompts, completions, strict=True)]


class DetailedReward(RewardFunction):
    """Scores plus per-episode details: a scalar and a (3,) vector."""

    name = "detailed"

    def score(self, prompts, completions):
        lengths = np.array([len(c) for c in completions], dtype=np.float64)
        return RewardOutput(scores=lengths / 7,
                            details={"judge_score": lengths, "dist": np.outer(lengths, [1, 2, 3])})


class CountingReward:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, prompts, completions):
        self.calls.append(len(prompts))
        return [1.0] * len(prompts)


ENV_KWARGS = dict(tokenizer=TOKENIZER, prompts=PROMPTS, reward=length_reward,
                  max_prompt_tokens=128, max_new_tokens=5)


def make_vec(num_envs: int = 4, **kwargs) -> TextGenerationVectorEnv:
    return TextGenerationVectorEnv(num_envs=num_envs, **{**ENV_KWARGS, **kwargs})


def make_sync(num_envs: int = 4, autoreset_mode=AutoresetMode.NEXT_STEP, **kwargs) -> SyncVectorEnv:
    return SyncVectorEnv(
        [lambda: TextGenerationEnv(**{**ENV_KWARGS, **kwargs}) for _ in range(num_envs)],
        autoreset_mode=autoreset_mode,
    )


def random_actions(rng: np.random.Generator, num_envs: int, eos_prob: float) -> np.ndarray:
    actions = rng.integers(0, VOCAB, size=num_envs)
    actions[rng.random(num_envs) < eos_prob] = EOS
    return actions


# -- construction ------------------------------------------------------------------------------


def test_make_vec_with_vector_entry_point_returns_the_native_class():
    envs = gym.make_vec("RLAIF-TLDR-v0", num_envs=3, vectorization_mode="vector_entry_point",
                        **ENV_KWARGS)
    assert type(envs) is TextGenerationVectorEnv
    assert envs.num_envs == 3
    assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert envs.single_action_space == gym.spaces.Discrete(VOCAB)
    assert envs.observation_space["tokens"].shape == (3, 133)


def test_make_vec_passes_autoreset_mode_and_task(tiny_tokenizer):
    envs = gym.make_vec("RLAIF-HH-Helpful-v0", num_envs=2,
                        vectorization_mode="vector_entry_point", tokenizer=tiny_tokenizer,
                        split="sample", reward=length_reward, max_prompt_tokens=256,
                        max_new_tokens=3, autoreset_mode="SameStep")
    assert envs.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert envs.core.task.name == "helpful"
    _, info = envs.reset(seed=0)
    assert list(info["data_source"]) == [envs.data_source] * 2


def test_bad_autoreset_mode_lists_the_valid_ones():
    with pytest.raises(ValueError, match="NextStep"):
        make_vec(autoreset_mode="sometimes")


# -- equivalence with SyncVectorEnv --------------------------------------------------------------


@pytest.mark.parametrize("reward", [length_reward, DetailedReward()], ids=["plain", "details"])
@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_native_vector_env_matches_sync_vector_env_over_single_envs(mode, reward):
    num_envs = 5
    native = make_vec(num_envs, autoreset_mode=mode, reward=reward)
    sync = make_sync(num_envs, autoreset_mode=mode, reward=reward)
    assert native.observation_space == sync.observation_space
    assert native.action_space == sync.action_space
    assert native.metadata["autoreset_mode"] == sync.metadata["autoreset_mode"]

    for seed in (0, 7):
        obs_n, info_n = native.reset(seed=seed)
        obs_s, info_s = sync.reset(seed=seed)
        assert data_equivalence(obs_n, obs_s, exact=True)
        assert data_equivalence(info_n, info_s, exact=True)
        rng = np.random.default_rng(seed)
        ended = 0
        for _ in range(40):
            actions = random_actions(rng, num_envs, eos_prob=0.2)
            out_n = native.step(actions)
            out_s = sync.step(actions)
            for got, want in zip(out_n, out_s, strict=True):
                assert data_equivalence(got, want, exact=True), (got, want)
            ended += int(out_n[2].sum())
        assert ended > 10  # many episodes ended, by EOS and by the length limit


def test_seed_i_of_the_vector_env_matches_a_single_env_seeded_with_seed_plus_i():
    native = make_vec(4)
    _, info = native.reset(seed=100)
    single = TextGenerationEnv(**ENV_KWARGS)
    expected = [single.reset(seed=100 + i)[1]["prompt_index"] for i in range(4)]
    assert info["prompt_index"].tolist() == expected


def test_reset_with_same_seed_is_deterministic_and_list_seeds_are_accepted():
    native = make_vec(4)
    a, _ = native.reset(seed=3)
    b, _ = native.reset(seed=3)
    c, _ = native.reset(seed=[3, 4, 5, 6])
    assert data_equivalence(a, b, exact=True) and data_equivalence(a, c, exact=True)
    with pytest.raises(ValueError, match="seeds"):
        native.reset(seed=[1, 2])


# -- rewards -----------------------------------------------------------------------------------


def test_exactly_one_reward_call_per_step_even_when_several_episodes_end_together():
    reward = CountingReward()
    native = make_vec(6, reward=reward, max_new_tokens=3)
    native.reset(seed=0)
    native.step(np.full(6, A))
    native.step(np.full(6, A))
    assert reward.calls == []  # no episode ended: no call
    _, rewards, terminated, _, _ = native.step(np.full(6, A))  # all six hit the length limit
    assert reward.calls == [6]
    assert terminated.all() and np.all(rewards == 1.0)
    native.step(np.full(6, A))  # NEXT_STEP autoreset step: nothing ends
    assert reward.calls == [6]
    _, rewards, terminated, _, _ = native.step(np.array([EOS, A, EOS, A, A, EOS]))
    assert reward.calls == [6, 3]
    assert terminated.tolist() == [True, False, True, False, False, True]
    assert rewards.tolist() == [1.0, 0.0, 1.0, 0.0, 0.0, 1.0]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), eos_prob=st.floats(0.0, 0.5))
def test_rewards_are_nonzero_only_where_an_episode_ends_and_obs_stay_in_space(seed, eos_prob):
    native = make_vec(4, reward=lambda p, c: [1.0] * len(p), max_new_tokens=4)
    obs, _ = native.reset(seed=seed)
    assert obs in native.observation_space
    rng = np.random.default_rng(seed)
    for _ in range(12):
        obs, rewards, terminated, truncated, _ = native.step(random_actions(rng, 4, eos_prob))
        assert obs in native.observation_space
        assert not truncated.any()
        assert np.array_equal(rewards != 0.0, terminated)


def test_final_infos_carry_prompt_text_and_decoded_completion():
    native = make_vec(3, max_new_tokens=4)
    native.reset(options={"index": [0, 1, 2]})
    h, i = (TOKENIZER(ch, add_special_tokens=False)["input_ids"][0] for ch in "hi")
    native.step(np.array([h, h, A]))
    native.step(np.array([i, EOS, A]))
    _, rewards, terminated, _, info = native.step(np.array([EOS, A, A]))
    assert terminated.tolist() == [True, False, False]
    assert info["_completion"].tolist() == [True, False, False]
    assert info["completion"][0] == "hi"
    assert info["prompt"][0] == PROMPTS[0].text
    assert info["completion"].dtype == object
    assert rewards[0] == pytest.approx(0.2 + len(PROMPTS[0].text) / 1000)


# -- autoreset ---------------------------------------------------------------------------------


def test_next_step_autoreset_ignores_the_action_and_returns_zero_reward():
    native = make_vec(2, max_new_tokens=5)
    native.reset(seed=0, options={"index": [1, 2]})
    _, _, terminated, _, _ = native.step(np.array([EOS, A]))
    assert terminated.tolist() == [True, False]
    obs, rewards, terminated, _, info = native.step(np.array([A, A]))
    assert rewards.tolist() == [0.0, 0.0] and not terminated.any()
    assert info["_prompt_index"].tolist() == [True, False]  # reset info of sub-env 0 only
    new_prompt = native.core.prompt_ids(int(info["prompt_index"][0]))
    assert obs["length"][0] == new_prompt.size  # the action was not appended
    assert np.array_equal(obs["tokens"][0, : new_prompt.size], new_prompt)
    assert obs["length"][1] == native.core.prompt_ids(2).size + 2


def test_same_step_autoreset_reports_final_obs_and_info_and_returns_the_reset_obs():
    native = make_vec(2, max_new_tokens=5, autoreset_mode=AutoresetMode.SAME_STEP)
    native.reset(seed=0, options={"index": [3, 4]})
    obs, rewards, terminated, _, info = native.step(np.array([A, EOS]))
    assert terminated.tolist() == [False, True] and rewards[1] > 0
    assert info["_final_obs"].tolist() == [False, True]
    final_obs = info["final_obs"][1]
    prompt_len = native.core.prompt_ids(4).size
    assert final_obs["length"] == prompt_len + 1 and final_obs["tokens"][prompt_len] == EOS
    assert info["final_info"]["_completion"].tolist() == [False, True]
    assert info["final_info"]["completion"][1] == ""
    new_prompt = native.core.prompt_ids(int(info["prompt_index"][1]))
    assert obs["length"][1] == new_prompt.size  # already reset
    obs, rewards, terminated, _, info = native.step(np.array([A, A]))
    assert obs["length"][1] == new_prompt.size + 1  # the next action is used, not ignored
    assert info == {}


def test_disabled_autoreset_freezes_ended_envs_until_reset_by_mask():
    native = make_vec(2, autoreset_mode=AutoresetMode.DISABLED)
    native.reset(seed=0)
    obs0, *_ = native.step(np.array([EOS, A]))
    obs, rewards, terminated, truncated, info = native.step(np.array([A, A]))
    assert obs["length"][0] == obs0["length"][0]  # frozen: the action was ignored
    assert (obs["tokens"][0] == obs0["tokens"][0]).all()
    assert rewards[0] == 0.0 and not terminated[0] and not truncated[0]
    assert obs["length"][1] == obs0["length"][1] + 1  # the other sub-env kept going
    obs, info = native.reset(options={"reset_mask": np.array([True, False])})
    assert info["_prompt_index"].tolist() == [True, False]
    obs, *_ = native.step(np.array([A, A]))
    assert obs["tokens"][1, obs["length"][1] - 3 : obs["length"][1]].tolist() == [A, A, A]
    assert obs["tokens"][0, obs["length"][0] - 1] == A  # the reset sub-env steps again


def test_disabled_autoreset_scores_each_episode_once_when_run_to_the_end():
    calls = []

    def reward(prompts, completions):
        calls.append(len(prompts))
        return [1.0] * len(prompts)

    native = make_vec(3, autoreset_mode=AutoresetMode.DISABLED, reward=reward)
    native.reset(seed=0)
    ended = np.zeros(3, dtype=bool)
    total = np.zeros(3)
    for _ in range(native.core.max_new_tokens + 2):
        _, rewards, terminated, _, _ = native.step(np.array([EOS, A, A]))
        total += rewards
        ended |= terminated
    assert ended.all() and total.tolist() == [1.0, 1.0, 1.0]
    assert sum(calls) == 3


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "actions",
    [np.array([A, A, A]), np.array([[A, A, A, A]]), np.array([A, A, A, 1.0]),
     np.array([True, False, True, False]), np.array([A, A, A, VOCAB]), np.array([A, -1, A, A]),
     ["a", "b", "c", "d"], None],
)
def test_illegal_action_batches_raise_a_value_error(actions):
    native = make_vec(4)
    native.reset(seed=0)
    before = native._obs()
    with pytest.raises(ValueError, match="actions"):
        native.step(actions)
    assert data_equivalence(native._obs(), before, exact=True)  # state unchanged


def test_lists_and_other_integer_dtypes_are_accepted():
    native = make_vec(4)
    native.reset(seed=0)
    obs, *_ = native.step([A, A, A, A])
    obs, *_ = native.step(np.array([A] * 4, dtype=np.uint8))
    assert (obs["tokens"][np.arange(4), obs["length"] - 1] == A).all()


def test_stepping_before_reset_raises():
    with pytest.raises(RuntimeError, match="before reset"):
        make_vec(2).step(np.array([A, A]))


def test_reset_options_are_validated():
    native = make_vec(3)
    with pytest.raises(ValueError, match="unknown reset options"):
        native.reset(options={"idx": 1})
    with pytest.raises(ValueError, match="2 entries for num_envs=3"):
        native.reset(options={"index": [0, 1]})
    with pytest.raises(ValueError, match="prompt index"):
        native.reset(options={"index": 99})


def test_returned_arrays_do_not_alias_the_env_state():
    native = make_vec(2)
    obs, _ = native.reset(seed=0)
    obs2, _, terminated, _, _ = native.step(np.array([EOS, A]))
    assert not np.shares_memory(obs["tokens"], obs2["tokens"])
    terminated[:] = False  # must not cancel the pending autoreset
    _, _, _, _, info = native.step(np.array([A, A]))
    assert info["_prompt_index"].tolist() == [True, False]


@pytest.mark.parametrize("mode", list(AutoresetMode))
def test_copy_false_returns_read_only_views_with_the_same_contents(mode):
    copied, viewed = make_vec(3, autoreset_mode=mode), make_vec(3, autoreset_mode=mode, copy=False)
    rng = np.random.default_rng(0)
    obs_c, _ = copied.reset(seed=1)
    obs_v, _ = viewed.reset(seed=1)
    for _ in range(30):
        assert data_equivalence(obs_c, obs_v)
        with pytest.raises(ValueError, match="read-only"):
            obs_v["tokens"][0, 0] = 1
        held = obs_v["length"]
        actions = random_actions(rng, 3, eos_prob=0.2)
        obs_c, r_c, term_c, trunc_c, info_c = copied.step(actions)
        obs_v, r_v, term_v, trunc_v, info_v = viewed.step(actions)
        assert held is obs_v["length"]  # the same buffer, overwritten by the step
        assert data_equivalence((r_c, term_c, trunc_c, info_c), (r_v, term_v, trunc_v, info_v))
        if mode == AutoresetMode.DISABLED and term_c.any():
            obs_c, _ = copied.reset(options={"reset_mask": term_c})
            obs_v, _ = viewed.reset(options={"reset_mask": term_v})


def test_render_returns_one_string_per_sub_env():
    native = make_vec(2, render_mode="ansi")
    native.reset(options={"index": [0, 5]})
    frames = native.render()
    assert isinstance(frames, tuple) and len(frames) == 2
    assert "TITLE: Post 0" in frames[0] and "TITLE: Post 5" in frames[1]
    assert make_vec(2).render() is None
