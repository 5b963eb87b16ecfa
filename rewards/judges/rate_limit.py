"""A token bucket for asyncio: requests per minute and prompt tokens per minute.

The bucket holds up to ``capacity`` units and refills at ``per_minute / 60`` units a second.
:meth:`AsyncTokenBucket.acquire` takes ``amount`` units, sleeping until enough have refilled.
A request larger than the whole bucket (a prompt longer than a second's token budget) waits
for a full bucket and then drives it negative, so the requests after it wait for the debt:
the long-run rate stays ``per_minute`` whatever the request sizes. The same idea as verl's
``AsyncTokenBucket`` (verl#4107), written for one event loop.
"""

from __future__ import annotations

import asyncio
import math
import time

__all__ = ["AsyncTokenBucket"]


class AsyncTokenBucket:
    """Rate limit of ``per_minute`` units a minute, with bursts of up to ``capacity`` units.

    Args:
        per_minute: refill rate, units per minute (> 0).
        capacity: bucket size in units (default: one second's worth, at least 1); the bucket
            starts full.

    Use from one event loop only (an :class:`asyncio.Lock` orders the waiters: first come,
    first served).
    """

    def __init__(self, per_minute: float, capacity: float | None = None) -> None:
        if not (isinstance(per_minute, (int, float)) and math.isfinite(per_minute)
                and per_minute > 0):
            raise ValueError(f"per_minute must be a finite number > 0, got {per_minute!r}")
        self.rate = float(per_minute) / 60.0
        self.capacity = float(capacity) if capacity is not None else max(1.0, self.rate)
        if not self.capacity > 0:
            raise ValueError(f"capacity must be > 0, got {capacity!r}")
        self._level = self.capacity
        self._stamp = time.monotonic()
        self._lock: asyncio.Lock | None = None

    def _refill(self) -> None:
        now = time.monotonic()
        self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self, amount: float = 1.0) -> float:
        """Take ``amount`` units (>= 0), waiting for them; returns the seconds waited."""
        if amount < 0:
            raise ValueError(f"amount must be >= 0, got {amount}")
        if self._lock is None:
            self._lock = asyncio.Lock()
        started = time.monotonic()
        async with self._lock:  # one waiter at a time: FIFO
            need = min(float(amount), self.capacity)
            while True:
                self._refill()
                if self._level >= need:
                    self._level -= float(amount)
                    return time.monotonic() - started
                await asyncio.sleep((need - self._level) / self.rate)
