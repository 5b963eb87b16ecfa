"""Score math for direct RLAIF (d-RLAIF) and reward normalization. Pure numpy.

d-RLAIF (Lee et al. 2023, section 2.4) asks the judge to rate a response from 1 to 10 and
uses the probability-weighted score as the reward::

    s(x|c) = sum_{i=1}^{10} i * P(i | x, c)          in [1, 10]
    r      = (s - 5.5) / 4.5                         in [-1, 1]

The judge sees scores as text, so "10" is two tokens ("1" then "0") in most tokenizers.
:func:`score_distribution` splits the mass of the first token "1" into score 1 and
score 10 with the second-step probability ``P("0" | prompt + "1")``; backends that score
all ten continuations directly pass their ten logits to
:func:`score_distribution_from_logits` instead.

Every function validates its input and raises :class:`ValueError` on NaN, ``+inf``,
empty arrays, wrong trailing dimensions or invalid probabilities: a broken judge must
fail loudly, never produce a plausible-looking reward. ``-inf`` log-probabilities and
logits are legal (probability zero) as long as some candidate in each row is finite.

Reward normalization for RL (as in RLHF libraries): :class:`RunningMeanStd` keeps a
running mean and (population) variance in float64 with the parallel Welford/Chan update,
:func:`whiten` standardises rewards with it and :func:`clip_rewards` bounds them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: Scores the judge can give, as float64, shape (10,).
SCORES: np.ndarray = np.arange(1.0, 11.0)
#: Number of distinct scores (1..10).
NUM_SCORES: int = 10
#: Number of first digits "1".."9" (score 10 starts with "1").
NUM_FIRST_DIGITS: int = 9
#: How far a log-probability may exceed 0 (rounding in low-precision models) before it is
#: rejected as "not a log-probability".
LOGPROB_TOLERANCE: float = 1e-3
#: How far a probability row may sum away from 1 before it is rejected.
PROB_SUM_TOLERANCE: float = 1e-6


# --------------------------------------------------------------------------- validation


def _as_float_array(name: str, x: object) -> np.ndarray:
    """``x`` as float64, non-empty, without NaN or +inf (``-inf`` is allowed)."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric, got {type(x).__name__}: {exc}") from exc
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); need at least one value")
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN at {_first_positions(np.isnan(arr))}")
    if np.isposinf(arr).any():
        raise ValueError(f"{name} contains +inf at {_first_positions(np.isposinf(arr))}")
    return arr


def _first_positions(mask: np.ndarray, limit: int = 5) -> str:
    """Up to ``limit`` index tuples where ``mask`` is true, for error messages."""
    idx = np.argwhere(mask)[:limit]
    return ", ".join(str(tuple(int(i) for i in row)) for row in idx)


def _check_last_dim(name: str, arr: np.ndarray, size: int, meaning: str) -> None:
    if arr.ndim == 0 or arr.shape[-1] != size:
        raise ValueError(
            f"{name} must have shape (..., {size}) ({meaning}), got shape {arr.shape}"
        )


def _check_rows_not_all_neg_inf(name: str, arr: np.ndarray) -> None:
    """Each row along the last axis needs at least one finite entry (some mass)."""
    dead = np.all(np.isneginf(arr), axis=-1)
    if dead.any():
        where = _first_positions(dead) if dead.ndim else "()"
        raise ValueError(
            f"{name} is -inf for every candidate in row(s) {where}: the judge gave zero "
            "probability to all of them, so no distribution can be formed"
        )


def _check_distribution(name: str, probs: object) -> np.ndarray:
    """``probs`` as float64 (..., 10), non-negative, rows summing to 1 within tolerance."""
    arr = _as_float_array(name, probs)
    if np.isinf(arr).any():
        raise ValueError(f"{name} contains -inf at {_first_positions(np.isinf(arr))}")
    _check_last_dim(name, arr, NUM_SCORES, "probabilities of scores 1..10")
    if (arr < 0).any():
        raise ValueError(f"{name} has negative probabilities at {_first_positions(arr < 0)}")
    sums = arr.sum(axis=-1)
    bad = np.abs(sums - 1.0) > PROB_SUM_TOLERANCE
    if bad.any():
        first = tuple(np.argwhere(np.atleast_1d(bad))[0]) if sums.ndim else ()
        value = sums[first] if sums.ndim else float(sums)
        raise ValueError(
            f"{name} rows must sum to 1 (tolerance {PROB_SUM_TOLERANCE}); row {first} sums "
            f"to {float(value)!r}"
        )
    return arr


# --------------------------------------------------------------------------- d-RLAIF


