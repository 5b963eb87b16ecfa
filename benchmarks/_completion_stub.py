"""A local OpenAI-compatible ``/v1/completions`` server backed by a transformers model, for
benchmarks that need a real judge behind HTTP on a CPU machine (no llama.cpp build).

Only what the judge client uses: a text or token-id ``prompt``; ``logprobs=N`` with
``max_tokens=1`` returns the top-N next-token log-probabilities (full-vocabulary softmax of
the last position, float32) plus vLLM's ``logprob_token_ids`` when asked, keyed by decoded
text or, with ``return_tokens_as_token_ids``, ``"token_id:<id>"``; no generation. One
forward pass at a time (a lock), like a single-slot server. ``state.requests`` counts the
completion requests answered.

Imported as ``from _completion_stub import CompletionStub`` by the benchmarks in this folder.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import torch


class CompletionStub:
    """``with CompletionStub(model, tokenizer) as stub: stub.url`` - uvicorn in a thread on a
    free loopback port."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.requests = 0
        self._lock = threading.Lock()
        self.url = ""
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def app(self) -> Any:
        from fastapi import FastAPI

        stub = self
        app = FastAPI()

        @app.get("/v1/models")
        def models() -> dict:
            return {"object": "list", "data": [{"id": "stub"}]}

        @app.post("/v1/completions")
        def complete(payload: dict) -> dict:
            return stub.complete(payload)

        return app

    def complete(self, payload: dict[str, Any]) -> dict[str, Any]:
        prompt = payload["prompt"]
        ids = prompt if isinstance(prompt, list) else \
            self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        with self._lock, torch.inference_mode():
            self.requests += 1
            logits = self.model(torch.tensor([ids])).logits[0, -1].float()
        logp = logits - logits.logsumexp(-1)
        chosen = logp.topk(int(payload.get("logprobs") or 1)).indices.tolist()
        chosen += list(payload.get("logprob_token_ids") or [])
        as_ids = bool(payload.get("return_tokens_as_token_ids"))

        def key(i: int) -> str:
            return f"token_id:{i}" if as_ids else self.tokenizer.decode([i])

        top = {key(i): float(logp[i]) for i in chosen}
        best = int(logp.argmax())
        return {"choices": [{"index": 0, "text": self.tokenizer.decode([best]), "logprobs": {
            "tokens": [key(best)], "token_logprobs": [float(logp[best])],
            "top_logprobs": [top]}}]}

    def __enter__(self) -> CompletionStub:
        import uvicorn

        from rewards.judges.llamacpp_server import free_port

        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._server = uvicorn.Server(uvicorn.Config(self.app(), host="127.0.0.1", port=port,
                                                     log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        while not self._server.started:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
