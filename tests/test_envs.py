"""TextGenerationEnv: Gymnasium API conformance, episode logic, validation, registration."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.utils.passive_env_checker import env_render_passive_checker
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rlaif_gym
from rlaif_gym.data.records import PromptRecord
from rlaif_gym.envs.decoding import completion_decoder
from rlaif_gym.envs.registration import ENV_IDS
from rlaif_gym.envs.text_env import TextGenerationEnv, default_stop_token_ids
from rlaif_gym.reward_protocol import RewardFunction, RewardOutput
from rlaif_gym.testing import make_tiny_tokenizer

EOS = 258  # <|im_end|> of the tiny tokenizer
PAD = 256
VOCAB = 259


def constant_reward(prompts, completions):
    return [1.0] * len(prompts)


class CountingReward:
    """A callable reward that records every call."""

    def __init__(self, value: float = 1.0) -> None:
        self.value = value
        self.calls: list[tuple[list[str], list[str]]] = []

    def __call__(self, prompts, completions):
        self.calls.append((list(prompts), list(completions)))
        return [self.value] * len(prompts)


TLDR_PROMPTS = [
    PromptRecord(f"p{i}", "tldr", f"SUBREDDIT: r/test\nTITLE: Post {i}\nPOST: " + "word " * (3 * i),
                 reference=f"summary {i}")
    for i in range(6)
]


def make_env(**kwargs) -> TextGenerationEnv:
    defaults = dict(tokenizer=make_tiny_tokenizer(), prompts=TLDR_PROMPTS, reward=constant_reward,
                    max_prompt_tokens=160, max_new_tokens=6)
    return TextGenerationEnv(**{**defaults, **kwargs})


@pytest.fixture(scope="module")
def env() -> TextGenerationEnv:
    return make_env()


def letter(tokenizer, ch: str) -> int:
    (token,) = tokenizer(ch, add_special_tokens=False)["input_ids"]
    return token


# -- conformance -------------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", sorted(ENV_IDS))
def test_check_env_passes_without_warnings_for_every_registered_id(env_id, tiny_tokenizer):
    env = gym.make(env_id, tokenizer=tiny_tokenizer, split="sample", reward=constant_reward,
                   max_prompt_tokens=256, max_new_tokens=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)
    assert env.unwrapped.core.task.name == ENV_IDS[env_id]


def test_check_env_passes_without_warnings_for_a_directly_built_env():
    env = make_env(render_mode="ansi")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # without a spec, check_env cannot rebuild the env for each render mode
        check_env(env, skip_render_check=True)
        env.reset(seed=0)
        assert isinstance(env_render_passive_checker(env), str)


def test_import_registers_the_three_ids_with_native_vector_entry_points():
    assert rlaif_gym.__version__ == "0.2.0"
    for env_id in ("RLAIF-TLDR-v0", "RLAIF-HH-Helpful-v0", "RLAIF-HH-Harmless-v0"):
        spec = gym.spec(env_id)
        assert spec.entry_point.endswith(":TextGenerationEnv")
        assert spec.vector_entry_point.endswith(":TextGenerationVectorEnv")
        assert spec.max_episode_steps is None


def test_make_passes_env_kwargs_through(tiny_tokenizer):
    env = gym.make("RLAIF-HH-Harmless-v0", tokenizer=tiny_tokenizer, split="sample",
                   reward=constant_reward, max_prompt_tokens=200, max_new_tokens=3)
    core = env.unwrapped.core
    assert (core.task.name, core.max_prompt_tokens, core.max_new_tokens) == ("harmless", 200, 3)
    assert env.observation_space["tokens"].shape == (203,)
    assert env.unwrapped.data_source.startswith("sample")


def test_unknown_reward_name_lists_the_valid_names():
    with pytest.raises(ValueError, match="valid names: direct, none"):
        make_env(reward="no-such-reward")


def test_unknown_task_lists_the_valid_tasks():
    with pytest.raises(ValueError, match="tldr, helpful, harmless"):
        make_env(task="poetry")


def test_direct_reward_gets_the_env_task_and_the_reward_options(monkeypatch):
    from rlaif_gym import reward_registry as registry

    seen = []

    def fake_direct(**options):
        seen.append(options)
        return registry.make_reward(constant_reward)

    monkeypatch.setitem(registry.REWARD_REGISTRY, "direct",
                        registry.RewardSpec("direct", fake_direct))
    make_env(task="harmless", reward="direct", reward_options={"batch_size": 2}, judge="j")
    make_env(task="harmless", reward="direct", task_template="x", reward_options={"task": "tldr"})
    assert seen == [{"task": "harmless", "batch_size": 2, "judge": "j"},
                    {"task": "tldr", "task_template": "x"}]


def test_options_for_the_none_reward_are_rejected_instead_of_swallowed():
    with pytest.raises(TypeError, match="max_new_token"):
        make_env(reward="none", max_new_token=3)


# -- spaces and observations -------------------------------------------------------------------


def test_spaces_match_the_tokenizer_and_limits(env):
    assert env.action_space == gym.spaces.Discrete(VOCAB)
    assert env.observation_space["tokens"].shape == (166,)
    assert env.observation_space["length"] == gym.spaces.Discrete(167)
    obs, info = env.reset(seed=3)
    assert obs["length"] == info["prompt_length"] <= 160
    assert np.all(obs["tokens"][obs["length"]:] == PAD)
    assert info["data_source"] == env.data_source


def test_larger_vocab_size_widens_the_action_space_and_smaller_is_rejected():
    assert make_env(vocab_size=300).action_space.n == 300
    with pytest.raises(ValueError, match="smaller than the tokenizer"):
        make_env(vocab_size=100)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1),
       actions=st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=12))
def test_observations_stay_in_space_and_reward_is_zero_before_the_final_step(env, seed, actions):
    obs, _ = env.reset(seed=seed)
    assert obs in env.observation_space
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        assert obs in env.observation_space
        assert truncated is False
        if not terminated:
            assert reward == 0.0 and info == {}
        else:
            assert reward == 1.0
            break


def test_returned_observations_do_not_alias_the_env_state(env):
    obs, _ = env.reset(options={"index": 0})
    first = int(obs["tokens"][0])
    obs["tokens"][:] = first + 1
    obs2, *_ = env.step(65)
    assert obs2["tokens"][0] == first == env.core.prompt_ids(0)[0]
    assert not np.shares_memory(obs["tokens"], obs2["tokens"])


# -- reset -------------------------------------------------------------------------------------


def test_reset_with_same_seed_gives_same_prompt(env):
    first = [env.reset(seed=s)[1]["prompt_index"] for s in range(20)]
    again = [env.reset(seed=s)[1]["prompt_index"] for s in range(20)]
    assert first == again
    assert len(set(first)) > 1  # the seed actually matters


def test_reset_with_index_option_picks_that_prompt(env):
    obs, info = env.reset(options={"index": 4})
    assert info["prompt_index"] == 4
    expected = env.core.prompt_ids(4)
    assert np.array_equal(obs["tokens"][: obs["length"]], expected)


@pytest.mark.parametrize("bad", [-1, 6, 1.0, True, "2"])
def test_reset_with_a_bad_index_raises_a_clear_error(env, bad):
    with pytest.raises(ValueError, match=r"prompt index must be an int in \[0, 6\)"):
        env.reset(options={"index": bad})


def test_reset_with_an_unknown_option_raises(env):
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"prompt": 1})


def test_prompt_is_tokenized_once_and_cached(env, monkeypatch):
    calls = []
    original = env.core.task.render_prompt

    class Spy:
        name = env.core.task.name

        def render_prompt(self, *args):
            calls.append(args)
            return original(*args)

    env.core._prompt_cache.clear()
    monkeypatch.setattr(env.core, "task", Spy())
    for _ in range(3):
        env.reset(options={"index": 2})
    assert len(calls) == 1


# -- stepping ----------------------------------------------------------------------------------


def test_eos_ends_the_episode_and_is_not_in_the_completion(env):
    tok = env.tokenizer
    env.reset(options={"index": 1})
    env.step(letter(tok, "h"))
    env.step(letter(tok, "i"))
    obs, reward, terminated, truncated, info = env.step(EOS)
    assert (terminated, truncated, reward) == (True, False, 1.0)
    assert info["completion"] == "hi"
    assert info["length_limit"] is False
    assert info["completion_length"] == 3
    assert obs["tokens"][obs["length"] - 1] == EOS


def test_length_limit_ends_the_episode_and_sets_the_info_flag(env):
    env.reset(options={"index": 0})
    for _ in range(5):
        _, reward, terminated, _, info = env.step(letter(env.tokenizer, "a"))
        assert not terminated and reward == 0.0
    _, reward, terminated, truncated, info = env.step(letter(env.tokenizer, "b"))
    assert terminated is True and truncated is False
    assert info["length_limit"] is True
    assert info["completion"] == "aaaaab"
    assert info["completion_length"] == 6


def test_final_info_holds_the_plain_prompt_text_and_the_decoded_completion(env):
    tok = env.tokenizer
    text = "Héllo, wörld! ✓"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    reward = CountingReward(0.25)
    env2 = make_env(reward=reward, max_new_tokens=len(ids) + 1)
    env2.reset(options={"index": 3})
    for token in ids:
        *_, info = env2.step(token)
    _, r, terminated, _, info = env2.step(EOS)
    assert terminated and r == 0.25
    assert info["prompt"] == TLDR_PROMPTS[3].text
    assert info["completion"] == text
    assert info["prompt_index"] == 3
    assert all(isinstance(info[k], str) for k in ("prompt", "completion"))
    assert reward.calls == [([TLDR_PROMPTS[3].text], [text])]


def test_reward_function_is_called_once_per_episode_only_at_the_end():
    reward = CountingReward()
    env = make_env(reward=reward, max_new_tokens=4)
    env.reset(seed=0)
    for _ in range(3):
        env.step(65)
        assert reward.calls == []
    env.step(65)
    assert len(reward.calls) == 1


def test_special_tokens_are_skipped_in_the_completion(env):
    env.reset(options={"index": 0})
    env.step(257)  # <|im_start|>
    env.step(letter(env.tokenizer, "x"))
    *_, info = env.step(EOS)
    assert info["completion"] == "x"


def test_reward_details_are_added_per_episode_to_the_final_info():
    class Detailed(RewardFunction):
        name = "detailed"

        def score(self, prompts, completions):
            n = len(prompts)
            return RewardOutput(scores=np.full(n, 0.5),
                                details={"judge_score": np.full(n, 7.0),
                                         "prompt": np.zeros(n), "dist": np.ones((n, 3))})

    env = make_env(reward=Detailed())
    env.reset(options={"index": 5})
    *_, info = env.step(EOS)
    assert info["judge_score"] == 7.0
    assert info["reward_prompt"] == 0.0  # clashing detail names get a prefix
    assert np.array_equal(info["dist"], np.ones(3))
    assert info["prompt"] == TLDR_PROMPTS[5].text


@pytest.mark.parametrize(
    "action", [-1, VOCAB, 3.0, np.float32(3), True, np.bool_(True), "65", None,
               np.array([65]), np.array(65.0)],
)
def test_illegal_actions_raise_a_value_error(env, action):
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(action)


@pytest.mark.parametrize("action", [65, np.int64(65), np.int32(65), np.uint16(65), np.array(65)])
def test_integer_like_actions_are_accepted(env, action):
    env.reset(seed=0)
    obs, *_ = env.step(action)
    assert obs["tokens"][obs["length"] - 1] == 65


def test_stepping_after_the_episode_ended_raises(env):
    env.reset(seed=0)
    env.step(EOS)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(65)


def test_stepping_before_reset_raises():
    with pytest.raises(RuntimeError, match="before reset"):
        make_env().step(65)


def test_same_seed_and_actions_give_same_episode(env):
    runs = []
    for _ in range(2):
        obs, _ = env.reset(seed=11)
        for a in (70, 71, EOS):
            obs, r, *_ , info = env.step(a)
        runs.append((obs["tokens"].tolist(), r, info))
    assert runs[0] == runs[1]


# -- render and stop tokens --------------------------------------------------------------------


def test_ansi_render_shows_prompt_and_completion_so_far():
    env = make_env(render_mode="ansi")
    env.reset(options={"index": 2})
    env.step(letter(env.tokenizer, "o"))
    env.step(letter(env.tokenizer, "k"))
    text = env.render()
    assert "TITLE: Post 2" in text
    assert text.endswith("<|im_start|>assistant\nok")


def test_render_without_mode_returns_none(env):
    env.reset(seed=0)
    assert env.render() is None


def test_bad_render_mode_is_rejected():
    with pytest.raises(ValueError, match="render_mode"):
        make_env(render_mode="human")


def test_default_stop_tokens_add_the_chat_templates_end_of_turn_token():
    tok = make_tiny_tokenizer()
    tok.eos_token = "<|endoftext|>"  # eos differs from the template's <|im_end|>
    assert default_stop_token_ids(tok) == (256, 258)
    assert default_stop_token_ids(make_tiny_tokenizer()) == (258,)
    assert default_stop_token_ids(make_tiny_tokenizer(chat_template=False)) == (258,)


def test_custom_stop_tokens_end_the_episode():
    env = make_env(stop_token_ids=[65])
    env.reset(seed=0)
    *_, terminated, _, info = env.step(EOS)
    assert terminated is False
    *_, terminated, _, info = env.step(65)
    assert terminated is True and info["length_limit"] is False


@pytest.mark.slow
def test_real_policy_episode_runs_to_the_end(shared_data_dir):
    import torch

    from rlaif_gym.models import load_causal_lm

    reward = CountingReward(0.5)
    env = gym.make("RLAIF-TLDR-v0", reward=reward, policy="smollm2-135m-instruct",
                   data_dir=shared_data_dir, max_prompt_tokens=512, max_new_tokens=24)
    model = load_causal_lm("smollm2-135m-instruct")
    obs, info = env.reset(seed=0)
    generator = torch.Generator().manual_seed(0)
    terminated, steps = False, 0
    generated = []
    while not terminated:
        ids = torch.as_tensor(obs["tokens"][: obs["length"]])[None]
        with torch.no_grad():
            logits = model(ids).logits[0, -1, : env.action_space.n]
        token = int(torch.multinomial(torch.softmax(logits.float(), -1), 1, generator=generator))
        generated.append(token)
        obs, reward_value, terminated, truncated, info = env.step(token)
        steps += 1
    assert steps <= 24 and not truncated
    assert reward_value == 0.5 and len(reward.calls) == 1
    tokenizer = env.unwrapped.tokenizer
    body = generated[:-1] if generated[-1] in env.unwrapped.core.stop_token_ids else generated
    assert info["completion"] == tokenizer.decode(body, skip_special_tokens=True)
    assert info["completion"].strip()
    print(repr(info["completion"]))


# -- decoding ----------------------------------------------------------------------------------


@pytest.mark.parametrize("vocab_size", [VOCAB, VOCAB + 13])
def test_fast_completion_decoder_equals_tokenizer_decode(vocab_size):
    tok = make_tiny_tokenizer()
    decode = completion_decoder(tok, vocab_size)
    rng = np.random.default_rng(1)
    for _ in range(200):  # random bytes: broken UTF-8, special tokens, unknown ids
        ids = rng.integers(0, vocab_size, size=int(rng.integers(0, 40)))
        assert decode(ids) == tok.decode(ids.tolist(), skip_special_tokens=True)
    text = "naïve café ✓"
    assert decode(np.array(tok(text)["input_ids"])) == text


def test_completion_decoder_falls_back_to_tokenizer_decode():
    class PlainTokenizer:
        all_special_ids = [0]

        def __len__(self):
            return 10

        def decode(self, ids, skip_special_tokens=False):
            return "-".join(str(i) for i in ids if i or not skip_special_tokens)

    decode = completion_decoder(PlainTokenizer(), 10)
    assert decode(np.array([3, 0, 4])) == "3-4"