def score_distribution(
    first_digit_logprobs: np.ndarray, zero_after_one_logprob: np.ndarray
) -> np.ndarray:
    """Distribution over scores 1..10 from the judge's two-step digit log-probabilities.

    Args:
        first_digit_logprobs: shape ``(..., 9)``, log P("1"), ..., log P("9") as the first
            token of the answer. They need not sum to 1 over the nine digits (the rest of
            the vocabulary has mass): the result is renormalised, so log-probabilities or
            raw logits from the same position give the same answer. ``-inf`` = probability
            0; a row that is ``-inf`` everywhere raises.
        zero_after_one_logprob: shape ``(...)`` (the batch shape, or broadcastable to it),
            log P("0" | prompt + "1"), a true log-probability in ``(-inf, 0]``.

    Returns:
        float64 array ``(..., 10)``: probabilities of scores 1..10, rows sum to 1, with
        ``P(10) = P("1") * P("0"|"1")``, ``P(1) = P("1") * (1 - P("0"|"1"))``,
        ``P(i) = P("i")`` for i in 2..9, then renormalised.

    Raises:
        ValueError: NaN, +inf, empty input, wrong last dimension, shapes that do not
            broadcast, a row with no mass, or ``zero_after_one_logprob > 0``.
    """
    first = _as_float_array("first_digit_logprobs", first_digit_logprobs)
    _check_last_dim("first_digit_logprobs", first, NUM_FIRST_DIGITS, 'log P("1".."9")')
    _check_rows_not_all_neg_inf("first_digit_logprobs", first)
    second = _as_float_array("zero_after_one_logprob", zero_after_one_logprob)
    batch_shape = first.shape[:-1]
    try:
        second = np.broadcast_to(second, batch_shape)
    except ValueError as exc:
        raise ValueError(
            f"zero_after_one_logprob has shape {np.shape(zero_after_one_logprob)}, which does "
            f"not broadcast to the batch shape {batch_shape} of first_digit_logprobs"
        ) from exc
    if (second > LOGPROB_TOLERANCE).any():
        raise ValueError(
            'zero_after_one_logprob must be a log-probability (<= 0); got '
            f"{float(second.max())!r}. Pass log P(\"0\" | prompt + \"1\"), not a logit"
        )
    # Shift by the row max: the renormalisation below cancels the shift, and the largest
    # digit becomes exp(0) = 1, so no overflow and the row sum is >= 1.
    with np.errstate(over="ignore"):  # -huge - huge -> -inf, i.e. probability 0: fine
        shifted = first - first.max(axis=-1, keepdims=True)
    digit = np.exp(shifted)  # (..., 9), unnormalised P("1".."9")
    log_q = np.minimum(second, 0.0)
    p_zero = np.exp(log_q)  # P("0" | "1"), in [0, 1]
    p_not_zero = -np.expm1(log_q)  # 1 - P("0" | "1"), accurate when P("0"|"1") ~ 1
    p_one = digit[..., 0]
    out = np.empty(batch_shape + (NUM_SCORES,), dtype=np.float64)
    out[..., 0] = p_one * p_not_zero
    out[..., 1:9] = digit[..., 1:]
    out[..., 9] = p_one * p_zero
    return out / out.sum(axis=-1, keepdims=True)


def score_distribution_from_logits(score_logits: np.ndarray) -> np.ndarray:
    """Softmax over unnormalised logits of scores 1..10, numerically stable.

    Args:
        score_logits: shape ``(..., 10)``; ``-inf`` = probability 0 (a row that is ``-inf``
            everywhere raises). Any finite value works, including very large ones.

    Returns:
        float64 array ``(..., 10)``, rows sum to 1. Adding a constant to a row does not change
        the result (up to rounding).
    """
    logits = _as_float_array("score_logits", score_logits)
    _check_last_dim("score_logits", logits, NUM_SCORES, "logits of scores 1..10")
    _check_rows_not_all_neg_inf("score_logits", logits)
    with np.errstate(over="ignore"):  # -huge - huge -> -inf, i.e. probability 0: fine
        shifted = logits - logits.max(axis=-1, keepdims=True)  # max entry -> 0, others <= 0
    weights = np.exp(shifted)
    return weights / weights.sum(axis=-1, keepdims=True)


def expected_score(probs: np.ndarray) -> np.ndarray:
    """Probability-weighted score ``sum_i i * p_i``.

    Args:
        probs: shape ``(..., 10)``, probabilities of scores 1..10, non-negative, each row
            summing to 1 within :data:`PROB_SUM_TOLERANCE`.

    Returns:
        float64 array ``(...)`` in ``[1, 10]``; exactly 1.0 / 10.0 when all mass is on score
        1 / score 10.
    """
    arr = _check_distribution("probs", probs)
    # Dividing by the row sum makes tiny normalisation errors irrelevant.
    score = (arr @ SCORES) / arr.sum(axis=-1)
    return np.clip(score, 1.0, 10.0)


