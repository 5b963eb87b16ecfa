"""An on-disk cache of judge verdicts (SQLite), usable by any :class:`~rewards.judges.base.Judge`.

A *verdict* is one prompt's candidate log-probabilities: a row of
:meth:`~rewards.judges.base.Judge.next_token_logprobs`. It is stored under the key
``sha256(json([judge identity, prompt segments, candidates]))``:

* the judge identity (:attr:`Judge.cache_identity`: backend, model name, dtype or served
  model and server kind; override it with ``identity=`` when the same name serves other
  weights),
* the rendered prompt as its text segments (the chat template already applied, so a changed
  template or few-shot example is a different key),
* the candidate tokens, in order.

The values are the float64 log-probabilities as JSON (Python floats round-trip exactly), so a
repeated evaluation reads back bit-identical numbers. Generated text (chain-of-thought
rationales) is not cached; the log-probabilities scored after a rationale are.

Storage: one SQLite file in WAL mode with ``synchronous=NORMAL``: readers never block the
writer, two processes can share the file (writers queue on SQLite's lock, waiting up to
``timeout`` seconds), each batch is written in one transaction, and a process killed
mid-write leaves the last committed state (SQLite's journal rolls back the partial one).

:func:`attach_verdict_cache` hooks a cache into a judge instance (any backend)::

    judge = load_judge("qwen2.5-coder-0.5b-instruct", verdict_cache="verdicts.sqlite")
    # or: attach_verdict_cache(judge, VerdictCache("verdicts.sqlite"))
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from rewards.judges.base import JudgeError, Prompt, as_segments

T = TypeVar("T")

if TYPE_CHECKING:
    from rewards.judges.base import Judge

__all__ = ["VerdictCache", "attach_verdict_cache", "verdict_key"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS verdicts (
    key TEXT PRIMARY KEY,
    judge TEXT NOT NULL,
    logprobs TEXT NOT NULL
) WITHOUT ROWID
"""
_CHUNK = 500  # keys per SELECT ... IN (...)


