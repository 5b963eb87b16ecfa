"""Any reward over HTTP (``rlaif-gym serve-reward``), for OpenRLHF, verl and other clients.

:func:`create_app` wraps a :class:`~rlaif_gym.reward_protocol.RewardFunction` in a FastAPI app
and :func:`serve_reward` runs it on uvicorn. Routes:

``POST /get_reward`` - OpenRLHF's remote reward contract, as its own code defines it
    (OpenRLHF 0.11: ``openrlhf/utils/agent.py``, ``SingleTurnAgentExecutor.
    _fetch_rewards_via_http`` posts ``{"query": [...], "prompts": [...], "labels": [...]}``
    to each ``--reward.remote_url``, and ``openrlhf/cli/serve_rm.py`` answers
    ``{"rewards": [...], "scores": [...], "extra_logs": {...}}``). Each ``query`` is the
    decoded prompt + response (``skip_special_tokens=False``) and each ``prompts`` entry the
    prompt as the policy saw it (chat template applied), so the completion is
    ``query[len(prompt):]`` with trailing end-of-turn/padding tokens (:data:`END_TOKENS`)
    stripped; a query that does not start with its prompt is rejected (422) rather than
    guessed at. The reward's *context* (the task input: a post, a dialogue) is, with
    ``context="prompt"`` (default), the last user turn of the prompt's chat template
    (ChatML, Llama 3, Gemma; the whole prompt when none is found, see
    :func:`context_from_prompt`), or, with ``context="label"``, the request's ``labels``
    entry (OpenRLHF's ``--data.label_key`` column: put the plain post there to give the judge
    exactly the task input). ``rewards`` and ``scores`` are both the reward's scores (as
    OpenRLHF's own server does); ``extra_logs`` holds the reward's one-dimensional numeric
    details, one value per query, which OpenRLHF logs.
``POST /score`` - plain JSON for any other client: ``{"prompts": [...], "completions":
    [...]}`` (task inputs and completions, as :class:`RewardFunction` takes them) ->
    ``{"scores": [...], "details": {name: nested lists}}``.
``GET /health`` - ``{"status": "ok", "reward": name, "requests": ..., "batches": ...,
    "rows": ..., "queued": ...}``.

Cross-request batching: requests wait in one queue; a worker takes the first, adds those that
arrive within ``max_wait_ms`` until ``max_batch_size`` rows, calls the reward ONCE on all of
them (in a worker thread, one batch at a time) and hands each request its rows back. OpenRLHF
sends one query per request from many rollouts at once, so this is what turns its requests
into judge batches. ``batching=False`` scores each request alone (same queue, same worker).

Bad input gets a 4xx and a message: 413 for a body over ``max_body_bytes``, 400 for a body
that is not JSON, 422 for wrong types, unknown fields, lengths that differ (a prompt without a
completion) or a query that does not start with its prompt. A reward that fails answers 500
with its error; no score is ever made up. On SIGINT/SIGTERM uvicorn stops accepting
connections, the requests in flight (and so the batch being scored) finish and are answered,
then the worker stops.
"""

# No ``from __future__ import annotations``: FastAPI reads the route functions' annotations
# (``Request``, imported inside create_app) at runtime.
import asyncio
import logging
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlaif_gym.reward_protocol import RewardFunction, RewardOutput
from rlaif_gym.reward_registry import make_reward

__all__ = ["CONTEXT_SOURCES", "DEFAULT_MAX_BODY_BYTES", "END_TOKENS", "BatchScorer",
           "BatchStats", "RequestError", "context_from_prompt", "create_app", "reward_for_serving",
           "serve_reward", "split_query"]

logger = logging.getLogger(__name__)

#: Largest request body accepted by default (bytes).
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
#: Where ``/get_reward`` takes each episode's context from.
CONTEXT_SOURCES: tuple[str, ...] = ("prompt", "label")
#: Special tokens stripped from the end of a decoded OpenRLHF query (end of turn, padding).
END_TOKENS: tuple[str, ...] = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>",
                               "<end_of_turn>", "<eos>", "</s>", "<pad>", "<|end|>")