def score_to_reward(expected: np.ndarray) -> np.ndarray:
    """Map an expected score in ``[1, 10]`` to a reward ``(s - 5.5) / 4.5`` in ``[-1, 1]``.

    Values a hair outside ``[1, 10]`` (float rounding, up to 1e-9) are clipped; anything
    further out raises ``ValueError``.
    """
    s = _as_float_array("expected", expected)
    if np.isinf(s).any():
        raise ValueError(f"expected contains -inf at {_first_positions(np.isinf(s))}")
    out_of_range = (s < 1.0 - 1e-9) | (s > 10.0 + 1e-9)
    if out_of_range.any():
        bad = s[out_of_range].ravel()[:5].tolist()
        raise ValueError(f"expected scores must lie in [1, 10], got {bad}")
    return np.clip((s - 5.5) / 4.5, -1.0, 1.0)


def direct_reward_from_logits(score_logits: np.ndarray) -> np.ndarray:
    """d-RLAIF reward from logits of scores 1..10: shape ``(..., 10)`` -> ``(...)`` in
    ``[-1, 1]``."""
    return score_to_reward(expected_score(score_distribution_from_logits(score_logits)))


def preference_from_logprobs(logp_1: np.ndarray, logp_2: np.ndarray) -> np.ndarray:
    """Soft preference label: softmax over the two answer tokens, returns ``P("1")``.

    Args:
        logp_1, logp_2: log P("1") and log P("2") (or raw logits from the same position:
            only their difference matters), broadcastable shapes. ``-inf`` = probability 0;
            both ``-inf`` at the same position raises.

    Returns:
        float64 array of the broadcast shape, values in ``[0, 1]``:
        ``exp(l1) / (exp(l1) + exp(l2))``, computed as a stable sigmoid of ``l1 - l2``.
    """
    a = _as_float_array("logp_1", logp_1)
    b = _as_float_array("logp_2", logp_2)
    try:
        a, b = np.broadcast_arrays(a, b)
    except ValueError as exc:
        raise ValueError(
            f"logp_1 shape {a.shape} and logp_2 shape {b.shape} do not broadcast"
        ) from exc
    stacked = np.stack([a, b], axis=-1)
    _check_rows_not_all_neg_inf("log-probabilities of candidates ('1', '2')", stacked)
    with np.errstate(over="ignore"):  # -huge - huge -> -inf, i.e. probability 0: fine
        shifted = stacked - stacked.max(axis=-1, keepdims=True)
    weights = np.exp(shifted)
    return weights[..., 0] / weights.sum(axis=-1)


# --------------------------------------------------------------------------- normalization


