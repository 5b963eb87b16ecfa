"""A :class:`~rewards.judges.base.Judge` that asks an OpenAI-compatible HTTP server.

Any server with the legacy ``POST /v1/completions`` endpoint and ``logprobs`` works: ``vllm
serve``, llama-cpp-python's ``python -m llama_cpp.server`` (started with ``--logits_all
true``), and others. The chat endpoint is not used: it cannot prefill the assistant turn, and
every RLAIF prompt ends inside it (``"Preferred Summary="``, ``"SCORE: "``). So the prompt is
rendered HERE with a local copy of the judge's tokenizer (its chat template), and the server
only continues the text.

How each primitive maps onto requests (one prompt per request):

* :meth:`OpenAIJudge.next_token_logprobs`: ``max_tokens=1, temperature=0,
  logprobs=top_logprobs``; the candidates are read from ``choices[0].logprobs.top_logprobs[0]``
  (a ``{token text: logprob}`` map). A candidate that is not in the map raises
  :class:`~rewards.judges.base.JudgeError` naming the candidate, the prompt index and the
  server - never a silent 0.5 or -inf. llama.cpp returns any top-N (uncapped); vLLM caps N at
  its ``--max-logprobs`` (default 20), so with ``server="vllm"`` the request also carries
  vLLM's ``logprob_token_ids`` extra (the candidates' ids: "Specific vocab token IDs to return
  logprobs for at each generated position, in addition to the sampled token [...] takes
  precedence over the natural top-k selected by ``logprobs``. Requires ``logprobs`` to be
  set." - ``CompletionRequest`` in ``vllm/entrypoints/openai/completion/protocol.py``, exposed
  on the OpenAI routes by vllm-project/vllm#43463) and ``return_tokens_as_token_ids`` (keys
  become ``"token_id:<id>"``, so the lookup is by id, not by decoded text). With
  ``server="llamacpp"`` the request carries a GBNF ``grammar`` allowing only the candidates:
  llama-cpp-python returns NO logprobs when the greedy token is end-of-sequence (it stops
  before recording the token), which happens e.g. after ``"SCORE: 1"``; the grammar masks
  sampling only (its logprobs are computed from the raw logits kept by ``logits_all``).
* :meth:`OpenAIJudge.next_token_logprobs_two_step`: per prompt, the prompt and then
  ``prompt + then`` are sent back to back by the same worker, so a single-slot llama.cpp
  server reuses its KV cache for the second request (vLLM's prefix cache does the same).
* :meth:`OpenAIJudge.generate`: greedy (``temperature=0``) continuation, ``max_tokens``.

Prompt segments (``(prefix, suffix)``) are joined into one string; the server tokenizes it.
With ``send_token_ids=True`` the prompt is sent as token ids instead, tokenized locally
segment by segment exactly like :class:`~rewards.judges.transformers_judge.TransformersJudge`
(vLLM accepts ``prompt: list[int]``; llama-cpp-python's server does not).

Requests run on an asyncio event loop in a background (daemon) thread with one
``httpx.AsyncClient``: at most ``max_concurrency`` prompts in flight, and optional limits of
``requests_per_minute`` and ``tokens_per_minute`` (prompt tokens, counted with the local
tokenizer), all shared by every replica in ``base_urls`` (spread round-robin). A request is
retried with exponential backoff on HTTP 429/5xx, connection errors and timeouts, at most
``max_retries`` times and within its ``deadline`` (seconds from its first attempt); each
retry logs a line on the module's logger (printed on stderr when logging is not configured):
``retrying in 1.0s: HTTP 429 from http://...:8000/v1/completions, attempt 2/4``. After that a
:class:`JudgeError` gives the status, an excerpt of the body and the URL. Other HTTP errors
(400, 404, ...) fail at once. Nothing is ever filled in with a default probability.

Ctrl-C (KeyboardInterrupt in the calling thread) cancels the requests in flight at once: the
loop thread is a daemon, so the process can exit without waiting for a stalled server.

``judge.stats`` counts calls, prompt tokens, retries, failures and the seconds spent waiting on
the rate limits and in backoff (:mod:`rewards.judges.stats`); ``verdict_cache=PATH`` reads
verdicts judged before from a SQLite file and sends only the others
(:mod:`rewards.judges.verdict_cache`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from rewards.judges.base import JudgeError, Prompt, TokenizerJudge, as_segments
from rewards.judges.rate_limit import AsyncTokenBucket

__all__ = ["DEFAULT_CONCURRENCY", "SERVER_KINDS", "OpenAIJudge", "gbnf_alternatives"]

#: Prompts in flight at once when ``max_concurrency`` is not given.
DEFAULT_CONCURRENCY = 8
#: ``server`` values: which server-specific request fields are sent.
SERVER_KINDS: tuple[str, ...] = ("openai", "vllm", "llamacpp")

#: Extra request fields per server kind (greedy decoding without penalties). llama-cpp-python
#: applies ``repeat_penalty=1.1`` and ``min_p=0.05`` unless told otherwise; vLLM applies the
#: model's ``generation_config`` (e.g. Qwen2.5's ``repetition_penalty``) unless overridden,
#: and ``add_special_tokens=False`` matches the local tokenization (no BOS added).
_SERVER_FIELDS: dict[str, dict[str, Any]] = {
    "openai": {},
    "vllm": {"repetition_penalty": 1.0, "min_p": 0.0, "add_special_tokens": False},
    "llamacpp": {"repeat_penalty": 1.0, "min_p": 0.0},
}
_GBNF_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_EXCERPT_CHARS = 300
#: Largest positive "log-probability" tolerated as rounding noise (clipped to 0).
_LOGPROB_SLACK = 1e-4
_T = TypeVar("_T")
_R = TypeVar("_R")

logger = logging.getLogger(__name__)


def _excerpt(text: str, limit: int = _EXCERPT_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _endpoint_root(url: str) -> str:
    """``http://host:port`` from ``http://host:port``, ``.../`` or ``.../v1``."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"base URL must start with http:// or https://, got {url!r}")
    root = url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