#: The user turn of common chat templates: ChatML (Qwen, SmolLM), Llama 3, Gemma.
_USER_TURNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", re.S),
    re.compile(r"<\|start_header_id\|>user<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>", re.S),
    re.compile(r"<start_of_turn>user\n(.*?)<end_of_turn>", re.S),
)


class RequestError(ValueError):
    """A request the server cannot score (answered 422 with this message)."""


def split_query(query: str, prompt: str, end_tokens: Sequence[str] = END_TOKENS) -> str:
    """The completion in an OpenRLHF ``query`` (decoded prompt + response): the text after
    ``prompt``, without trailing ``end_tokens`` and whitespace after them.

    Raises:
        RequestError: ``query`` does not start with ``prompt``.
    """
    if not query.startswith(prompt):
        raise RequestError("the query does not start with its prompt (was the prompt "
                           "truncated by the trainer?); send the prompt exactly as the "
                           "policy saw it")
    completion = query[len(prompt):]
    stripped = True
    while stripped:
        stripped = False
        for token in end_tokens:
            if token and completion.rstrip().endswith(token):
                completion = completion.rstrip()[: -len(token)]
                stripped = True
    return completion


def context_from_prompt(prompt: str) -> str:
    """The task input inside a chat-templated policy prompt: the content of its last user
    turn (ChatML, Llama 3 or Gemma templates), stripped; the whole prompt, stripped, when no
    such turn is found (a plain-text prompt)."""
    for pattern in _USER_TURNS:
        turns = pattern.findall(prompt)
        if turns:
            return turns[-1].strip()
    return prompt.strip()


def _json_value(value: np.ndarray) -> Any:
    """A details array row as plain JSON (floats, ints, bools, strings, nested lists)."""
    return np.asarray(value).tolist()


@dataclass
class BatchStats:
    """What the server scored: requests, reward calls (batches) and rows."""

    requests: int = 0
    batches: int = 0
    rows: int = 0
    batch_sizes: list[int] = field(default_factory=list)


@dataclass
class _Pending:
    prompts: list[str]
    completions: list[str]
    future: asyncio.Future[RewardOutput]


class BatchScorer:
    """One queue and one worker that scores requests in batches (see the module docstring).

    Args:
        reward: the reward function (called from one worker thread at a time).
        max_batch_size: rows per reward call when batching (a larger request is scored alone).
        max_wait_ms: how long the first request of a batch waits for others.
        batching: False scores each request alone.
    """

    def __init__(self, reward: RewardFunction, *, max_batch_size: int = 64,
                 max_wait_ms: float = 5.0, batching: bool = True) -> None:
        if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) \
                or max_batch_size < 1:
            raise ValueError(f"max_batch_size must be a positive int, got {max_batch_size!r}")
        if not max_wait_ms >= 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms!r}")
        self.reward = reward
        self.max_batch_size = max_batch_size
        self.max_wait_s = float(max_wait_ms) / 1000.0
        self.batching = bool(batching)
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Pending | None] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._carry: _Pending | None = None

    async def start(self) -> None:
        """Start the worker on the running loop."""
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._work(), name="reward-batcher")

    async def stop(self) -> None:
        """Score what is queued, then stop the worker."""
        if self._queue is None or self._worker is None:
            return
        await self._queue.put(None)
        await self._worker
        self._worker = None

    def queued(self) -> int:
        """Requests waiting for a batch."""
        return 0 if self._queue is None else self._queue.qsize()

    async def score(self, prompts: list[str], completions: list[str]) -> RewardOutput:
        """Queue one request and wait for its rows of the batch's :class:`RewardOutput`."""
        if self._queue is None:
            raise RuntimeError("BatchScorer.start() was not called")
        self.stats.requests += 1
        if not prompts:
            return RewardOutput(scores=np.zeros(0, dtype=np.float64))
        future: asyncio.Future[RewardOutput] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(prompts, completions, future))
        return await future

    async def _next(self, timeout: float | None) -> _Pending | None | str:
        assert self._queue is not None
        if self._carry is not None:
            item, self._carry = self._carry, None
            return item
        if timeout is None:
            return await self._queue.get()
        try:
            return await asyncio.wait_for(self._queue.get(), max(timeout, 0.0))
        except asyncio.TimeoutError:
            return "timeout"

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self._next(None)
            if first is None or isinstance(first, str):
                break
            batch, rows = [first], len(first.prompts)
            deadline = loop.time() + self.max_wait_s
            while self.batching and rows < self.max_batch_size:
                item = await self._next(deadline - loop.time())
                if item is None:
                    stopping = True
                    break
                if isinstance(item, str):  # waited max_wait_ms
                    break
                if rows + len(item.prompts) > self.max_batch_size:
                    self._carry = item  # first of the next batch
                    break
                batch.append(item)
                rows += len(item.prompts)
            await self._score_batch(batch)
        if self._carry is not None:
            await self._score_batch([self._carry])
            self._carry = None

    async def _score_batch(self, batch: list[_Pending]) -> None:
        prompts = [p for item in batch for p in item.prompts]
        completions = [c for item in batch for c in item.completions]
        try:
            out = await asyncio.to_thread(self.reward, prompts, completions)
        except Exception as exc:  # every request of the batch gets the error
            logger.exception("reward %r failed on a batch of %d", self.reward.name, len(prompts))
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        self.stats.batches += 1
        self.stats.rows += len(prompts)
        self.stats.batch_sizes.append(len(prompts))
        start = 0
        for item in batch:
            stop = start + len(item.prompts)
            part = RewardOutput(scores=out.scores[start:stop],
                                details={k: v[start:stop] for k, v in out.details.items()})
            if not item.future.done():  # the client may have gone
                item.future.set_result(part)
            start = stop


