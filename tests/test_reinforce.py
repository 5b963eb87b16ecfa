"""agents.reinforce: the REINFORCE / value / KL math on hand-computed cases, and one update."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from agents.postprocess import (
    PostprocessedReward,
    get_postprocessor,
    strip_trailing_punctuation,
)
from agents.reinforce import (
    ValueModel,
    completion_logits,
    init_value_baseline,
    kl_penalized_reward,
    pack_episodes,
    reinforce_losses,
    reinforce_step,
    sequence_kl,
    token_logprobs,
)
from agents.rollout import collect_episodes
from rlaif_gym.data.records import PromptRecord
from rlaif_gym.envs.vector_env import TextGenerationVectorEnv
from rlaif_gym.reward_protocol import RewardFunction, RewardOutput, ZeroReward
from rlaif_gym.testing import make_tiny_causal_lm, make_tiny_tokenizer

TOKENIZER = make_tiny_tokenizer()
PROMPTS = [PromptRecord(f"p{i}", "tldr", f"TITLE: T{i}\nPOST: " + "word " * (i + 1))
           for i in range(4)]

# two sequences: the first has two tokens, the second one token and one pad position
LOGP = torch.tensor([[-1.0, -2.0], [-3.0, -100.0]])
VALUES = torch.tensor([[0.5, 0.25], [0.0, 7.0]])
RETURNS = torch.tensor([1.0, -1.0])
MASK = torch.tensor([[1.0, 1.0], [1.0, 0.0]])


# -- the math on hand-computed numbers --------------------------------------------------------


def test_policy_loss_is_minus_logp_times_advantage_summed_over_tokens_then_averaged():
    # seq 1: adv = (1 - 0.5, 1 - 0.25) = (0.5, 0.75); -(-1 * 0.5 + -2 * 0.75) = 2.0
    # seq 2: adv = (-1 - 0) = -1; -(-3 * -1) = -3.0 (the padded token is ignored)
    pg_loss, _ = reinforce_losses(LOGP, VALUES, RETURNS, MASK)
    assert pg_loss.item() == pytest.approx((2.0 - 3.0) / 2, abs=1e-7)


def test_value_loss_is_squared_error_summed_over_tokens_then_averaged():
    # seq 1: 0.5^2 + 0.75^2 = 0.8125; seq 2: (-1 - 0)^2 = 1.0
    _, v_loss = reinforce_losses(LOGP, VALUES, RETURNS, MASK)
    assert v_loss.item() == pytest.approx((0.8125 + 1.0) / 2, abs=1e-7)


def test_per_token_returns_equal_broadcast_sequence_returns():
    per_token = RETURNS[:, None].expand(2, 2).clone()
    a = reinforce_losses(LOGP, VALUES, RETURNS, MASK)
    b = reinforce_losses(LOGP, VALUES, per_token, MASK)
    assert a[0].item() == b[0].item() and a[1].item() == b[1].item()


def test_sequence_kl_sums_the_log_ratio_over_completion_tokens_only():
    ref = torch.tensor([[-1.5, -1.0], [-2.0, 5.0]])
    kl = sequence_kl(LOGP, ref, MASK)
    # seq 1: (-1 + 1.5) + (-2 + 1) = -0.5; seq 2: (-3 + 2) = -1 (padding ignored)
    assert kl.tolist() == pytest.approx([-0.5, -1.0])


def test_kl_penalized_reward_is_one_minus_beta_r_minus_beta_kl():
    r = torch.tensor([1.0, -0.5])
    kl = torch.tensor([2.0, -1.0])
    out = kl_penalized_reward(r, kl, 0.05)
    assert out.tolist() == pytest.approx([0.95 - 0.1, -0.475 + 0.05])
    assert kl_penalized_reward(np.array([2.0]), np.array([3.0]), 0.0).tolist() == [2.0]


def test_paper_example_end_to_end_with_known_probabilities():
    # one sequence, two tokens: pi = (0.5, 0.25), pi_ref = (0.4, 0.5), V = (0.1, 0.3), r = 1
    logp = torch.log(torch.tensor([[0.5, 0.25]]))
    ref = torch.log(torch.tensor([[0.4, 0.5]]))
    mask = torch.ones(1, 2)
    kl = sequence_kl(logp, ref, mask)
    assert kl.item() == pytest.approx(math.log(0.625), abs=1e-6)
    big_r = kl_penalized_reward(torch.tensor([1.0]), kl, 0.05)
    assert big_r.item() == pytest.approx(0.95 - 0.05 * math.log(0.625), abs=1e-6)
    values = torch.tensor([[0.1, 0.3]])
    pg, v = reinforce_losses(logp, values, big_r, mask)
    z = 0.95 - 0.05 * math.log(0.625)
    assert pg.item() == pytest.approx(-(math.log(0.5) * (z - 0.1) + math.log(0.25) * (z - 0.3)),
                                      abs=1e-6)
    assert v.item() == pytest.approx((z - 0.1) ** 2 + (z - 0.3) ** 2, abs=1e-6)


def test_mismatched_shapes_and_bad_beta_are_rejected():
    with pytest.raises(ValueError, match="shape"):
        reinforce_losses(LOGP, VALUES[:, :1], RETURNS, MASK)
    with pytest.raises(ValueError, match="sequences"):
        reinforce_losses(LOGP, VALUES, torch.ones(3), MASK)
    with pytest.raises(ValueError, match="shape"):
        sequence_kl(LOGP, LOGP[:1], MASK)
    with pytest.raises(ValueError, match="beta"):
        kl_penalized_reward(RETURNS, RETURNS, 1.5)


# -- gradients ---------------------------------------------------------------------------------


def test_policy_loss_gradient_is_minus_advantage_over_batch_and_sends_nothing_to_values():
    logp = LOGP.clone().requires_grad_(True)
    values = VALUES.clone().requires_grad_(True)
    pg_loss, _ = reinforce_losses(logp, values, RETURNS, MASK)
    pg_loss.backward()
    # d L_PG / d logp_bt = -mask_bt * (Z_b - V_bt) / B
    expected = -MASK * (RETURNS[:, None] - VALUES) / 2
    assert torch.allclose(logp.grad, expected)
    assert values.grad is None or torch.count_nonzero(values.grad) == 0


def test_value_loss_gradient_is_two_times_value_error_over_batch():
    values = VALUES.clone().requires_grad_(True)
    _, v_loss = reinforce_losses(LOGP, values, RETURNS, MASK)
    v_loss.backward()
    expected = 2 * MASK * (values.detach() - RETURNS[:, None]) / 2
    assert torch.allclose(values.grad, expected)


def test_policy_loss_through_real_models_gives_the_value_model_zero_gradient():
    policy = make_tiny_causal_lm()
    value_model = ValueModel.from_policy(policy)
    nn_head = value_model.head
    with torch.no_grad():  # a non-trivial baseline so the advantage depends on V
        nn_head.weight.normal_()
    packed = pack_episodes([np.array([5, 6, 7]), np.array([8, 9])],
                           [np.array([10, 11]), np.array([12])], pad_id=256)
    logp, _ = token_logprobs(completion_logits(policy, packed, 259), packed.tokens, 0.9)
    values = value_model(packed.input_ids, packed.attention_mask, packed.position_ids,
                         positions=packed.predicting_positions)
    pg_loss, _ = reinforce_losses(logp, values, torch.tensor([1.0, -1.0]), packed.mask)
    pg_loss.backward()
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0
               for p in value_model.parameters())
    assert any(p.grad is not None and torch.count_nonzero(p.grad) > 0
               for p in policy.parameters())


# -- models and batching -----------------------------------------------------------------------


def test_value_model_copies_the_policy_backbone_and_starts_at_zero():
    policy = make_tiny_causal_lm()
    value_model = ValueModel.from_policy(policy)
    for (name, a), b in zip(policy.base_model.state_dict().items(),
                            value_model.backbone.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
        assert a.data_ptr() != b.data_ptr()  # a copy, not shared
    ids = torch.tensor([[5, 6, 7]])
    values = value_model(ids, torch.ones_like(ids), torch.arange(3)[None])
    assert values.shape == (1, 3) and torch.count_nonzero(values) == 0


def test_init_value_baseline_makes_every_state_worth_the_mean_return():
    value_model = ValueModel.from_policy(make_tiny_causal_lm())
    start = init_value_baseline(value_model, np.array([0.2, 0.6]), kl_coef=0.1)
    assert start == pytest.approx(0.9 * 0.4)
    ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
    values = value_model(ids, torch.ones_like(ids), torch.arange(3).expand(2, 3))
    assert torch.allclose(values, torch.full((2, 3), 0.36))
    for bad in (np.array([]), np.array([0.1, float("nan")]), np.ones((2, 2))):
        with pytest.raises(ValueError, match="rewards"):
            init_value_baseline(value_model, bad, kl_coef=0.1)


def test_packed_forward_log_probs_match_the_rollout_sampling_log_probs():
    model = make_tiny_causal_lm(seed=3)
    envs = TextGenerationVectorEnv(num_envs=3, tokenizer=TOKENIZER, prompts=PROMPTS,
                                   reward="none", max_prompt_tokens=120, max_new_tokens=6,
                                   autoreset_mode=AutoresetMode.DISABLED)
    batch = collect_episodes(model, envs, temperature=0.9, seed=0,
                             generator=torch.Generator().manual_seed(0))
    packed = pack_episodes(batch.prompt_ids, batch.completion_ids, pad_id=256)
    with torch.no_grad():
        logp, entropy = token_logprobs(completion_logits(model, packed, 259), packed.tokens, 0.9)
    for i, sampled in enumerate(batch.sample_logprobs):
        assert np.allclose(logp[i, : len(sampled)].numpy(), sampled, atol=1e-4)
    assert torch.all(entropy[packed.mask.bool()] > 0)
    assert torch.all(entropy <= math.log(259) + 1e-4)


def test_pack_episodes_rejects_empty_completions():
    with pytest.raises(ValueError, match="non-empty"):
        pack_episodes([np.array([1, 2])], [np.array([], dtype=np.int64)], pad_id=0)


# -- one update ------------------------------------------------------------------------------


def _update_setup(seed: int = 0):
    torch.manual_seed(seed)
    policy = make_tiny_causal_lm()
    reference = copy.deepcopy(policy).requires_grad_(False)
    value_model = ValueModel.from_policy(policy)
    popt = torch.optim.SGD(policy.parameters(), lr=0.1)
    vopt = torch.optim.SGD(value_model.parameters(), lr=0.1)
    prompts = [np.array([5, 6, 7, 8]), np.array([9, 10]), np.array([11, 12, 13])]
    completions = [np.array([40, 41, 258]), np.array([42]), np.array([43, 44])]
    return policy, reference, value_model, popt, vopt, prompts, completions


def test_first_update_has_zero_kl_and_the_raw_reward_as_return():
    policy, reference, value_model, popt, vopt, prompts, completions = _update_setup()
    rewards = np.array([1.0, -1.0, 0.5])
    stats = reinforce_step(policy, value_model, reference, popt, vopt, prompts, completions,
                           rewards, kl_coef=0.05, temperature=0.9, n_actions=259, pad_id=256)
    assert stats.kl == 0.0  # same weights, same inputs: identical log-probs
    assert stats.penalized_reward == pytest.approx(0.95 * rewards.mean(), abs=1e-6)
    assert stats.reward == pytest.approx(rewards.mean())
    assert stats.completion_length == pytest.approx(2.0)
    # V = 0 at the start: L_V = mean_b sum_t R_b^2
    lengths = np.array([3, 1, 2])
    assert stats.value_loss == pytest.approx(np.mean(lengths * (0.95 * rewards) ** 2), rel=1e-5)
    # the update moved the policy away from the reference
    moved = any(not torch.equal(a, b) for a, b in zip(policy.parameters(),
                                                     reference.parameters(), strict=True))
    assert moved


def test_micro_batches_give_the_same_update_as_the_full_batch():
    results = []
    for micro in (None, 1):
        policy, reference, value_model, popt, vopt, prompts, completions = _update_setup()
        stats = reinforce_step(policy, value_model, reference, popt, vopt, prompts,
                               completions, np.array([1.0, -1.0, 0.5]), kl_coef=0.05,
                               temperature=0.9, n_actions=259, pad_id=256,
                               micro_batch_size=micro)
        results.append((stats, [p.detach().clone() for p in policy.parameters()]))
    (full, p_full), (micro, p_micro) = results
    assert micro.pg_loss == pytest.approx(full.pg_loss, abs=1e-6)
    assert micro.value_loss == pytest.approx(full.value_loss, abs=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(p_full, p_micro, strict=True))


def test_non_finite_rewards_shape_is_rejected():
    policy, reference, value_model, popt, vopt, prompts, completions = _update_setup()
    with pytest.raises(ValueError, match="rewards"):
        reinforce_step(policy, value_model, reference, popt, vopt, prompts, completions,
                       np.ones(2), kl_coef=0.05, temperature=0.9, n_actions=259, pad_id=256)


# -- post-processing -------------------------------------------------------------------------


class EchoLength(RewardFunction):
    name = "echo"

    def __init__(self) -> None:
        self.seen: list[str] = []

    def score(self, prompts, completions):
        self.seen.extend(completions)
        return RewardOutput(scores=np.array([float(len(c)) for c in completions]))


def test_strip_trailing_punctuation_removes_only_trailing_symbols_and_spaces():
    assert strip_trailing_punctuation("Hi, there. . !\n ") == "Hi, there"
    assert strip_trailing_punctuation("a.b") == "a.b"
    assert strip_trailing_punctuation("...") == ""


def test_postprocessed_reward_scores_the_cleaned_completion():
    inner = EchoLength()
    reward = PostprocessedReward(inner, strip_trailing_punctuation)
    out = reward(["p", "q"], ["ok . .", "fine"])
    assert inner.seen == ["ok", "fine"]
    assert out.scores.tolist() == [2.0, 4.0]


def test_postprocessed_reward_in_the_env_keeps_the_raw_completion_in_info():
    inner = EchoLength()
    envs = TextGenerationVectorEnv(num_envs=2, tokenizer=TOKENIZER, prompts=PROMPTS,
                                   reward=PostprocessedReward(inner, str.upper),
                                   max_prompt_tokens=120, max_new_tokens=4,
                                   autoreset_mode=AutoresetMode.DISABLED)
    batch = collect_episodes(make_tiny_causal_lm(), envs, seed=0,
                             generator=torch.Generator().manual_seed(0))
    assert inner.seen == [c.upper() for c in batch.completions]


def test_postprocessor_names_and_errors():
    assert get_postprocessor("none")("x. ") == "x. "
    assert get_postprocessor(None)("x. ") == "x. "
    assert get_postprocessor("strip-trailing-punctuation")("x. ") == "x"
    with pytest.raises(ValueError, match="valid names"):
        get_postprocessor("nope")
    with pytest.raises(TypeError, match="RewardFunction"):
        PostprocessedReward(lambda p, c: [0.0], str.strip)  # type: ignore[arg-type]
    bad = PostprocessedReward(ZeroReward(), lambda s: 3)  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="expected str"):
        bad(["p"], ["c"])


# -- the rollout's sampler --------------------------------------------------------------------


def test_inverse_cdf_sampler_matches_the_distribution_and_skips_zero_mass_tokens():
    from agents.rollout import sample_tokens

    probs = torch.tensor([0.1, 0.0, 0.25, 0.3, 0.05, 0.3, 0.0])
    logp = probs.log()[None].repeat(40_000, 1)
    gen = torch.Generator().manual_seed(0)
    for block in (3, 4, 1024):  # several blocks, a padded last block, a single block
        counts = torch.bincount(sample_tokens(logp, gen, block=block), minlength=7)
        freq = counts.double() / 40_000
        assert counts[1] == 0 and counts[6] == 0
        assert torch.allclose(freq, probs.double(), atol=0.01), (block, freq)


def test_inverse_cdf_sampler_rejects_nan_rows():
    from agents.rollout import sample_tokens

    with pytest.raises(ValueError, match="NaN"):
        sample_tokens(torch.full((1, 5), float("nan")))