def gbnf_alternatives(texts: Sequence[str]) -> str:
    """A GBNF grammar (llama.cpp) whose output is exactly one of ``texts``."""
    literals = []
    for text in dict.fromkeys(texts):
        chars = []
        for ch in text:
            if ch in '"\\':
                chars.append("\\" + ch)
            elif ch in _GBNF_ESCAPES:
                chars.append(_GBNF_ESCAPES[ch])
            elif ord(ch) < 0x20 or ord(ch) == 0x7F:
                chars.append(f"\\x{ord(ch):02x}")
            else:
                chars.append(ch)
        literals.append('"' + "".join(chars) + '"')
    return "root ::= " + " | ".join(literals)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _non_negative_number(name: str, value: Any, allow_zero: bool = True) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


def _optional_rate(name: str, value: Any) -> float | None:
    if value is None:
        return None
    return _non_negative_number(name, value, allow_zero=False)


class _LoopThread:
    """An asyncio event loop running forever in a daemon thread.

    :meth:`run` blocks the caller until a coroutine finishes; an exception in the caller
    (KeyboardInterrupt) cancels the coroutine and is re-raised at once, without waiting for
    it to unwind. The thread is a daemon, so it never holds the process at exit.
    """

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, _R]) -> _R:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def stop(self, cleanup: Callable[[], Awaitable[None]] | None = None,
             timeout: float = 5.0) -> None:
        """Run ``cleanup`` (bounded by ``timeout``), cancel what is left, stop the loop."""
        if not self._thread.is_alive():
            return

        async def finish() -> None:
            if cleanup is not None:
                try:
                    await asyncio.wait_for(cleanup(), timeout)
                except Exception:  # closing must not fail the caller
                    logger.debug("judge client cleanup failed", exc_info=True)
            current = asyncio.current_task()
            for task in asyncio.all_tasks():
                if task is not current:
                    task.cancel()

        try:
            asyncio.run_coroutine_threadsafe(finish(), self.loop).result(timeout + 1.0)
        except Exception:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.loop.close()