class RunningMeanStd:
    """Running mean and population variance (``ddof=0``) of a stream of batches, float64.

    Uses the parallel update of Chan et al. (Welford's algorithm for batches): after
    ``update(b1); update(b2); ...`` the statistics equal ``np.mean`` / ``np.var`` of the
    concatenation of all batches (up to rounding).

    Args:
        shape: shape of one sample. ``()`` (default) treats every element of a batch as one
            scalar sample; otherwise a batch has shape ``(n, *shape)``.

    Before any data: ``count == 0``, ``mean == 0`` and ``var == 1`` (a neutral transform),
    but :func:`whiten` refuses to use statistics that have seen nothing.
    """

    def __init__(self, shape: Sequence[int] = ()) -> None:
        self.shape: tuple[int, ...] = tuple(int(s) for s in shape)
        self._mean = np.zeros(self.shape, dtype=np.float64)
        self._m2 = np.zeros(self.shape, dtype=np.float64)  # sum of squared deviations
        self.count: int = 0

    @property
    def mean(self) -> np.ndarray | float:
        """Mean of everything seen (a float when ``shape == ()``)."""
        return self._scalar_or_array(self._mean)

    @property
    def var(self) -> np.ndarray | float:
        """Population variance (``ddof=0``) of everything seen; 1.0 before any data."""
        if self.count == 0:
            return self._scalar_or_array(np.ones(self.shape))
        return self._scalar_or_array(self._m2 / self.count)

    @property
    def std(self) -> np.ndarray | float:
        """Square root of :attr:`var`."""
        return self._scalar_or_array(np.sqrt(np.asarray(self.var)))

    def _scalar_or_array(self, value: np.ndarray) -> np.ndarray | float:
        return float(value) if self.shape == () else value.copy()

    def update(self, batch: object) -> None:
        """Fold a batch into the statistics.

        ``batch`` has any shape when ``shape == ()`` (all elements are samples), else shape
        ``(n, *shape)``. An empty batch changes nothing. NaN or inf raise ``ValueError``
        and leave the statistics untouched.
        """
        arr = np.asarray(batch, dtype=np.float64)
        if arr.size == 0:
            return
        if self.shape == ():
            arr = arr.reshape(-1)
        elif arr.shape[1:] != self.shape:
            raise ValueError(
                f"batch shape {arr.shape} does not match (n, *{self.shape}) for this "
                "RunningMeanStd"
            )
        if not np.isfinite(arr).all():
            raise ValueError("RunningMeanStd.update: batch contains NaN or inf")
        n = arr.shape[0]
        batch_mean = arr.mean(axis=0)
        batch_m2 = ((arr - batch_mean) ** 2).sum(axis=0)
        total = self.count + n
        delta = batch_mean - self._mean
        self._mean = self._mean + delta * (n / total)
        self._m2 = self._m2 + batch_m2 + delta**2 * (self.count * n / total)
        self.count = total

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: ``{"shape", "mean", "var", "count"}``."""
        return {
            "shape": list(self.shape),
            "mean": self._mean.tolist(),
            "var": (self._m2 / self.count).tolist() if self.count else np.ones(self.shape).tolist(),
            "count": int(self.count),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` output. Raises ``ValueError`` on a malformed state."""
        try:
            shape = tuple(int(s) for s in state["shape"])
            mean = np.asarray(state["mean"], dtype=np.float64)
            var = np.asarray(state["var"], dtype=np.float64)
            count = state["count"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed RunningMeanStd state: {exc!r}") from exc
        if isinstance(count, bool) or not float(count).is_integer() or count < 0:
            raise ValueError(f"RunningMeanStd state count must be an integer >= 0, got {count!r}")
        if shape != self.shape or mean.shape != shape or var.shape != shape:
            raise ValueError(
                f"RunningMeanStd state has shape {shape} (mean {mean.shape}, var {var.shape}); "
                f"this instance has shape {self.shape}"
            )
        if not (np.isfinite(mean).all() and np.isfinite(var).all()) or (var < 0).any():
            raise ValueError("RunningMeanStd state has non-finite mean/var or negative var")
        self.count = int(count)
        self._mean = mean.copy()
        self._m2 = var * self.count

    def __repr__(self) -> str:
        return (
            f"RunningMeanStd(shape={self.shape}, count={self.count}, mean={self.mean}, "
            f"var={self.var})"
        )


def whiten(
    x: object,
    rms: RunningMeanStd | None = None,
    eps: float = 1e-8,
    shift_mean: bool = True,
) -> np.ndarray:
    """Standardise ``x``: ``(x - mean) / sqrt(var + eps)``.

    Args:
        x: values, any shape (float64 result of the same shape). Must be finite.
        rms: statistics to use. ``None`` uses the mean/variance of ``x`` itself.
        eps: added to the variance, > 0.
        shift_mean: as in TRL's ``whiten``: ``False`` adds the mean back after scaling,
            ``(x - mean) / sqrt(var + eps) + mean``, so only the spread changes.

    Raises:
        ValueError: non-finite ``x``, empty ``x`` with ``rms=None``, ``eps <= 0``, or
            ``rms`` that has seen no data.
    """
    arr = np.asarray(x, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError("whiten: x contains NaN or inf")
    if not (np.isfinite(eps) and eps > 0):
        raise ValueError(f"whiten: eps must be a finite number > 0, got {eps!r}")
    if rms is None:
        if arr.size == 0:
            raise ValueError("whiten: x is empty and no RunningMeanStd was given")
        mean, var = arr.mean(), arr.var()
    else:
        if rms.count == 0:
            raise ValueError("whiten: the RunningMeanStd has seen no data (count == 0)")
        mean, var = np.asarray(rms.mean), np.asarray(rms.var)
    out = (arr - mean) / np.sqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out


def clip_rewards(x: object, low: float, high: float) -> np.ndarray:
    """Clip rewards into ``[low, high]`` (float64, same shape as ``x``).

    Raises:
        ValueError: NaN in ``x``, NaN bounds, or ``low >= high``.
    """
    if np.isnan(low) or np.isnan(high) or not low < high:
        raise ValueError(f"clip_rewards needs low < high, got low={low!r}, high={high!r}")
    arr = np.asarray(x, dtype=np.float64)
    if np.isnan(arr).any():
        raise ValueError("clip_rewards: x contains NaN")
    return np.clip(arr, low, high)