def create_app(reward: RewardFunction, *, max_batch_size: int = 64, max_wait_ms: float = 5.0,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, batching: bool = True,
               context: str = "prompt", end_tokens: Sequence[str] = END_TOKENS) -> Any:
    """A FastAPI app serving ``reward`` (routes and behaviour: module docstring).

    Args:
        reward: any :class:`~rlaif_gym.reward_protocol.RewardFunction`.
        max_batch_size: rows per reward call across requests (>= 1).
        max_wait_ms: how long a batch's first request waits for more (>= 0).
        max_body_bytes: larger request bodies are refused with 413.
        batching: False scores each request alone.
        context: ``"prompt"`` or ``"label"``: the context of an OpenRLHF query.
        end_tokens: stripped from the end of an OpenRLHF query's completion.

    The app's ``state.scorer`` is its :class:`BatchScorer` (``state.scorer.stats``).
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, ValidationError

    if context not in CONTEXT_SOURCES:
        raise ValueError(f"context must be one of {CONTEXT_SOURCES}, got {context!r}")
    if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int) \
            or max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be a positive int, got {max_body_bytes!r}")
    scorer = BatchScorer(reward, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
                         batching=batching)

    class ScoreRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        prompts: list[str]
        completions: list[str]

    class OpenRLHFRequest(BaseModel):
        model_config = ConfigDict(extra="ignore", strict=True)
        query: list[str]
        prompts: list[str]
        labels: list[Any] | None = None

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await scorer.start()
        try:
            yield
        finally:
            await scorer.stop()

    app = FastAPI(title="rlaif-gym reward server", lifespan=lifespan)
    app.state.scorer = scorer

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def read_body(request: Request) -> bytes | JSONResponse:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            return error(413, f"request body of {declared} bytes is over the limit of "
                              f"{max_body_bytes} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                return error(413, f"request body is over the limit of {max_body_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def parse(model: type[BaseModel], body: bytes) -> BaseModel | JSONResponse:
        try:
            return model.model_validate_json(body)
        except ValidationError as exc:
            problems = exc.errors(include_url=False)
            if any(p["type"] == "json_invalid" for p in problems):
                return error(400, f"the body is not valid JSON: {problems[0]['msg']}")
            text = "; ".join(f"{'.'.join(map(str, p['loc'])) or 'body'}: {p['msg']}"
                             for p in problems[:5])
            return error(422, f"bad request: {text}")

    async def run(prompts: list[str], completions: list[str]) -> RewardOutput | JSONResponse:
        try:
            return await scorer.score(prompts, completions)
        except Exception as exc:
            return error(500, f"reward {reward.name!r} failed: {type(exc).__name__}: {exc}")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "reward": reward.name, "requests": scorer.stats.requests,
                "batches": scorer.stats.batches, "rows": scorer.stats.rows,
                "queued": scorer.queued()}

    @app.post("/score")
    async def score(request: Request) -> Any:
        body = await read_body(request)
        if isinstance(body, JSONResponse):
            return body
        parsed = parse(ScoreRequest, body)
        if isinstance(parsed, JSONResponse):
            return parsed
        assert isinstance(parsed, ScoreRequest)
        if len(parsed.prompts) != len(parsed.completions):
            return error(422, f"{len(parsed.prompts)} prompts but {len(parsed.completions)} "
                              "completions: each prompt needs exactly one completion")
        out = await run(parsed.prompts, parsed.completions)
        if isinstance(out, JSONResponse):
            return out
        return {"scores": out.scores.tolist(),
                "details": {k: _json_value(v) for k, v in out.details.items()}}

    @app.post("/get_reward")
    async def get_reward(request: Request) -> Any:
        body = await read_body(request)
        if isinstance(body, JSONResponse):
            return body
        parsed = parse(OpenRLHFRequest, body)
        if isinstance(parsed, JSONResponse):
            return parsed
        assert isinstance(parsed, OpenRLHFRequest)
        n = len(parsed.query)
        if len(parsed.prompts) != n:
            return error(422, f"{n} queries but {len(parsed.prompts)} prompts: each query "
                              "needs its prompt to split off the completion")
        if context == "label" and (parsed.labels is None or len(parsed.labels) != n
                                   or not all(isinstance(x, str) for x in parsed.labels)):
            return error(422, "context='label' needs one string label per query (the task "
                              "input, e.g. OpenRLHF's --data.label_key column)")
        contexts, completions = [], []
        for i, (query, prompt) in enumerate(zip(parsed.query, parsed.prompts, strict=True)):
            try:
                completions.append(split_query(query, prompt, end_tokens))
            except RequestError as exc:
                return error(422, f"query {i}: {exc}")
            contexts.append(parsed.labels[i] if context == "label" and parsed.labels
                            else context_from_prompt(prompt))
        out = await run(contexts, completions)
        if isinstance(out, JSONResponse):
            return out
        scores = out.scores.tolist()
        extra = {k: v.tolist() for k, v in out.details.items()
                 if v.ndim == 1 and np.issubdtype(v.dtype, np.number)}
        return {"rewards": scores, "scores": scores, "extra_logs": extra}

    return app


def reward_for_serving(spec: str, *, judge: str | None = None, task: str | None = None,
                       judge_options: Mapping[str, Any] | None = None,
                       **options: Any) -> RewardFunction:
    """Build the reward that ``serve-reward --reward SPEC`` serves.

    Args:
        spec: a registered name (``"direct"``, ``"pairwise"``, ``"ai-rm"``...) or a trained
            reward-model directory.
        judge: the judge model spec, for rewards that take one.
        task: the task / template name (``"tldr"``, ``"helpful"``...), for rewards that take
            one.
        judge_options: judge backend options (``backend``, ``base_urls``, ``server``,
            ``verdict_cache``, ``max_concurrency``, ``requests_per_minute``...), passed to
            rewards that take them (any reward with ``**kwargs``, such as ``"direct"``).
        **options: the reward's own options (``path=`` for ``"ai-rm"``...).
    """
    context: dict[str, Any] = {"judge": judge, "task": task, **dict(judge_options or {})}
    return make_reward(spec, context=context, **options)


def serve_reward(reward: RewardFunction, host: str = "127.0.0.1", port: int = 8000, *,
                 max_batch_size: int = 64, max_wait_ms: float = 5.0,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, batching: bool = True,
                 context: str = "prompt", log_level: str = "info",
                 graceful_timeout_s: float | None = 300.0) -> None:
    """Serve ``reward`` with uvicorn until SIGINT/SIGTERM (blocks).

    On shutdown the server stops accepting connections, answers the requests in flight (the
    batch being scored finishes) for at most ``graceful_timeout_s`` seconds, then exits.
    Other arguments: :func:`create_app`.
    """
    import uvicorn

    app = create_app(reward, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
                     max_body_bytes=max_body_bytes, batching=batching, context=context)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level,
                            timeout_graceful_shutdown=graceful_timeout_s)
    uvicorn.Server(config).run()