def verdict_key(identity: str, prompt: Prompt, candidates: Sequence[str]) -> str:
    """The cache key (64 hex chars) of ``prompt``'s candidate log-probabilities under the
    judge ``identity``."""
    blob = json.dumps([identity, list(as_segments(prompt)), list(candidates)],
                      ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _retry_locked(call: Callable[[], T], timeout: float) -> T:
    """``call()``, retried for up to ``timeout`` seconds while SQLite says the database is
    locked. Switching a new file to WAL, or creating its table, while another process does the
    same can fail at once without SQLite's busy handler (seen with 6 processes opening one new
    file together: 3 of 60 failed)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


class VerdictCache:
    """Verdicts in a SQLite file, shared by threads and processes.

    Args:
        path: the database file (created with its folder if missing).
        timeout: seconds to wait for another process's write lock before failing.

    Attributes:
        hits, misses: lookups of this object that found / did not find a verdict.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None,
                                     check_same_thread=False)
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            mode = _retry_locked(
                lambda: self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0], timeout)
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"cannot use WAL mode on {self.path} ({mode})")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            _retry_locked(lambda: self._conn.execute(_SCHEMA), timeout)
        except sqlite3.Error:
            self._conn.close()
            raise
        self.hits = 0
        self.misses = 0

    # ----------------------------------------------------------------- storage

    def get_many(self, identity: str, prompts: Sequence[Prompt],
                 candidates: Sequence[str]) -> list[np.ndarray | None]:
        """The cached float64 rows ``(len(candidates),)`` of ``prompts`` (None where absent,
        or stored with another number of candidates)."""
        keys = [verdict_key(identity, p, candidates) for p in prompts]
        found: dict[str, str] = {}
        with self._lock:
            for start in range(0, len(keys), _CHUNK):
                chunk = keys[start:start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                found.update(self._conn.execute(
                    f"SELECT key, logprobs FROM verdicts WHERE key IN ({marks})", chunk))
        rows: list[np.ndarray | None] = []
        for key in keys:
            text = found.get(key)
            row = None if text is None else np.asarray(json.loads(text), dtype=np.float64)
            rows.append(row if row is not None and row.shape == (len(candidates),) else None)
        hits = sum(r is not None for r in rows)
        with self._lock:
            self.hits += hits
            self.misses += len(rows) - hits
        return rows

    def put_many(self, identity: str, prompts: Sequence[Prompt], candidates: Sequence[str],
                 rows: np.ndarray | Sequence[Sequence[float]]) -> None:
        """Store one row per prompt, shape ``(len(prompts), len(candidates))``, in one
        transaction (an existing key is overwritten)."""
        array = np.asarray(rows, dtype=np.float64)
        if array.shape != (len(prompts), len(candidates)):
            raise ValueError(f"rows have shape {array.shape}, expected "
                             f"({len(prompts)}, {len(candidates)})")
        records = [(verdict_key(identity, p, candidates), identity,
                    json.dumps([float(v) for v in row]))
                   for p, row in zip(prompts, array, strict=True)]
        if not records:
            return
        with self._lock, self._transaction():
            self._conn.executemany(
                "INSERT OR REPLACE INTO verdicts (key, judge, logprobs) VALUES (?, ?, ?)",
                records)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0])

    def close(self) -> None:
        """Close the database connection (idempotent)."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> VerdictCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"VerdictCache({str(self.path)!r}, hits={self.hits}, misses={self.misses})"


# --------------------------------------------------------------------------- the judge hook


class _Bypass(threading.local):
    active = False


def attach_verdict_cache(judge: Judge, cache: VerdictCache | str | os.PathLike[str], *,
                         identity: str | None = None) -> Judge:
    """Route ``judge``'s log-probability primitives through ``cache``; returns ``judge``.

    :meth:`~Judge.next_token_logprobs`, :meth:`~Judge.next_token_logprobs_two_step` (a
    prompt is a hit when both of its rows are cached) and
    :meth:`~Judge.next_token_logprobs_shared_prefix` look every prompt up first and send only
    the misses to the backend, in one call, then store them in one transaction. The
    judge's ``stats`` count ``cache_hits`` and ``cache_misses``. Generation is not cached.

    Args:
        judge: any judge instance (its methods are wrapped on the instance).
        cache: a :class:`VerdictCache` or the path of its file.
        identity: the judge's key part (default :attr:`Judge.cache_identity`).

    Raises:
        JudgeError: a cache is attached already.
    """
    if getattr(judge, "verdict_cache", None) is not None:
        raise JudgeError(f"judge {judge.name!r} already has a verdict cache "
                         f"({judge.verdict_cache!r})")
    if not isinstance(cache, VerdictCache):
        cache = VerdictCache(cache)
    ident = identity or judge.cache_identity
    bypass = _Bypass()
    stats = judge.stats
    plain_one = judge.next_token_logprobs
    plain_two = judge.next_token_logprobs_two_step
    plain_shared = judge.next_token_logprobs_shared_prefix

    def cached(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if bypass.active:  # a backend's method calling another wrapped one
                return getattr(type(judge), fn.__name__)(judge, *args, **kwargs)
            bypass.active = True
            try:
                return fn(*args, **kwargs)
            finally:
                bypass.active = False

        return wrapper

    def lookup(prompts: Sequence[Prompt], candidates: Sequence[str]) -> list[Any]:
        rows = cache.get_many(ident, prompts, candidates)
        hits = sum(r is not None for r in rows)
        stats.add(cache_hits=hits, cache_misses=len(rows) - hits)
        return rows

    @cached
    def next_token_logprobs(prompts: Sequence[Prompt], candidates: Sequence[str]) -> np.ndarray:
        prompts = list(prompts)
        rows = lookup(prompts, candidates)
        todo = [i for i, r in enumerate(rows) if r is None]
        if todo:
            fresh = plain_one([prompts[i] for i in todo], candidates)
            cache.put_many(ident, [prompts[i] for i in todo], candidates, fresh)
            for k, i in enumerate(todo):
                rows[i] = fresh[k]
        return np.array(rows, dtype=np.float64).reshape(len(prompts), len(candidates))

    @cached
    def next_token_logprobs_shared_prefix(prefix: str, suffixes: Sequence[str],
                                          candidates: Sequence[str]) -> np.ndarray:
        suffixes = list(suffixes)
        prompts = [(prefix, s) for s in suffixes]
        rows = lookup(prompts, candidates)
        todo = [i for i, r in enumerate(rows) if r is None]
        if todo:
            fresh = plain_shared(prefix, [suffixes[i] for i in todo], candidates)
            cache.put_many(ident, [prompts[i] for i in todo], candidates, fresh)
            for k, i in enumerate(todo):
                rows[i] = fresh[k]
        return np.array(rows, dtype=np.float64).reshape(len(prompts), len(candidates))

    @cached
    def next_token_logprobs_two_step(prompts: Sequence[Prompt], candidates: Sequence[str],
                                     then: str, then_candidates: Sequence[str]
                                     ) -> tuple[np.ndarray, np.ndarray]:
        prompts = list(prompts)
        extended = [(*as_segments(p), then) for p in prompts]
        firsts = cache.get_many(ident, prompts, candidates)
        seconds = cache.get_many(ident, extended, then_candidates)
        todo = [i for i in range(len(prompts)) if firsts[i] is None or seconds[i] is None]
        stats.add(cache_hits=len(prompts) - len(todo), cache_misses=len(todo))
        if todo:
            first, second = plain_two([prompts[i] for i in todo], candidates, then,
                                      then_candidates)
            cache.put_many(ident, [prompts[i] for i in todo], candidates, first)
            cache.put_many(ident, [extended[i] for i in todo], then_candidates, second)
            for k, i in enumerate(todo):
                firsts[i], seconds[i] = first[k], second[k]
        n = len(prompts)
        return (np.array(firsts, dtype=np.float64).reshape(n, len(candidates)),
                np.array(seconds, dtype=np.float64).reshape(n, len(then_candidates)))

    judge.next_token_logprobs = next_token_logprobs  # type: ignore[method-assign]
    judge.next_token_logprobs_shared_prefix = (  # type: ignore[method-assign]
        next_token_logprobs_shared_prefix)
    judge.next_token_logprobs_two_step = next_token_logprobs_two_step  # type: ignore[method-assign]
    judge.verdict_cache = cache  # type: ignore[attr-defined]
    return judge
