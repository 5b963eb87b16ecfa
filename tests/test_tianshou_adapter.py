"""The tianshou 2.x adapter: actor/critic on a tiny random LM, training raises the reward."""

from __future__ import annotations

import importlib
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

import rlaif_gym  # noqa: F401 - registers the env ids
from rlaif_gym.data.records import PromptRecord
from rlaif_gym.testing import make_tiny_causal_lm

PROMPTS = [PromptRecord(id=f"p{i}", task="tldr", text=f"post number {i}") for i in range(4)]
MAX_NEW_TOKENS = 4


def fraction_of_a(prompts: list[str], completions: list[str]) -> list[float]:
    """Toy reward in [0, 1]: the share of completion characters equal to "a"."""
    return [c.count("a") / len(c) if c else 0.0 for c in completions]


@pytest.fixture(scope="module")
def ts():
    """The adapter module; skips the tests that need tianshou when it is missing."""
    pytest.importorskip("tianshou")
    return importlib.import_module("agents.tianshou_adapter")


@pytest.fixture()
def env_fns(tiny_tokenizer):
    def make() -> gym.Env:
        return gym.make(
            "RLAIF-TLDR-v0", tokenizer=tiny_tokenizer, prompts=PROMPTS, reward=fraction_of_a,
            max_new_tokens=MAX_NEW_TOKENS, max_prompt_tokens=128,
        )

    return [make] * 8


def right_padded(rows: list[list[int]], width: int, pad: int = 256) -> dict[str, np.ndarray]:
    tokens = np.full((len(rows), width), pad, dtype=np.int64)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = row
    return {"tokens": tokens, "length": np.array([len(r) for r in rows], dtype=np.int64)}


def test_import_without_tianshou_names_the_extra(monkeypatch):
    for name in [m for m in sys.modules if m == "tianshou" or m.startswith("tianshou.")]:
        monkeypatch.setitem(sys.modules, name, None)  # an earlier test may have imported it
    monkeypatch.setitem(sys.modules, "tianshou", None)  # makes `import tianshou...` fail
    monkeypatch.delitem(sys.modules, "agents.tianshou_adapter", raising=False)
    with pytest.raises(ImportError, match=r'pip install "rlaif-gym\[tianshou\]"'):
        importlib.import_module("agents.tianshou_adapter")
    monkeypatch.delitem(sys.modules, "agents.tianshou_adapter", raising=False)


def test_actor_logits_equal_the_lm_next_token_logits_of_each_unpadded_row(ts, tiny_model):
    rng = np.random.default_rng(0)
    rows = [rng.integers(0, 256, n).tolist() for n in (3, 9, 12)]
    obs = right_padded(rows, width=16)
    actor = ts.CausalLMActor(tiny_model, gym.spaces.Discrete(259)).eval()
    logits, state = actor(obs)
    assert logits.shape == (3, 259) and logits.dtype == torch.float32 and state is None
    with torch.no_grad():
        for i, row in enumerate(rows):
            expected = tiny_model(torch.tensor([row])).logits[0, -1]
            torch.testing.assert_close(logits[i], expected, atol=1e-5, rtol=1e-5)


def test_actor_divides_by_temperature_and_builds_no_graph_in_eval_mode(ts, tiny_model):
    obs = right_padded([[1, 2, 3], [4, 5]], width=6)
    plain, _ = ts.CausalLMActor(tiny_model, 259).eval()(obs)
    hot_actor = ts.CausalLMActor(tiny_model, 259, temperature=2.0)
    hot, _ = hot_actor.eval()(obs)
    torch.testing.assert_close(hot, plain / 2.0)
    assert not hot.requires_grad
    trained, _ = hot_actor.train()(obs)
    assert trained.requires_grad


def test_actor_restricts_logits_to_the_action_space(ts, tiny_model):
    obs = right_padded([[1, 2, 3]], width=4)
    full, _ = ts.CausalLMActor(tiny_model, 259).eval()(obs)
    small, _ = ts.CausalLMActor(tiny_model, 200).eval()(obs)
    large, _ = ts.CausalLMActor(tiny_model, 300).eval()(obs)
    assert small.shape == (1, 200) and large.shape == (1, 300)
    torch.testing.assert_close(small, full[:, :200])
    torch.testing.assert_close(large[:, :259], full)
    assert torch.isneginf(large[:, 259:]).all()


@pytest.mark.parametrize("lengths", [[0, 2], [2, 7]])
def test_actor_rejects_lengths_outside_the_token_array(ts, tiny_model, lengths):
    obs = {"tokens": np.zeros((2, 6), dtype=np.int64), "length": np.array(lengths)}
    with pytest.raises(ValueError, match="lengths must lie in"):
        ts.CausalLMActor(tiny_model, 259)(obs)


def test_actor_rejects_a_bad_temperature(ts, tiny_model):
    with pytest.raises(ValueError, match="temperature"):
        ts.CausalLMActor(tiny_model, 259, temperature=0.0)


