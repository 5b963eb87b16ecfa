"""Counters of what a judge spent: HTTP calls, prompt tokens, cache hits, retries, waits.

Every :class:`~rewards.judges.base.Judge` has a :class:`JudgeStats` (``judge.stats``); the
OpenAI-compatible client fills all of it, a verdict cache (:mod:`rewards.judges.verdict_cache`)
fills ``cache_hits``/``cache_misses`` on any backend. Read a snapshot before and after some
work and subtract to get what that work cost::

    before = judge.stats.snapshot()
    direct_scores(judge, "tldr", posts, summaries)
    spent = judge.stats.snapshot() - before      # a JudgeCounters
    spent.calls, spent.cache_hits

Rewards built on a judge put that difference in their ``RewardOutput.details`` with
:func:`counter_details`: one key per counter, ``judge_<counter>``, shape ``(n,)``, each row
holding an equal share (``total / n``) of the batch's total, so summing a key over any set of
episodes gives what scoring them cost (a training step's total is the sum over its episodes).
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, fields

import numpy as np

__all__ = ["COUNTER_NAMES", "DETAIL_PREFIX", "JudgeCounters", "JudgeStats", "counter_details"]

#: Prefix of the per-episode detail keys written by :func:`counter_details`.
DETAIL_PREFIX = "judge_"


@dataclass(frozen=True)
class JudgeCounters:
    """A snapshot of a judge's counters (totals since the judge was made).

    Attributes:
        calls: HTTP requests sent (every attempt, retries included); in-process backends
            leave it 0.
        prompt_tokens: prompt tokens of those requests (counted with the judge's tokenizer).
        cache_hits: verdicts (one prompt's candidate log-probabilities) read from the cache.
        cache_misses: verdicts looked up in the cache and not found (then computed).
        retries: requests re-sent after a 429, a 5xx, a timeout or a connection error.
        failures: requests given up on (retries exhausted, deadline passed, 4xx).
        limit_wait_s: seconds requests waited on the requests/min and tokens/min limits
            (summed over requests, so it can exceed wall time).
        backoff_wait_s: seconds requests slept between retries (summed over requests).
    """

    calls: int = 0
    prompt_tokens: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    retries: int = 0
    failures: int = 0
    limit_wait_s: float = 0.0
    backoff_wait_s: float = 0.0

    def __sub__(self, other: JudgeCounters) -> JudgeCounters:
        return JudgeCounters(**{f.name: getattr(self, f.name) - getattr(other, f.name)
                                for f in fields(self)})

    def as_dict(self) -> dict[str, float]:
        """``{counter name: value}`` in field order."""
        return dataclasses.asdict(self)


#: The counter names, in order (``JudgeCounters`` fields).
COUNTER_NAMES: tuple[str, ...] = tuple(f.name for f in fields(JudgeCounters))


class JudgeStats:
    """Thread-safe running totals (:class:`JudgeCounters`) of one judge."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, float] = dict.fromkeys(COUNTER_NAMES, 0)

    def add(self, **amounts: float) -> None:
        """Add to counters by name, e.g. ``stats.add(calls=1, prompt_tokens=312)``.

        Raises:
            KeyError: an unknown counter name.
        """
        with self._lock:
            for name, amount in amounts.items():
                if name not in self._values:
                    raise KeyError(f"unknown judge counter {name!r}; known: {COUNTER_NAMES}")
                self._values[name] += amount

    def snapshot(self) -> JudgeCounters:
        """The current totals."""
        with self._lock:
            values = dict(self._values)
        return JudgeCounters(**{name: (float(v) if name.endswith("_s") else int(v))
                                for name, v in values.items()})

    def __repr__(self) -> str:
        return f"JudgeStats({self.snapshot()})"


def counter_details(spent: JudgeCounters, n: int) -> dict[str, np.ndarray]:
    """Per-episode ``RewardOutput.details`` of what scoring ``n`` episodes cost.

    Returns:
        ``{"judge_<counter>": float64 array (n,)}`` for every counter, each row
        ``total / n`` (so a sum over episodes gives totals); empty arrays when ``n == 0``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return {DETAIL_PREFIX + name: np.full(n, float(value) / max(n, 1), dtype=np.float64)
            for name, value in spent.as_dict().items()}
