"""Groups in the trainer: the leave-one-out baseline (math, update, validation) and
``samples_per_prompt`` through ``agents.train.train``."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.reinforce import (
    loo_baseline,
    policy_gradient_loss,
    reinforce_step,
)
from agents.train import PromptSchedule, TrainConfig, find_checkpoint, read_metrics, train
from rlaif_gym.data.records import PromptRecord
from rlaif_gym.testing import make_tiny_causal_lm

# -- the estimator ------------------------------------------------------------------------------


def test_loo_baseline_is_the_mean_of_the_other_returns_of_the_group():
    returns = torch.tensor([1.0, 2.0, 3.0, 10.0, 20.0, 30.0])
    b = loo_baseline(returns, 3)
    assert b.tolist() == [2.5, 2.0, 1.5, 25.0, 20.0, 15.0]


@settings(max_examples=100, deadline=None)
@given(k=st.integers(2, 6), groups=st.integers(1, 4), data=st.data())
def test_loo_advantages_sum_to_zero_within_each_group(k, groups, data):
    values = data.draw(st.lists(st.floats(-100, 100, allow_nan=False), min_size=k * groups,
                                max_size=k * groups))
    returns = torch.tensor(values, dtype=torch.float64)
    advantages = returns - loo_baseline(returns, k)
    sums = advantages.view(groups, k).sum(dim=1)
    assert torch.allclose(sums, torch.zeros(groups, dtype=torch.float64), atol=1e-9)
    # A_i = k/(k-1) (R_i - group mean)
    means = returns.view(groups, k).mean(dim=1, keepdim=True)
    expected = (k / (k - 1)) * (returns.view(groups, k) - means)
    assert torch.allclose(advantages.view(groups, k), expected, atol=1e-9)


def test_one_sample_per_prompt_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="k >= 2"):
        loo_baseline(torch.zeros(4), 1)
    with pytest.raises(ValueError, match="samples_per_prompt >= 2"):
        TrainConfig(out_dir="x", baseline="loo")
    with pytest.raises(ValueError, match="multiple of samples_per_prompt"):
        TrainConfig(out_dir="x", batch_size=6, samples_per_prompt=4)
    with pytest.raises(ValueError, match="micro_batch_size"):
        TrainConfig(out_dir="x", batch_size=8, samples_per_prompt=4, baseline="loo",
                    micro_batch_size=2)
    with pytest.raises(ValueError, match="baseline"):
        TrainConfig(out_dir="x", baseline="mean")


def test_policy_gradient_loss_gradient_is_minus_advantage_over_batch():
    logp = torch.tensor([[-1.0, -2.0], [-3.0, -100.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss = policy_gradient_loss(logp, torch.tensor([2.0, -4.0]), mask)
    loss.backward()
    assert loss.item() == pytest.approx(-(2.0 * -3.0 + -4.0 * -3.0) / 2)
    assert logp.grad.tolist() == [[-1.0, -1.0], [2.0, 0.0]]


def _setup():
    torch.manual_seed(0)
    policy = make_tiny_causal_lm()
    reference = copy.deepcopy(policy).requires_grad_(False)
    popt = torch.optim.SGD(policy.parameters(), lr=0.1)
    prompts = [np.array([5, 6, 7]), np.array([5, 6, 7]), np.array([9, 10]), np.array([9, 10])]
    completions = [np.array([40, 41, 258]), np.array([42]), np.array([43, 44]),
                   np.array([45])]
    return policy, reference, popt, prompts, completions


def test_loo_update_needs_no_value_model_and_matches_micro_batches_of_whole_groups():
    results = []
    rewards = np.array([1.0, -1.0, 0.5, 0.25])
    for micro in (None, 2):
        policy, reference, popt, prompts, completions = _setup()
        stats = reinforce_step(policy, None, reference, popt, None, prompts, completions,
                               rewards, kl_coef=0.05, temperature=0.9, n_actions=259,
                               pad_id=256, micro_batch_size=micro, baseline="loo",
                               group_size=2)
        results.append((stats, [p.detach().clone() for p in policy.parameters()]))
    (full, p_full), (micro, p_micro) = results
    assert full.value_loss == 0.0 and full.value_grad_norm == 0.0
    # first update: KL = 0, R = 0.95 r, mean LOO baseline = mean R
    assert full.value_mean == pytest.approx(0.95 * rewards.mean(), abs=1e-6)
    assert micro.pg_loss == pytest.approx(full.pg_loss, abs=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(p_full, p_micro, strict=True))
    policy, reference, popt, prompts, completions = _setup()
    with pytest.raises(ValueError, match="group_size"):
        reinforce_step(policy, None, reference, popt, None, prompts, completions, rewards,
                       kl_coef=0.05, temperature=0.9, n_actions=259, pad_id=256,
                       baseline="loo", group_size=1)


# -- samples_per_prompt in the training loop ------------------------------------------------------

PROMPTS = [PromptRecord(f"p{i}", "tldr", f"TITLE: Post {i}\nPOST: " + "word " * (i % 4 + 1))
           for i in range(16)]


class GroupRecorder:
    """Length reward that records the prompts of every call."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, prompts, completions):
        self.calls.append(list(prompts))
        return [len(c) / 10 for c in completions]

    def __repr__(self) -> str:
        return "GroupRecorder()"


def test_prompt_schedule_repeats_each_prompt_k_times_in_a_row():
    schedule = PromptSchedule(10, seed=0)
    grouped = schedule.indices(3, 8, samples_per_prompt=4)
    assert grouped == [i for i in schedule.indices(3, 2) for _ in range(4)]
    assert schedule.indices(1, 4, 1) == schedule.indices(1, 4)


def test_training_with_groups_and_loo_scores_whole_groups_and_saves_no_value_model(tmp_path):
    reward = GroupRecorder()
    out = tmp_path / "run"
    config = TrainConfig(out_dir=str(out), reward=reward, policy="tiny-random", steps=3,
                         batch_size=6, samples_per_prompt=3, baseline="loo", lr=1e-2,
                         max_new_tokens=6, max_prompt_tokens=160, checkpoint_every=2,
                         env_options={"prompts": PROMPTS}, progress=False, threads=1)
    result = train(config)
    assert [r["step"] for r in result.metrics] == [1, 2, 3]
    assert all(r["value_loss"] == 0.0 for r in result.metrics)
    for prompts in reward.calls:  # whole groups of 3 of one prompt per call
        assert len(prompts) % 3 == 0
        assert all(len(set(prompts[g:g + 3])) == 1 for g in range(0, len(prompts), 3))
    assert sum(len(p) for p in reward.calls) == 18
    checkpoint = find_checkpoint(out)
    assert not (checkpoint / "value.safetensors").exists()
    state = json.loads((checkpoint / "state.json").read_text())
    assert state["config"]["baseline"] == "loo"
    resumed = train(TrainConfig(**{**config.__dict__, "steps": 4, "resume": True,
                                   "reward": GroupRecorder()}))
    assert [r["step"] for r in resumed.metrics] == [1, 2, 3, 4]
    assert len(read_metrics(out / "metrics.csv")) == 4