def test_critic_starts_at_zero_and_copies_or_shares_the_backbone(ts, tiny_model):
    obs = right_padded([[1, 2, 3], [4, 5, 6, 7, 8]], width=8)
    copied = ts.CausalLMCritic(tiny_model)
    shared = ts.CausalLMCritic(tiny_model, share_backbone=True)
    values = copied(obs)
    assert values.shape == (2,) and torch.equal(values, torch.zeros(2))
    assert shared.backbone is tiny_model.base_model
    assert copied.backbone is not tiny_model.base_model
    assert all(a is not b for a, b in zip(copied.backbone.parameters(),
                                          tiny_model.base_model.parameters(), strict=True))


def test_critic_reads_the_hidden_state_at_length_minus_one(ts, tiny_model):
    critic = ts.CausalLMCritic(tiny_model)
    torch.nn.init.normal_(critic.head.weight)
    rows = [[1, 2, 3], [9, 8, 7, 6, 5]]
    values = critic(right_padded(rows, width=8))
    with torch.no_grad():
        for i, row in enumerate(rows):
            hidden = tiny_model.base_model(torch.tensor([row])).last_hidden_state[0, -1]
            torch.testing.assert_close(values[i], critic.head(hidden)[0], atol=1e-5, rtol=1e-5)


def test_numeric_info_wrapper_drops_strings_and_keeps_the_final_info(ts, env_fns):
    env = ts.NumericInfoWrapper(env_fns[0]())
    _, info = env.reset(seed=0)
    assert "data_source" not in info and "prompt_index" in info
    done = False
    while not done:
        _, _, done, _, info = env.step(env.unwrapped.tokenizer.convert_tokens_to_ids("a"))
    assert "completion" not in info and info["completion_length"] == MAX_NEW_TOKENS
    assert env.last_final_info["completion"] == "a" * MAX_NEW_TOKENS


def test_make_tianshou_envs_rejects_a_non_text_env(ts):
    with pytest.raises(ValueError, match="Dict\\(tokens, length\\)"):
        ts.make_tianshou_envs([lambda: gym.make("CartPole-v1")])


def test_train_rejects_a_buffer_too_small_for_one_collection(ts, env_fns):
    setup = ts.make_tianshou_reinforce(make_tiny_causal_lm(), env_fns, buffer_per_env=4)
    try:
        with pytest.raises(ValueError, match="buffer_per_env"):
            ts.train_tianshou(setup, epochs=1, episodes_per_collect=16)
    finally:
        setup.close()


def _mean_reward(ts, policy, env_fns) -> float:
    torch.manual_seed(123)
    return float(ts.evaluate_tianshou(policy, env_fns, 128, seed=1000).mean())


def test_reinforce_training_raises_the_mean_reward(ts, env_fns):
    torch.manual_seed(0)
    setup = ts.make_tianshou_reinforce(make_tiny_causal_lm(), env_fns, lr=1e-2, seed=0)
    try:
        before = _mean_reward(ts, setup.policy, env_fns)
        torch.manual_seed(1)
        stats = ts.train_tianshou(setup, epochs=20, episodes_per_collect=32,
                                  test_env_fns=env_fns[:2], test_episodes=8, test_seed=7)
        after = _mean_reward(ts, setup.policy, env_fns)
        greedy = ts.evaluate_tianshou(setup.policy, env_fns, 8, deterministic=True, seed=3)
        finals = ts.last_final_infos(setup.train_envs)
    finally:
        setup.close()
    print(f"reinforce: mean reward before {before:.4f}, after {after:.4f}, "
          f"greedy {greedy.mean():.3f}, best test {stats.best_reward:.3f}")
    assert before < 0.1  # a random 259-token policy rarely writes "a"
    assert after > before + 0.4
    assert stats.train_episode == 20 * 32
    assert stats.best_reward > 0.4
    assert set(finals[0]) >= {"prompt", "completion"}


def test_a2c_with_gamma_one_raises_the_mean_reward_and_fits_the_value(ts, env_fns):
    torch.manual_seed(0)
    setup = ts.make_tianshou_a2c(make_tiny_causal_lm(), env_fns, lr=3e-2, gamma=1.0, seed=0)
    try:
        before = _mean_reward(ts, setup.policy, env_fns)
        torch.manual_seed(1)
        ts.train_tianshou(setup, epochs=20, episodes_per_collect=32)
        after = _mean_reward(ts, setup.policy, env_fns)
        env = env_fns[0]()
        starts = [env.reset(options={"index": i})[0] for i in range(len(PROMPTS))]
        with torch.no_grad():
            values = setup.critic({"tokens": np.stack([o["tokens"] for o in starts]),
                                   "length": np.array([o["length"] for o in starts])})
    finally:
        setup.close()
    print(f"a2c: mean reward before {before:.4f}, after {after:.4f}, "
          f"V(prompt) {values.numpy().round(3)}")
    assert setup.algorithm.gamma == 1.0
    assert before < 0.1
    assert after > before + 0.4
    # with gamma 1 the value of a fresh prompt estimates the policy's mean final reward
    assert torch.all((values - after).abs() < 0.25)
