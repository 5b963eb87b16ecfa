"""Property and hand-computed tests for the d-RLAIF score math and reward normalization."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rewards.normalization import (
    RunningMeanStd,
    clip_rewards,
    direct_reward_from_logits,
    expected_score,
    preference_from_logprobs,
    score_distribution,
    score_distribution_from_logits,
    score_to_reward,
    whiten,
)

#: Numpy-only properties: no deadline (the shared CI machine is slow), no global profile.
relaxed = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

NEG_INF = -math.inf

# ----------------------------------------------------------------------------- strategies

finite_floats = st.floats(allow_nan=False, allow_infinity=False)
moderate_logits = st.floats(-50.0, 50.0)
batch_sizes = st.integers(1, 6)


@st.composite
def logit_rows(draw, elements=finite_floats, allow_neg_inf: bool = True) -> np.ndarray:
    """(n, 10) logits, finite or -inf, with at least one finite entry per row."""
    n = draw(batch_sizes)
    values = draw(hnp.arrays(np.float64, (n, 10), elements=elements))
    if allow_neg_inf:
        dead = draw(hnp.arrays(np.bool_, (n, 10)))
        keep = draw(st.integers(0, 9))
        dead[:, keep] = False
        values = np.where(dead, NEG_INF, values)
    return values


@st.composite
def dyadic_distributions(draw, total_exp: int = 20) -> np.ndarray:
    """(10,) probabilities that are integer multiples of 2**-total_exp summing to exactly 1,
    so every sum and dot product in expected_score is exact in float64."""
    total = 2**total_exp
    cuts = sorted(draw(st.lists(st.integers(0, total), min_size=9, max_size=9)))
    counts = np.diff(np.array([0, *cuts, total]))
    return counts.astype(np.float64) / total


@st.composite
def float_distributions(draw) -> np.ndarray:
    """(10,) arbitrary probabilities (normalised non-negative weights, some exact zeros)."""
    weights = draw(hnp.arrays(np.float64, 10, elements=st.floats(0.0, 1.0)))
    assume(weights.sum() > 1e-3)
    return weights / weights.sum()


# ----------------------------------------------------------------------------- range


@relaxed
@given(logit_rows())
def test_direct_reward_stays_within_minus_one_and_one_for_any_finite_logits(logits):
    reward = direct_reward_from_logits(logits)
    assert reward.shape == (logits.shape[0],)
    assert np.all(np.isfinite(reward))
    assert np.all((reward >= -1.0) & (reward <= 1.0))


@relaxed
@given(float_distributions())
def test_expected_score_lies_between_one_and_ten(probs):
    s = expected_score(probs)
    assert 1.0 <= s <= 10.0
    assert -1.0 <= score_to_reward(s) <= 1.0


@relaxed
@given(
    hnp.arrays(np.float64, (3, 9), elements=st.floats(-1e6, 0.0)),
    hnp.arrays(np.float64, 3, elements=st.floats(-1e6, 0.0)),
)
def test_two_step_distribution_is_a_valid_distribution_for_finite_log_probs(first, second):
    probs = score_distribution(first, second)
    assert probs.shape == (3, 10)
    assert np.all(np.isfinite(probs)) and np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=0, atol=1e-12)
    reward = score_to_reward(expected_score(probs))
    assert np.all((reward >= -1.0) & (reward <= 1.0))


# ----------------------------------------------------------------------------- endpoints


def test_all_mass_on_score_one_gives_exactly_minus_one_and_on_ten_plus_one():
    one_hot = np.eye(10)
    assert score_to_reward(expected_score(one_hot[0])) == -1.0
    assert score_to_reward(expected_score(one_hot[9])) == 1.0
    assert expected_score(one_hot[0]) == 1.0
    assert expected_score(one_hot[9]) == 10.0


@relaxed
@given(finite_floats, st.sampled_from([0, 9]))
def test_logits_with_minus_inf_elsewhere_give_exact_endpoint_reward(value, position):
    logits = np.full(10, NEG_INF)
    logits[position] = value
    expected = -1.0 if position == 0 else 1.0
    assert direct_reward_from_logits(logits) == expected


@relaxed
@given(
    st.floats(-1e6, 1e6),
    st.floats(800.0, 1e6),
    hnp.arrays(np.float64, 9, elements=st.floats(0.0, 1e6)),
    st.sampled_from([0, 9]),
)
def test_very_large_logit_gap_gives_exact_endpoint_reward(top, gap, extra_gaps, position):
    # Every other logit is at least `gap` (>= 800) below the top one, so exp() underflows
    # to exactly 0 and the reward is exactly the endpoint.
    others = top - gap - extra_gaps
    logits = np.insert(others, position, top)
    expected = -1.0 if position == 0 else 1.0
    assert direct_reward_from_logits(logits) == expected


def test_two_step_split_gives_endpoints_for_all_mass_on_digit_one():
    first = np.array([0.0] + [NEG_INF] * 8)  # P("1") = 1
    assert score_to_reward(expected_score(score_distribution(first, 0.0))) == 1.0  # "10"
    assert score_to_reward(expected_score(score_distribution(first, NEG_INF))) == -1.0  # "1"


# ----------------------------------------------------------------------------- monotonicity


@relaxed
@given(dyadic_distributions(), st.integers(0, 9), st.integers(0, 9), st.data())
def test_moving_mass_to_a_higher_score_strictly_increases_the_reward_exactly(
    probs, low, high, data
):
    # Dyadic probabilities make every float operation exact, so even one unit of 2**-20
    # moved upward must raise the reward and moving nothing must leave it unchanged.
    assume(low < high)
    units = int(round(probs[low] * 2**20))
    moved_units = data.draw(st.integers(0, units), label="moved units")
    after = probs.copy()
    after[low] -= moved_units / 2**20
    after[high] += moved_units / 2**20
    before_r = score_to_reward(expected_score(probs))
    after_r = score_to_reward(expected_score(after))
    if moved_units == 0:
        assert after_r == before_r
    else:
        assert after_r > before_r


@relaxed
@given(float_distributions(), st.integers(0, 9), st.integers(0, 9), st.floats(1e-6, 1.0))
def test_moving_a_share_of_mass_to_a_higher_score_increases_the_reward(
    probs, low, high, share
):
    assume(low < high and probs[low] >= 1e-6)
    moved = probs[low] * share
    after = probs.copy()
    after[low] -= moved
    after[high] += moved
    before_r = score_to_reward(expected_score(probs))
    after_r = score_to_reward(expected_score(after))
    assert after_r > before_r
    # and by the exact amount, up to rounding: delta reward = moved * (high - low) / 4.5
    assert after_r - before_r == pytest.approx(moved * (high - low) / 4.5, rel=1e-6, abs=1e-12)


@relaxed
@given(logit_rows(elements=moderate_logits, allow_neg_inf=False))
def test_raising_the_logit_of_score_ten_never_lowers_the_reward(logits):
    raised = logits.copy()
    raised[:, 9] += 1.0
    assert np.all(direct_reward_from_logits(raised) >= direct_reward_from_logits(logits) - 1e-12)


# ----------------------------------------------------------------------------- invariance


@relaxed
@given(logit_rows(elements=st.floats(-1e3, 1e3)), st.floats(-1e4, 1e4))
def test_adding_a_constant_to_all_logits_does_not_change_the_reward(logits, shift):
    np.testing.assert_allclose(
        direct_reward_from_logits(logits + shift), direct_reward_from_logits(logits),
        rtol=0, atol=1e-9,
    )


@relaxed
@given(
    hnp.arrays(np.float64, (2, 9), elements=st.floats(-30.0, 0.0)),
    st.floats(-30.0, 0.0),
    st.floats(-1e3, 1e3),
)
def test_two_step_distribution_ignores_a_constant_added_to_first_digit_scores(
    first, second, shift
):
    np.testing.assert_allclose(
        score_distribution(first + shift, second), score_distribution(first, second),
        rtol=0, atol=1e-9,
    )


# ----------------------------------------------------------------------------- hand-made


def test_two_token_split_matches_hand_computed_numbers():
    # P("1") = 0.4, P("2") = 0.1, P("5") = 0.2, other digits 0, P("0" | "1") = 0.25.
    # Before renormalisation: P(1) = 0.4 * 0.75 = 0.3, P(10) = 0.4 * 0.25 = 0.1,
    # P(2) = 0.1, P(5) = 0.2; total 0.7.
    first = np.full(9, NEG_INF)
    first[0], first[1], first[4] = np.log(0.4), np.log(0.1), np.log(0.2)
    probs = score_distribution(first, np.log(0.25))
    expected = np.zeros(10)
    expected[0], expected[1], expected[4], expected[9] = 0.3, 0.1, 0.2, 0.1
    expected /= 0.7
    np.testing.assert_allclose(probs, expected, rtol=1e-12, atol=1e-15)
    # E[s] = (1*0.3 + 2*0.1 + 5*0.2 + 10*0.1) / 0.7 = 2.5 / 0.7
    assert expected_score(probs) == pytest.approx(2.5 / 0.7, rel=1e-12)
    assert score_to_reward(expected_score(probs)) == pytest.approx((2.5 / 0.7 - 5.5) / 4.5)


def test_two_step_split_broadcasts_one_second_step_per_row():
    first = np.tile(np.r_[np.log([0.5, 0.5]), np.full(7, NEG_INF)], (2, 1))
    probs = score_distribution(first, np.log([1.0, 0.5]))
    np.testing.assert_allclose(probs[0], np.r_[0.0, 0.5, np.zeros(7), 0.5])
    np.testing.assert_allclose(probs[1], np.r_[0.25, 0.5, np.zeros(7), 0.25])


def test_softmax_of_score_logits_matches_hand_computed_values():
    logits = np.r_[np.log(3.0), np.log(1.0), np.full(8, NEG_INF)]
    np.testing.assert_allclose(score_distribution_from_logits(logits), np.r_[0.75, 0.25, [0] * 8])
    assert direct_reward_from_logits(logits) == pytest.approx((1.25 - 5.5) / 4.5)


def test_preference_is_the_softmax_over_the_two_answer_tokens():
    assert preference_from_logprobs(np.log(0.3), np.log(0.1)) == pytest.approx(0.75)
    assert preference_from_logprobs(5.0, 5.0) == 0.5
    assert preference_from_logprobs(0.0, NEG_INF) == 1.0
    assert preference_from_logprobs(NEG_INF, -3.0) == 0.0
    out = preference_from_logprobs(np.array([0.0, -1.0]), np.array([-1.0, 0.0]))
    np.testing.assert_allclose(out, [1 / (1 + math.exp(-1)), 1 / (1 + math.exp(1))])


@relaxed
@given(finite_floats, finite_floats)
def test_preference_is_in_unit_interval_and_symmetric_for_finite_input(a, b):
    p = preference_from_logprobs(a, b)
    q = preference_from_logprobs(b, a)
    assert 0.0 <= p <= 1.0 and not math.isnan(p)
    assert p + q == pytest.approx(1.0, abs=1e-12)


# ----------------------------------------------------------------------------- bad input


BAD_VALUES = [math.nan, math.inf]


@pytest.mark.parametrize("bad", BAD_VALUES)
def test_nan_or_plus_inf_logits_raise(bad):
    logits = np.zeros((2, 10))
    logits[1, 3] = bad
    with pytest.raises(ValueError, match="NaN|inf"):
        direct_reward_from_logits(logits)
    with pytest.raises(ValueError, match="NaN|inf"):
        score_distribution_from_logits(logits)


@pytest.mark.parametrize("bad", BAD_VALUES)
def test_nan_or_plus_inf_in_two_step_log_probs_raise(bad):
    first = np.zeros(9)
    first[2] = bad
    with pytest.raises(ValueError, match="first_digit_logprobs"):
        score_distribution(first, -1.0)
    with pytest.raises(ValueError, match="zero_after_one_logprob"):
        score_distribution(np.zeros(9), bad)


@pytest.mark.parametrize("bad", BAD_VALUES)
def test_nan_or_plus_inf_in_preference_log_probs_raise(bad):
    with pytest.raises(ValueError, match="logp_1"):
        preference_from_logprobs(bad, 0.0)
    with pytest.raises(ValueError, match="logp_2"):
        preference_from_logprobs([0.0, 0.0], [0.0, bad])


@pytest.mark.parametrize(
    "call",
    [
        lambda: score_distribution_from_logits(np.zeros((0, 10))),
        lambda: direct_reward_from_logits([]),
        lambda: expected_score(np.zeros((0, 10))),
        lambda: score_to_reward([]),
        lambda: score_distribution(np.zeros((0, 9)), np.zeros(0)),
        lambda: preference_from_logprobs([], []),
    ],
    ids=["softmax", "direct", "expected", "to_reward", "two_step", "preference"],
)
def test_empty_input_raises(call):
    with pytest.raises(ValueError, match="empty"):
        call()


@pytest.mark.parametrize(
    "call",
    [
        lambda: score_distribution_from_logits(np.zeros((2, 9))),
        lambda: direct_reward_from_logits(np.zeros(11)),
        lambda: direct_reward_from_logits(3.0),
        lambda: expected_score(np.full(9, 1 / 9)),
        lambda: score_distribution(np.zeros(10), 0.0),
        lambda: score_distribution(np.zeros((2, 9)), np.zeros(3)),
        lambda: preference_from_logprobs(np.zeros(2), np.zeros(3)),
    ],
    ids=["softmax", "direct-11", "direct-scalar", "expected-9", "two_step-10", "two_step-batch",
         "preference-broadcast"],
)
def test_wrong_shape_raises(call):
    with pytest.raises(ValueError, match="shape|broadcast"):
        call()


def test_rows_with_no_mass_raise():
    with pytest.raises(ValueError, match="every candidate"):
        direct_reward_from_logits(np.full((1, 10), NEG_INF))
    with pytest.raises(ValueError, match="every candidate"):
        score_distribution(np.full(9, NEG_INF), 0.0)
    with pytest.raises(ValueError, match="every candidate"):
        preference_from_logprobs(NEG_INF, NEG_INF)


def test_invalid_probabilities_raise():
    with pytest.raises(ValueError, match="negative"):
        expected_score(np.r_[-0.1, 1.1, np.zeros(8)])
    with pytest.raises(ValueError, match="sum to 1"):
        expected_score(np.full(10, 0.2))
    with pytest.raises(ValueError, match="NaN"):
        expected_score(np.r_[np.nan, np.ones(9) / 9])
    with pytest.raises(ValueError, match=r"\[1, 10\]"):
        score_to_reward(10.5)
    with pytest.raises(ValueError, match="log-probability"):
        score_distribution(np.zeros(9), 0.5)


# ----------------------------------------------------------------------------- RunningMeanStd

batches_strategy = st.lists(
    hnp.arrays(np.float64, st.integers(0, 20), elements=st.floats(-1e6, 1e6)),
    min_size=1,
    max_size=8,
)


@relaxed
@given(batches_strategy)
def test_running_mean_std_matches_numpy_on_the_concatenation(batches):
    rms = RunningMeanStd()
    for batch in batches:
        rms.update(batch)
    data = np.concatenate(batches)
    assume(data.size > 0)
    assert rms.count == data.size
    scale = max(1.0, float(np.abs(data).max()))
    assert rms.mean == pytest.approx(np.mean(data), rel=1e-9, abs=1e-9 * scale)
    assert rms.var == pytest.approx(np.var(data), rel=1e-7, abs=1e-9 * scale**2)


def test_running_mean_std_per_feature_matches_numpy():
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(n, 3)) * [1, 10, 100] + [5, -5, 0] for n in (1, 7, 30)]
    rms = RunningMeanStd(shape=(3,))
    for batch in batches:
        rms.update(batch)
    data = np.concatenate(batches)
    np.testing.assert_allclose(rms.mean, data.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(rms.var, data.var(axis=0), rtol=1e-12)
    with pytest.raises(ValueError, match="shape"):
        rms.update(np.zeros((2, 4)))


def test_running_mean_std_state_dict_round_trip_continues_identically():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=50), rng.normal(size=17)
    original = RunningMeanStd()
    original.update(a)
    restored = RunningMeanStd()
    restored.load_state_dict(original.state_dict())
    original.update(b)
    restored.update(b)
    assert restored.count == original.count == 67
    assert restored.mean == pytest.approx(original.mean, rel=1e-12)
    assert restored.var == pytest.approx(original.var, rel=1e-12)


def test_running_mean_std_rejects_nan_and_malformed_state_without_changing():
    rms = RunningMeanStd()
    rms.update([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="NaN or inf"):
        rms.update([1.0, math.nan])
    assert rms.count == 3 and rms.mean == 2.0
    with pytest.raises(ValueError, match="malformed"):
        rms.load_state_dict({"mean": 0.0})
    with pytest.raises(ValueError, match="count"):
        rms.load_state_dict({"shape": [], "mean": 0.0, "var": 1.0, "count": -1})
    assert rms.count == 3


# ----------------------------------------------------------------------------- whiten / clip


@relaxed
@given(batches_strategy.filter(lambda bs: sum(b.size for b in bs) >= 2))
def test_whitening_the_seen_data_gives_zero_mean_and_unit_std(batches):
    data = np.concatenate(batches)
    assume(np.std(data) > 1e-2)
    rms = RunningMeanStd()
    for batch in batches:
        rms.update(batch)
    white = whiten(data, rms)
    assert abs(white.mean()) < 1e-6
    # exactly sqrt(var / (var + eps)) with eps = 1e-8, which is within 1e-4 of 1 here
    var = np.var(data)
    assert white.std() == pytest.approx(math.sqrt(var / (var + 1e-8)), rel=1e-7)
    assert white.std() == pytest.approx(1.0, abs=1e-4)


def test_whiten_without_shift_keeps_the_mean_and_without_rms_uses_the_batch():
    x = np.array([1.0, 3.0, 5.0, 7.0])
    rms = RunningMeanStd()
    rms.update(x)
    kept = whiten(x, rms, shift_mean=False)
    assert kept.mean() == pytest.approx(4.0)
    assert kept.std() == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(whiten(x), whiten(x, rms))
    with pytest.raises(ValueError, match="no data"):
        whiten(x, RunningMeanStd())
    with pytest.raises(ValueError, match="NaN or inf"):
        whiten([math.nan], rms)


@relaxed
@given(
    hnp.arrays(np.float64, st.integers(0, 30), elements=finite_floats),
    st.floats(-1e3, 1e3),
    st.floats(1e-3, 1e3),
)
def test_clipping_respects_bounds_and_is_idempotent(x, low, width):
    high = low + width
    clipped = clip_rewards(x, low, high)
    assert clipped.shape == x.shape
    assert np.all((clipped >= low) & (clipped <= high))
    np.testing.assert_array_equal(clip_rewards(clipped, low, high), clipped)
    inside = (x >= low) & (x <= high)
    np.testing.assert_array_equal(clipped[inside], x[inside])


@pytest.mark.parametrize("low, high", [(1.0, 1.0), (2.0, -2.0), (math.nan, 1.0)])
def test_clip_rejects_bounds_that_are_not_increasing(low, high):
    with pytest.raises(ValueError, match="low < high"):
        clip_rewards([0.0], low, high)


def test_clip_rejects_nan_rewards():
    with pytest.raises(ValueError, match="NaN"):
        clip_rewards([0.0, math.nan], -1.0, 1.0)