class OpenAIJudge(TokenizerJudge):
    """Judge served by one or more OpenAI-compatible ``/v1/completions`` endpoints.

    Args:
        tokenizer: the judge model's tokenizer: a model spec for
            :func:`rlaif_gym.models.load_tokenizer` (e.g. ``"qwen2.5-coder-0.5b-instruct"``) or
            a tokenizer object. Used for the chat template, candidate checks, prompt token
            counts and (optionally) token ids; it must be the tokenizer of the served model.
        base_urls: one URL or several (replicas), e.g. ``"http://127.0.0.1:8000"`` (a trailing
            ``/v1`` is accepted). Requests are spread round-robin.
        model: the ``model`` field of each request (vLLM's served model name); ``None`` omits
            it (the server's default model).
        server: ``"openai"`` (standard fields only), ``"vllm"`` (candidate ids via
            ``logprob_token_ids``, no added BOS, no generation-config penalties) or
            ``"llamacpp"`` (a grammar restricting the sampled token to the candidates,
            ``repeat_penalty=1``, ``min_p=0`` for greedy generation).
        top_logprobs: N of the top-N log-probabilities requested (``logprobs`` field).
            llama.cpp accepts any N (the candidates must be among them); vLLM rejects
            N > its ``--max-logprobs`` (default 20).
        max_concurrency: prompts in flight at once, over all replicas (a two-step prompt
            holds its slot for both of its requests); None: :data:`DEFAULT_CONCURRENCY`.
        requests_per_minute: limit on requests sent per minute over all replicas, retries
            included (None: no limit); bursts of up to one second's worth.
        tokens_per_minute: limit on prompt tokens sent per minute over all replicas (None:
            no limit); a prompt longer than one second's budget waits for a full second's
            budget and then borrows from the next ones.
        max_retries: retries per request after the first attempt (429, 5xx, connection
            errors, timeouts); 0 disables retrying.
        timeout: seconds one attempt may take (connect, send, wait, read).
        deadline: seconds a request may take from its first attempt, retries and backoff
            included (None: only ``timeout`` and ``max_retries`` bound it). The defaults
            give up on a stalled server after at most 110 s.
        backoff: first retry delay in seconds; doubles per retry, capped at ``max_backoff``.
            A ``Retry-After`` header (seconds) is honoured up to ``max_backoff``.
        api_key: sent as ``Authorization: Bearer <api_key>`` when given.
        send_token_ids: send prompts as local token ids instead of text (vLLM).
        name: recorded in labels (default: ``model``, else the tokenizer spec).
        verdict_cache: a path or :class:`~rewards.judges.verdict_cache.VerdictCache`: verdicts
            found there are not requested again (None: no cache).
    """

    def __init__(
        self,
        tokenizer: Any,
        base_urls: str | Sequence[str],
        *,
        model: str | None = None,
        server: str = "openai",
        top_logprobs: int = 20,
        max_concurrency: int | None = DEFAULT_CONCURRENCY,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        max_retries: int = 3,
        timeout: float = 60.0,
        deadline: float | None = 110.0,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        api_key: str | None = None,
        send_token_ids: bool = False,
        name: str | None = None,
        verdict_cache: Any = None,
    ) -> None:
        try:
            import httpx  # the "serve" extra; imported here so the module loads without it
        except ImportError as exc:
            raise ImportError("OpenAIJudge needs httpx: pip install 'rlaif-gym[serve]'") \
                from exc
        self._httpx = httpx
        if server not in SERVER_KINDS:
            raise ValueError(f"server must be one of {', '.join(SERVER_KINDS)}, got {server!r}")
        if send_token_ids and server == "llamacpp":
            raise ValueError("llama-cpp-python's server takes text prompts only: "
                             "send_token_ids=True needs server='vllm' or 'openai'")
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        if not urls:
            raise ValueError("base_urls is empty: give at least one server URL")
        self.base_urls: tuple[str, ...] = tuple(_endpoint_root(u) for u in urls)
        self.server = server
        self.model = model
        self.top_logprobs = _positive_int("top_logprobs", top_logprobs)
        self.max_concurrency = _positive_int(
            "max_concurrency", DEFAULT_CONCURRENCY if max_concurrency is None else max_concurrency)
        self.requests_per_minute = _optional_rate("requests_per_minute", requests_per_minute)
        self.tokens_per_minute = _optional_rate("tokens_per_minute", tokens_per_minute)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be an int >= 0, got {max_retries!r}")
        self.max_retries = max_retries
        self.timeout = _non_negative_number("timeout", timeout, allow_zero=False)
        self.deadline = None if deadline is None else _non_negative_number(
            "deadline", deadline, allow_zero=False)
        self.backoff = _non_negative_number("backoff", backoff)
        self.max_backoff = _non_negative_number("max_backoff", max_backoff)
        self.send_token_ids = bool(send_token_ids)
        self._api_key = api_key
        self.tokenizer, spec = self._load_tokenizer(tokenizer)
        self.name = name or model or spec or "openai-compatible"
        self._counter = itertools.count()
        self._lock = threading.Lock()
        self._runner: _LoopThread | None = None
        self._client: Any = None
        self._slots: asyncio.Semaphore | None = None
        self._request_bucket: AsyncTokenBucket | None = None
        self._token_bucket: AsyncTokenBucket | None = None
        if verdict_cache is not None:
            from rewards.judges.verdict_cache import attach_verdict_cache

            attach_verdict_cache(self, verdict_cache)

    @staticmethod
    def _load_tokenizer(tokenizer: Any) -> tuple[Any, str | None]:
        if isinstance(tokenizer, (str, Path)):
            from rlaif_gym.models import load_tokenizer

            return load_tokenizer(tokenizer), str(tokenizer)
        if tokenizer is None or not callable(tokenizer):
            raise TypeError("tokenizer must be a model spec (str/path) or a tokenizer object, "
                            f"got {type(tokenizer).__name__}")
        return tokenizer, getattr(tokenizer, "name_or_path", None) or None

    @property
    def cache_identity(self) -> str:
        """Backend, name, served model, server kind and prompt form (text or token ids); the
        URLs are left out, so replicas and restarted servers share verdicts."""
        return (f"OpenAIJudge:{self.name}:model={self.model}:server={self.server}:"
                f"{'ids' if self.send_token_ids else 'text'}")

    # ----------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Cancel requests still running, close the HTTP client and stop the loop thread
        (idempotent; the judge can be used again afterwards)."""
        with self._lock:
            runner, self._runner = self._runner, None
            client, self._client = self._client, None
        if runner is not None:
            runner.stop(client.aclose if client is not None else None)
        self._slots = self._request_bucket = self._token_bucket = None

    def __enter__(self) -> OpenAIJudge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"OpenAIJudge(name={self.name!r}, server={self.server!r}, "
                f"base_urls={list(self.base_urls)!r})")

    # ----------------------------------------------------------------- HTTP

    def _run(self, coro: Coroutine[Any, Any, _R]) -> _R:
        """Run ``coro`` on the judge's loop thread (started on first use)."""
        with self._lock:
            if self._runner is None:
                self._runner = _LoopThread(f"openai-judge-{os.getpid()}")
            runner = self._runner
        return runner.run(coro)

    def _ensure_client(self) -> None:
        """The client, the concurrency slots and the buckets (in the loop thread)."""
        if self._client is None:
            headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
            limits = self._httpx.Limits(max_connections=self.max_concurrency * 2,
                                        max_keepalive_connections=self.max_concurrency * 2)
            self._client = self._httpx.AsyncClient(headers=headers, limits=limits,
                                                   timeout=self.timeout)
            self._slots = asyncio.Semaphore(self.max_concurrency)
            if self.requests_per_minute is not None:
                self._request_bucket = AsyncTokenBucket(self.requests_per_minute)
            if self.tokens_per_minute is not None:
                self._token_bucket = AsyncTokenBucket(self.tokens_per_minute)

    def _next_root(self) -> str:
        with self._lock:
            k = next(self._counter)
        return self.base_urls[k % len(self.base_urls)]

    def _retry_delay(self, attempt: int, retry_after: str | None) -> float:
        delay = min(self.max_backoff, self.backoff * (2.0 ** attempt))
        if retry_after is not None:
            try:
                delay = max(delay, min(self.max_backoff, float(retry_after)))
            except ValueError:  # an HTTP date: keep the exponential delay
                pass
        return delay

    async def _wait_for_limits(self, prompt_tokens: int) -> None:
        waited = 0.0
        if self._request_bucket is not None:
            waited += await self._request_bucket.acquire(1)
        if self._token_bucket is not None:
            waited += await self._token_bucket.acquire(prompt_tokens)
        if waited:
            self.stats.add(limit_wait_s=waited)

    def _prompt_tokens(self, payload: Mapping[str, Any]) -> int:
        prompt = payload.get("prompt")
        if isinstance(prompt, list):
            return len(prompt)
        return len(self._token_ids(prompt)) if isinstance(prompt, str) else 0

    async def _post(self, path: str, payload: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
        """POST ``payload`` to ``<next base URL><path>``; returns ``(parsed JSON, URL)``.

        Retries 429/5xx, connection errors and timeouts ``max_retries`` times (on the next
        replica each time) with exponential backoff, within ``deadline``.

        Raises:
            JudgeError: a non-retryable HTTP status, a non-JSON body, retries exhausted or the
                deadline passed (the message has the status or error, a body excerpt and the
                URL).
        """
        httpx = self._httpx
        self._ensure_client()
        tokens = self._prompt_tokens(payload)
        attempts = self.max_retries + 1
        last_error, last_url, short, started, sent = "", "", "", None, 0
        out_of_time = False
        for attempt in range(attempts):
            await self._wait_for_limits(tokens)
            now = time.monotonic()
            started = now if started is None else started
            budget = self.timeout
            if self.deadline is not None:
                budget = min(budget, self.deadline - (now - started))
                if budget <= 0:
                    out_of_time = True
                    break
            url = self._next_root() + path
            sent += 1
            self.stats.add(calls=1, prompt_tokens=tokens, retries=1 if attempt else 0)
            retry_after = None
            try:
                response = await asyncio.wait_for(
                    self._client.post(url, json=payload, timeout=budget), budget)
            except (asyncio.TimeoutError, httpx.TimeoutException):
                last_error, last_url = f"Timeout: no answer within {budget:.1f} s", url
                short = "timeout"
            except httpx.TransportError as exc:
                last_error = f"ConnectionError ({type(exc).__name__}: {_excerpt(str(exc))})"
                last_url, short = url, f"connection error ({type(exc).__name__})"
            else:
                status = response.status_code
                if status == 200:
                    try:
                        data = response.json()
                    except ValueError:
                        self.stats.add(failures=1)
                        raise JudgeError(f"{url} answered HTTP 200 with a body that is not JSON: "
                                         f"{_excerpt(response.text)!r}") from None
                    if not isinstance(data, dict):
                        self.stats.add(failures=1)
                        raise JudgeError(f"{url} answered a JSON {type(data).__name__}, "
                                         f"expected an object: {_excerpt(response.text)!r}")
                    return data, url
                body = _excerpt(response.text)
                if status != 429 and status < 500:
                    self.stats.add(failures=1)
                    raise JudgeError(f"{url} answered HTTP {status} (not retried): {body!r}")
                last_error, last_url, short = f"HTTP {status}: {body!r}", url, str(status)
                retry_after = response.headers.get("Retry-After")
            if attempt + 1 < attempts:
                delay = self._retry_delay(attempt, retry_after)
                if self.deadline is not None and \
                        time.monotonic() + delay - started >= self.deadline:
                    out_of_time = True
                    break
                logger.warning("retrying in %.1fs: %s from %s, attempt %d/%d",
                               delay, short, last_url, attempt + 2, attempts)
                self.stats.add(backoff_wait_s=delay)
                await asyncio.sleep(delay)
        self.stats.add(failures=1)
        why = (f"its deadline of {self.deadline:g} s passed" if out_of_time
               else f"{self.max_retries} retries")
        raise JudgeError(f"request to {last_url} failed after {sent} attempt(s) ({why}); "
                         f"last error: {last_error}")

    def _map(self, fn: Callable[[_T], Awaitable[_R]], items: Sequence[_T]) -> list[_R]:
        """``[await fn(x) for x in items]`` concurrently, at most ``max_concurrency`` items at
        once, results in order. On the first failure the other items are cancelled and the
        failure of the earliest item that failed is raised."""
        if not items:
            return []

        async def one(item: _T) -> _R:
            self._ensure_client()
            assert self._slots is not None
            async with self._slots:
                return await fn(item)

        async def main() -> list[_R]:
            tasks = [asyncio.ensure_future(one(x)) for x in items]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            finally:
                pending = [t for t in tasks if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    await asyncio.gather(*pending, return_exceptions=True)
            for task in tasks:
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            return [t.result() for t in tasks]

        return self._run(main())

    # ----------------------------------------------------------------- requests

    def _prompt_field(self, prompt: Prompt) -> str | list[int]:
        if self.send_token_ids:
            return self.encode(prompt)
        return "".join(as_segments(prompt))

    def _payload(self, prompt: Prompt, max_tokens: int,
                 candidates: Sequence[str] | None = None,
                 logprob_ids: Sequence[int] | None = None) -> dict[str, Any]:
        """Request body. With ``candidates``: one greedy token with top-N logprobs (vLLM:
        plus the candidates' ids; llama.cpp: the sampled token is constrained to the
        candidates by a grammar, so the server cannot stop at end-of-sequence before the
        first token - llama-cpp-python then returns no logprobs at all. The grammar only
        masks sampling: logprobs come from the raw logits.)"""
        body: dict[str, Any] = {
            "prompt": self._prompt_field(prompt),
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "top_p": 1.0,
            "n": 1,
            "stream": False,
            "presence_penalty": 0.0,
            "frequency_penalty": 0.0,
            **_SERVER_FIELDS[self.server],
        }
        if self.model is not None:
            body["model"] = self.model
        if candidates is not None:
            body["logprobs"] = self.top_logprobs
            if self.server == "vllm" and logprob_ids is not None:
                body["logprob_token_ids"] = list(logprob_ids)
                body["return_tokens_as_token_ids"] = True
            elif self.server == "llamacpp":
                body["grammar"] = gbnf_alternatives(candidates)
        return body

    def _candidate_keys(self, candidates: Sequence[str], ids: Sequence[int]) -> list[list[str]]:
        """Keys under which each candidate may appear in ``top_logprobs``."""
        if self.server == "vllm":
            return [[f"token_id:{i}"] for i in ids]
        keys = []
        for cand, i in zip(candidates, ids, strict=True):
            decoded = self.tokenizer.decode([i])
            keys.append([cand] if decoded == cand else [cand, decoded])
        return keys

    def _read_candidates(self, data: Mapping[str, Any], url: str, index: int,
                         candidates: Sequence[str], keys: list[list[str]]) -> list[float]:
        """The candidates' log-probabilities from ``choices[0].logprobs.top_logprobs[0]``."""
        try:
            top = data["choices"][0]["logprobs"]["top_logprobs"][0]
        except (KeyError, IndexError, TypeError):
            raise JudgeError(f"{url} returned no choices[0].logprobs.top_logprobs[0] for prompt "
                             f"{index}{self._no_logprobs_hint()}; response: "
                             f"{_excerpt(str(data))!r}") from None
        if not isinstance(top, Mapping):
            raise JudgeError(f"{url}: top_logprobs[0] for prompt {index} is "
                             f"{type(top).__name__}, expected an object")
        row = []
        for cand, cand_keys in zip(candidates, keys, strict=True):
            value = next((top[k] for k in cand_keys if k in top), None)
            if value is None:
                raise JudgeError(self._missing_message(cand, cand_keys, index, url, len(top)))
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or math.isnan(value) or value > _LOGPROB_SLACK:
                raise JudgeError(f"{url}: log-probability {value!r} of candidate {cand!r} for "
                                 f"prompt {index} is not a number <= 0")
            row.append(min(float(value), 0.0))
        return row

    def _no_logprobs_hint(self) -> str:
        if self.server == "llamacpp":
            return " (llama_cpp.server needs --logits_all true)"
        return (" (llama-cpp-python returns no logprobs when the greedy token is "
                "end-of-sequence: use server='llamacpp', which constrains it)")

    def _missing_message(self, cand: str, keys: list[str], index: int, url: str,
                         returned: int) -> str:
        if self.server == "vllm":
            advice = ("the server ignored logprob_token_ids (vLLM older than the "
                      "OpenAI-route logprob_token_ids support?)")
        else:
            advice = (f"raise top_logprobs (now {self.top_logprobs}; vLLM caps it at "
                      "--max-logprobs) or use server='vllm' to request the candidates' ids")
        return (f"candidate {cand!r} (key {' or '.join(map(repr, keys))}) is not among the "
                f"{returned} log-probabilities returned by {url} for prompt {index}: {advice}")

    async def _candidate_row(self, prompt: Prompt, index: int, candidates: Sequence[str],
                             ids: Sequence[int], keys: list[list[str]]) -> list[float]:
        data, url = await self._post("/v1/completions", self._payload(prompt, 1, candidates, ids))
        return self._read_candidates(data, url, index, candidates, keys)

    # ----------------------------------------------------------------- primitives

    def next_token_logprobs(
        self, prompts: Sequence[Prompt], candidates: Sequence[str]
    ) -> np.ndarray:
        ids = self.candidate_ids(candidates)
        keys = self._candidate_keys(candidates, ids)
        for p in prompts:  # fail on a bad prompt before any request
            as_segments(p)
        rows = self._map(lambda item: self._candidate_row(item[1], item[0], candidates, ids, keys),
                         list(enumerate(prompts)))
        return np.array(rows, dtype=np.float64).reshape(len(prompts), len(ids))

    def next_token_logprobs_two_step(
        self,
        prompts: Sequence[Prompt],
        candidates: Sequence[str],
        then: str,
        then_candidates: Sequence[str],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Two requests per prompt (``prompt``, then ``prompt + then`` as its own segment),
        sent back to back in one concurrency slot so the server can reuse the prompt's KV
        cache."""
        ids = self.candidate_ids(candidates)
        self.candidate_ids([then])
        then_ids = self.candidate_ids(then_candidates)
        keys = self._candidate_keys(candidates, ids)
        then_keys = self._candidate_keys(then_candidates, then_ids)
        for p in prompts:
            as_segments(p)

        async def both(item: tuple[int, Prompt]) -> tuple[list[float], list[float]]:
            index, prompt = item
            first = await self._candidate_row(prompt, index, candidates, ids, keys)
            second = await self._candidate_row((*as_segments(prompt), then), index, then_candidates,
                                         then_ids, then_keys)
            return first, second

        rows = self._map(both, list(enumerate(prompts)))
        first = np.array([r[0] for r in rows], dtype=np.float64).reshape(len(prompts), len(ids))
        second = np.array([r[1] for r in rows], dtype=np.float64).reshape(
            len(prompts), len(then_ids))
        return first, second

    def generate(self, prompts: Sequence[Prompt], max_new_tokens: int) -> list[str]:
        """Greedy continuation (``temperature=0``) of each prompt, at most ``max_new_tokens``
        tokens; the server stops at the model's end-of-turn token."""
        _positive_int("max_new_tokens", max_new_tokens)
        for p in prompts:
            as_segments(p)

        async def one(item: tuple[int, Prompt]) -> str:
            index, prompt = item
            data, url = await self._post("/v1/completions", self._payload(prompt, max_new_tokens))
            try:
                text = data["choices"][0]["text"]
            except (KeyError, IndexError, TypeError):
                raise JudgeError(f"{url} returned no choices[0].text for prompt {index}: "
                                 f"{_excerpt(str(data))!r}") from None
            if not isinstance(text, str):
                raise JudgeError(f"{url}: choices[0].text for prompt {index} is "
                                 f"{type(text).__name__}, expected a string")
            return text

        return self._map(one, list(enumerate(prompts)))

    def models(self, timeout: float | None = None) -> list[str]:
        """Model ids served by the first base URL (``GET /v1/models``).

        Raises:
            JudgeError: the server cannot be reached or answers an error.
        """
        url = self.base_urls[0] + "/v1/models"
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        try:
            response = self._httpx.get(url, headers=headers, timeout=timeout or self.timeout)
        except self._httpx.HTTPError as exc:
            raise JudgeError(f"cannot reach {url}: {exc}") from exc
        if response.status_code != 200:
            raise JudgeError(f"{url} answered HTTP {response.status_code}: "
                             f"{_excerpt(response.text)!r}")
        try:
            return [str(m["id"]) for m in response.json()["data"]]
        except (ValueError, KeyError, TypeError):
            raise JudgeError(f"{url}: unexpected model list {_excerpt(response.text)!r}") from None
