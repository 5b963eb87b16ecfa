"""Proportions with confidence intervals, bootstrap intervals, percentages (core layer).

The one home of the statistics every report uses: label alignment, win rates, reward-model
accuracy, harmless rates (Wilson score intervals, which accept fractional successes such as
half-credited ties) and the percentile bootstrap (length-controlled win rates, paired
differences). NumPy only: SciPy is not a dependency.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["Z_95", "MeanCI", "Rate", "bootstrap_interval", "bootstrap_mean_ci", "pct",
           "proportion", "wilson_interval"]

#: z value of a two-sided 95% normal interval.
Z_95: float = 1.959963984540054


def wilson_interval(successes: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``successes / n`` (``successes`` may be
    fractional, e.g. half-credited ties). Returns ``(low, high)`` within ``[0, 1]``.

    Raises:
        ValueError: ``n <= 0`` or ``successes`` outside ``[0, n]``.
    """
    if n <= 0:
        raise ValueError(f"wilson_interval needs n > 0, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n={n}], got {successes}")
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # The bounds are exactly 0 / 1 at p = 0 / 1; set them so rounding cannot move them.
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == n else min(1.0, center + half)
    return low, high


@dataclass(frozen=True)
class Rate:
    """A proportion with its 95% Wilson score interval.

    Attributes:
        rate: ``successes / n`` in [0, 1].
        ci_low, ci_high: the 95% Wilson interval, ``ci_low <= rate <= ci_high``.
        n: number of trials (> 0).
        successes: credited successes (ties count 0.5, so it may be fractional).
        ties: trials that were exact ties (0 where ties do not apply).
    """

    rate: float
    ci_low: float
    ci_high: float
    n: int
    successes: float
    ties: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def proportion(successes: float, n: int, ties: int = 0) -> Rate:
    """:class:`Rate` of ``successes`` out of ``n`` with a 95% Wilson interval.

    Raises:
        ValueError: ``n < 1`` or ``successes`` outside ``[0, n]``.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"a rate needs n >= 1 trials, got n={n!r}")
    low, high = wilson_interval(float(successes), int(n))
    return Rate(rate=float(successes) / int(n), ci_low=low, ci_high=high, n=int(n),
                successes=float(successes), ties=int(ties))


def bootstrap_interval(statistic: Callable[[np.ndarray], float], n: int, *,
                       n_resamples: int = 1000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(idx)`` over ``n`` items.

    Each resample draws ``n`` indices with replacement (``numpy.random.default_rng(seed)``)
    and calls ``statistic(idx)`` with that int array of shape ``(n,)``; the interval is the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the ``n_resamples`` values.
    Paired statistics index every array with the same ``idx``.

    Raises:
        ValueError: ``n < 1``, ``n_resamples < 1`` or ``level`` outside (0, 1).
    """
    if n < 1 or n_resamples < 1 or not 0.0 < level < 1.0:
        raise ValueError(f"bootstrap needs n >= 1, n_resamples >= 1 and 0 < level < 1, got "
                         f"n={n}, n_resamples={n_resamples}, level={level}")
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, size=n)) for _ in range(n_resamples)])
    low, high = np.quantile(values, [round((1 - level) / 2, 12), round((1 + level) / 2, 12)])
    return float(low), float(high)


@dataclass(frozen=True)
class MeanCI:
    """A mean with its percentile-bootstrap confidence interval.

    Attributes:
        mean: the sample mean.
        ci_low, ci_high: the ``level`` percentile bootstrap interval of the mean
            (``ci_low <= mean <= ci_high``; both equal ``mean`` when ``n_bootstrap == 0``).
        n: number of values (> 0). n_bootstrap: resamples. level: e.g. 0.95.
    """

    mean: float
    ci_low: float
    ci_high: float
    n: int
    n_bootstrap: int
    level: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bootstrap_mean_ci(values: Sequence[float] | np.ndarray, *, n_bootstrap: int = 1000,
                      seed: int = 0, level: float = 0.95) -> MeanCI:
    """Mean of ``values`` with a percentile bootstrap interval (resampling the values with
    replacement, ``numpy.random.default_rng(seed)``). For a paired comparison pass the
    per-item differences.

    Args:
        values: ``(n,)`` finite numbers, ``n >= 1``.
        n_bootstrap: resamples (0: no interval, ``ci_low == ci_high == mean``).
        seed: bootstrap RNG seed. level: interval coverage in (0, 1).

    Raises:
        ValueError: no values, non-finite values, bad ``n_bootstrap`` or ``level``.
    """
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError("bootstrap_mean_ci needs at least one value")
    if not np.all(np.isfinite(arr)):
        raise ValueError("values must be finite")
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int) or n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be an int >= 0, got {n_bootstrap!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    mean = float(arr.mean())
    low = high = mean
    if n_bootstrap:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, arr.size, size=(n_bootstrap, arr.size))
        means = arr[idx].mean(axis=1)
        tail = (1.0 - level) / 2.0
        low, high = (float(v) for v in np.quantile(means, [tail, 1.0 - tail]))
        low, high = min(low, mean), max(high, mean)
    return MeanCI(mean=mean, ci_low=low, ci_high=high, n=int(arr.size),
                  n_bootstrap=n_bootstrap, level=level)


def pct(value: float | None, digits: int = 1) -> str:
    """``0.6234 -> "62.3%"``; ``None -> "n/a"``."""
    return "n/a" if value is None else f"{100 * value:.{digits}f}%"
