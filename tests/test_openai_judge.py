"""OpenAIJudge against an in-process fake OpenAI-compatible server (loopback only).

The fake server answers ``/v1/completions`` with the log-probabilities of the tiny random
transformers model, so the HTTP judge's soft labels and d-RLAIF scores must equal those of
:class:`TransformersJudge` on the same model. Scripted answers (429, 500, missing candidates,
slow replies) exercise retries, errors, load balancing and the concurrency limit.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("httpx")

from rewards.direct import direct_scores  # noqa: E402
from rewards.judges import JudgeError, load_judge  # noqa: E402
from rewards.judges.openai_judge import OpenAIJudge, gbnf_alternatives  # noqa: E402
from rewards.judges.transformers_judge import TransformersJudge  # noqa: E402
from rewards.preference import label_pairs  # noqa: E402
from rlaif_gym.data.records import PreferencePair  # noqa: E402

FULL_VOCAB = 259  # the tiny tokenizer's size: a llama.cpp-style uncapped top-N

POSTS = [
    "SUBREDDIT: r/cooking\nTITLE: Burnt rice\nPOST: Every time I cook rice it burns at the "
    "bottom even on low heat. What am I doing wrong?",
    "SUBREDDIT: r/running\nTITLE: Knee pain\nPOST: Started running 5k three times a week and "
    "now my left knee hurts after every run.",
    "SUBREDDIT: r/personalfinance\nTITLE: First job\nPOST: I got my first job and have no idea "
    "how much of my salary to save.",
]
SUMMARIES = [
    ("My rice always burns; how do I stop it?", "I like rice."),
    ("Knee hurts since I began running often.", "Running is a sport."),
    ("How much should I save from my first salary?", "Money."),
]


class FakeCompletionServer:
    """A ThreadingHTTPServer on 127.0.0.1 (random port) speaking the completions API.

    ``vllm_like`` honours ``logprob_token_ids`` / ``return_tokens_as_token_ids`` and rejects
    ``logprobs > max_logprobs`` with HTTP 400 like vLLM. Like llama-cpp-python, a request
    whose greedy token is end-of-sequence gets no logprobs (``sample_eos`` makes the model
    "want" to stop), unless its ``grammar`` (alternatives of literals) constrains the token.
    ``script`` holds canned answers
    ``(status, body, headers)`` served before any computed one; ``delay`` sleeps in every
    request; ``in_flight``/``max_in_flight`` count concurrent requests.
    """

    def __init__(self, model: Any, tokenizer: Any, *, vllm_like: bool = False,
                 max_logprobs: int | None = None) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.generator = TransformersJudge(model, tokenizer, batch_size=1)
        self.vllm_like, self.max_logprobs = vllm_like, max_logprobs
        self.payloads: list[dict[str, Any]] = []
        self.arrivals: list[float] = []  # time.monotonic() of each request
        self.script: deque[tuple[int, Any, dict[str, str]]] = deque()
        self.delay = 0.0
        self.sample_eos = False
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        self._model_lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever,
                                        kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": "fake-model"}]}, {})
                else:
                    self._send(404, {"error": "no such route"}, {})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                payload = json.loads(self.rfile.read(length))
                status, body, headers = server.handle(self.path, payload)
                self._send(status, body, headers)

            def _send(self, status: int, body: Any, headers: dict[str, str]) -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def handle(self, path: str, payload: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            self.payloads.append(payload)
            self.arrivals.append(time.monotonic())
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            scripted = self.script.popleft() if self.script else None
        try:
            if self.delay:
                time.sleep(self.delay)
            if scripted is not None:
                return scripted
            if path != "/v1/completions":
                return 404, {"error": f"no route {path}"}, {}
            return self.complete(payload)
        finally:
            with self._lock:
                self.in_flight -= 1

    def complete(self, payload: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        prompt = payload["prompt"]
        ids = prompt if isinstance(prompt, list) else \
            self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        n = payload.get("logprobs")
        if n is None:  # generation
            text = self.tokenizer.decode(ids) if isinstance(prompt, list) else prompt
            out = self.generator.generate([text], payload["max_tokens"])[0]
            return 200, {"choices": [{"index": 0, "text": out, "logprobs": None}]}, {}
        if self.max_logprobs is not None and n > self.max_logprobs:
            return 400, {"error": f"logprobs {n} > max_logprobs {self.max_logprobs}"}, {}
        with self._model_lock, torch.inference_mode():
            logits = self.model(torch.tensor([ids])).logits[0, -1].float()
        logp = logits - logits.logsumexp(-1)
        sampled = self.tokenizer.eos_token_id if self.sample_eos else int(logits.argmax())
        if "grammar" in payload:  # the sampled token must spell one of the literals
            allowed = [ast.literal_eval(f'"{lit}"') for lit in
                       re.findall(r'"((?:[^"\\]|\\.)*)"', payload["grammar"])]
            ids_ok = [self.tokenizer.convert_tokens_to_ids(a) for a in allowed]
            sampled = max(ids_ok, key=lambda i: float(logits[i]))
        if sampled == self.tokenizer.eos_token_id and not self.vllm_like:
            empty = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
            return 200, {"choices": [{"index": 0, "text": "", "logprobs": empty,
                                      "finish_reason": "stop"}]}, {}
        if self.vllm_like and payload.get("logprob_token_ids"):
            chosen = list(payload["logprob_token_ids"])
        else:
            chosen = logp.topk(n).indices.tolist()
        as_ids = self.vllm_like and payload.get("return_tokens_as_token_ids")

        def key(i: int) -> str:
            return f"token_id:{i}" if as_ids else self.tokenizer.decode([i])

        top: dict[str, float] = {}
        for i in [*chosen, sampled]:
            top.setdefault(key(i), float(logp[i]))
        logprobs = {"tokens": [key(sampled)], "token_logprobs": [float(logp[sampled])],
                    "top_logprobs": [top], "text_offset": [0]}
        choice = {"index": 0, "text": self.tokenizer.decode([sampled]), "logprobs": logprobs}
        return 200, {"choices": [choice]}, {}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture()
def server(tiny_model, tiny_tokenizer) -> Iterator[FakeCompletionServer]:
    srv = FakeCompletionServer(tiny_model, tiny_tokenizer)
    yield srv
    srv.close()


@pytest.fixture()
def vllm_server(tiny_model, tiny_tokenizer) -> Iterator[FakeCompletionServer]:
    srv = FakeCompletionServer(tiny_model, tiny_tokenizer, vllm_like=True, max_logprobs=20)
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def reference(tiny_model, tiny_tokenizer) -> TransformersJudge:
    return TransformersJudge(tiny_model, tiny_tokenizer, batch_size=4)


def http_judge(tokenizer: Any, urls: str | list[str], **kwargs: Any) -> OpenAIJudge:
    options: dict[str, Any] = {"top_logprobs": FULL_VOCAB, "max_retries": 2, "backoff": 0.0,
                               "timeout": 10.0, "max_concurrency": 4, "server": "llamacpp"}
    options.update(kwargs)
    return OpenAIJudge(tokenizer, urls, **options)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pairs() -> list[PreferencePair]:
    return [PreferencePair(id=f"p{i}", task="tldr", context=post, responses=summ)
            for i, (post, summ) in enumerate(zip(POSTS, SUMMARIES, strict=True))]


def assert_same_labels(got: list[Any], want: list[Any]) -> None:
    for a, b in zip(got, want, strict=True):
        assert a.id == b.id
        for field in ("p_first", "p_order_ab", "p_order_ba"):
            assert getattr(a, field) == pytest.approx(getattr(b, field), abs=1e-5), field


# --------------------------------------------------------------------------- agreement


def test_soft_labels_equal_the_transformers_judge(server, reference, tiny_tokenizer):
    with http_judge(tiny_tokenizer, server.url) as judge:
        got = list(label_pairs(judge, pairs(), progress=False))
    want = list(label_pairs(reference, pairs(), progress=False))
    assert_same_labels(got, want)
    assert len(server.payloads) == 2 * len(POSTS)  # both orders of every pair
    assert all(p["max_tokens"] == 1 and p["temperature"] == 0 for p in server.payloads)


def test_direct_scores_equal_the_transformers_judge(server, reference, tiny_tokenizer):
    responses = [s[0] for s in SUMMARIES]
    with http_judge(tiny_tokenizer, server.url, max_concurrency=1) as judge:
        got = direct_scores(judge, "tldr", POSTS, responses)
    want = direct_scores(reference, "tldr", POSTS, responses)
    np.testing.assert_allclose(got.distribution, want.distribution, atol=1e-5)
    np.testing.assert_allclose(got.expected, want.expected, atol=1e-4)
    # two requests per prompt: the prompt, then prompt + "1" right after it (KV cache reuse)
    prompts = [p["prompt"] for p in server.payloads]
    assert len(prompts) == 2 * len(POSTS)
    assert sum(b == a + "1" for a, b in zip(prompts, prompts[1:], strict=False)) == len(POSTS)


def test_cot_labels_with_generation_equal_the_transformers_judge(server, tiny_model,
                                                                 tiny_tokenizer):
    reference = TransformersJudge(tiny_model, tiny_tokenizer, batch_size=1)
    with http_judge(tiny_tokenizer, server.url) as judge:
        got = list(label_pairs(judge, pairs()[:1], cot=True, cot_max_tokens=6, progress=False))
    want = list(label_pairs(reference, pairs()[:1], cot=True, cot_max_tokens=6, progress=False))
    assert got[0].rationales == want[0].rationales
    assert_same_labels(got, want)
    assert any(p["max_tokens"] == 6 and "logprobs" not in p for p in server.payloads)


def test_vllm_mode_requests_candidate_ids_and_reads_them_by_id(vllm_server, reference,
                                                               tiny_tokenizer):
    responses = [s[1] for s in SUMMARIES]
    with http_judge(tiny_tokenizer, vllm_server.url, server="vllm", top_logprobs=5) as judge:
        got = direct_scores(judge, "tldr", POSTS, responses)
    want = direct_scores(reference, "tldr", POSTS, responses)
    np.testing.assert_allclose(got.distribution, want.distribution, atol=1e-5)
    digits = [tiny_tokenizer.convert_tokens_to_ids(str(d)) for d in range(1, 10)]
    first = vllm_server.payloads[0]
    assert first["logprob_token_ids"] == digits and first["logprobs"] == 5
    assert first["return_tokens_as_token_ids"] is True and first["add_special_tokens"] is False


def test_token_id_prompts_give_the_same_labels(vllm_server, reference, tiny_tokenizer):
    with http_judge(tiny_tokenizer, vllm_server.url, server="vllm", send_token_ids=True,
                    top_logprobs=5) as j:
        got = list(label_pairs(j, pairs()[:2], progress=False))
    assert_same_labels(got, list(label_pairs(reference, pairs()[:2], progress=False)))
    assert all(isinstance(p["prompt"], list) for p in vllm_server.payloads)


def test_load_judge_openai_backend(server, tiny_tokenizer):
    judge = load_judge("tiny-random", backend="openai", base_urls=[server.url + "/v1/"],
                       top_logprobs=FULL_VOCAB, server="llamacpp")
    try:
        assert isinstance(judge, OpenAIJudge) and judge.name == "tiny-random"
        assert judge.base_urls == (server.url,)
        assert judge.models() == ["fake-model"]
        assert judge.next_token_logprobs(["hello"], ["1", "2"]).shape == (1, 2)
    finally:
        judge.close()
    with pytest.raises(TypeError, match="base_urls"):
        load_judge("tiny-random", backend="openai")


# --------------------------------------------------------------------------- errors


def test_missing_candidate_raises_naming_candidate_prompt_and_server(server, tiny_tokenizer):
    reply = {"choices": [{"text": "x", "logprobs": {"top_logprobs": [{"1": -0.5, "x": -1.0}]}}]}
    server.script.extend([(200, {"choices": [{"text": "x", "logprobs": {
        "top_logprobs": [{"1": -0.1, "2": -3.0}]}}]}, {}), (200, reply, {})])
    with http_judge(tiny_tokenizer, server.url, max_concurrency=1) as judge, \
            pytest.raises(JudgeError) as info:
        judge.next_token_logprobs(["first prompt", "second prompt"], ["1", "2"])
    message = str(info.value)
    assert "'2'" in message and "prompt 1" in message and server.url in message


def test_top_n_too_small_for_the_candidates_raises(server, tiny_tokenizer):
    with http_judge(tiny_tokenizer, server.url, top_logprobs=1, server="openai") as judge, \
            pytest.raises(JudgeError, match="not among the"):
        judge.next_token_logprobs(["hello there"], [str(d) for d in range(10)])


def test_multi_token_candidate_fails_before_any_request(server, tiny_tokenizer):
    with http_judge(tiny_tokenizer, server.url) as judge, \
            pytest.raises(JudgeError, match="2 tokens"):
        judge.next_token_logprobs(["hello"], ["1", "10"])
    assert server.payloads == []


def test_429_then_200_is_retried(server, tiny_tokenizer, reference):
    server.script.append((429, {"error": "slow down"}, {"Retry-After": "0"}))
    with http_judge(tiny_tokenizer, server.url) as judge:
        got = judge.next_token_logprobs(["hello"], ["1", "2"])
    assert len(server.payloads) == 2
    np.testing.assert_allclose(got, reference.next_token_logprobs(["hello"], ["1", "2"]),
                               atol=1e-5)


def test_always_500_raises_after_max_retries(server, tiny_tokenizer):
    server.script.extend([(500, {"error": "engine exploded"}, {})] * 10)
    with http_judge(tiny_tokenizer, server.url, max_retries=3) as judge, \
            pytest.raises(JudgeError) as info:
        judge.next_token_logprobs(["hello"], ["1", "2"])
    assert len(server.payloads) == 4  # 1 attempt + 3 retries
    message = str(info.value)
    assert "HTTP 500" in message and "engine exploded" in message and server.url in message


def test_client_error_is_not_retried(vllm_server, tiny_tokenizer):
    with http_judge(tiny_tokenizer, vllm_server.url, server="openai", top_logprobs=50) as j, \
            pytest.raises(JudgeError, match="HTTP 400.*max_logprobs"):
        j.next_token_logprobs(["hello"], ["1", "2"])
    assert len(vllm_server.payloads) == 1


def test_unreachable_server_raises_after_retries(tiny_tokenizer):
    url = f"http://127.0.0.1:{free_port()}"
    with http_judge(tiny_tokenizer, url, max_retries=1) as judge, \
            pytest.raises(JudgeError, match="2 attempt.*ConnectionError"):
        judge.next_token_logprobs(["hello"], ["1"])


def test_timeout_is_retried_then_raises(server, tiny_tokenizer):
    server.delay = 0.4
    with http_judge(tiny_tokenizer, server.url, max_retries=1, timeout=0.1) as judge, \
            pytest.raises(JudgeError, match="Timeout"):
        judge.next_token_logprobs(["hello"], ["1"])
    assert len(server.payloads) == 2


def test_retry_delay_grows_exponentially_and_is_capped(tiny_tokenizer):
    judge = OpenAIJudge(tiny_tokenizer, "http://127.0.0.1:1", backoff=0.5, max_backoff=3.0)
    assert [judge._retry_delay(k, None) for k in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert judge._retry_delay(0, "2") == 2.0 and judge._retry_delay(0, "60") == 3.0


@pytest.mark.parametrize("bad", [{"max_concurrency": 0}, {"max_retries": -1},
                                 {"top_logprobs": 0}, {"server": "tgi"}, {"timeout": 0},
                                 {"server": "llamacpp", "send_token_ids": True}])
def test_bad_options_raise(tiny_tokenizer, bad):
    with pytest.raises(ValueError):
        OpenAIJudge(tiny_tokenizer, "http://127.0.0.1:1", **bad)
    with pytest.raises(ValueError, match="http"):
        OpenAIJudge(tiny_tokenizer, "127.0.0.1:8000")


# --------------------------------------------------------------------------- scaling


def test_two_base_urls_both_receive_requests(tiny_model, tiny_tokenizer, reference):
    first = FakeCompletionServer(tiny_model, tiny_tokenizer)
    second = FakeCompletionServer(tiny_model, tiny_tokenizer)
    try:
        prompts = [f"prompt number {i}" for i in range(6)]
        with http_judge(tiny_tokenizer, [first.url, second.url]) as judge:
            got = judge.next_token_logprobs(prompts, ["1", "2"])
        assert len(first.payloads) == len(second.payloads) == 3
        np.testing.assert_allclose(got, reference.next_token_logprobs(prompts, ["1", "2"]),
                                   atol=1e-5)
    finally:
        first.close()
        second.close()


def test_failed_request_is_retried_on_the_other_replica(tiny_model, tiny_tokenizer):
    first = FakeCompletionServer(tiny_model, tiny_tokenizer)
    second = FakeCompletionServer(tiny_model, tiny_tokenizer)
    try:
        first.script.append((503, {"error": "overloaded"}, {}))
        with http_judge(tiny_tokenizer, [first.url, second.url]) as judge:
            judge.next_token_logprobs(["hello"], ["1"])
        assert (len(first.payloads), len(second.payloads)) == (1, 1)
    finally:
        first.close()
        second.close()


def test_concurrency_limit_is_respected(server, tiny_tokenizer):
    server.delay = 0.05
    with http_judge(tiny_tokenizer, server.url, max_concurrency=3) as judge:
        judge.next_token_logprobs([f"p{i}" for i in range(12)], ["1"])
    assert server.max_in_flight == 3


# --------------------------------------------------------------------------- llama.cpp


def test_llamacpp_mode_constrains_the_sampled_token_with_a_grammar(server, tiny_tokenizer,
                                                                    reference):
    server.sample_eos = True  # the model would stop at once: no logprobs without a grammar
    with http_judge(tiny_tokenizer, server.url, server="llamacpp") as judge:
        got = judge.next_token_logprobs(["hello"], ["1", "2"])
    assert server.payloads[0]["grammar"] == 'root ::= "1" | "2"'
    assert server.payloads[0]["repeat_penalty"] == 1.0
    np.testing.assert_allclose(got, reference.next_token_logprobs(["hello"], ["1", "2"]),
                               atol=1e-5)


def test_end_of_sequence_without_logprobs_raises_clearly(server, tiny_tokenizer):
    server.sample_eos = True
    with http_judge(tiny_tokenizer, server.url, server="openai") as judge, \
            pytest.raises(JudgeError, match="prompt 0.*end-of-sequence"):
        judge.next_token_logprobs(["hello"], ["1", "2"])
    assert "grammar" not in server.payloads[0]


def test_gbnf_literals_are_escaped():
    assert gbnf_alternatives(["1", 'a"b', "x\\y", "\n", "1"]) == \
        'root ::= "1" | "a\\"b" | "x\\\\y" | "\\n"'


# --------------------------------------------------------------------------- limits, deadline


def test_requests_per_minute_limit_spaces_the_requests(server, tiny_tokenizer):
    # 300/min = 5 per second, bursts of 5: 10 requests need at least ~1 s
    with http_judge(tiny_tokenizer, server.url, max_concurrency=10,
                    requests_per_minute=300) as judge:
        start = time.monotonic()  # the bucket starts full when the first request is made
        judge.next_token_logprobs([f"prompt {i}" for i in range(10)], ["1"])
        spent = judge.stats.snapshot()
    # measured from the call, not the first arrival: a slow first connection on a loaded
    # machine would otherwise shorten the span without any limit being broken
    assert server.arrivals[-1] - start >= 0.9
    assert spent.calls == 10 and spent.limit_wait_s >= 0.9


def test_tokens_per_minute_limit_counts_prompt_tokens(server, tiny_tokenizer):
    prompt = "x" * 50  # 50 tokens of the character-level tiny tokenizer
    # 6000 tokens/min = 100 per second: two 50-token prompts a second after the first burst
    with http_judge(tiny_tokenizer, server.url, max_concurrency=6,
                    tokens_per_minute=6000) as judge:
        start = time.monotonic()
        judge.next_token_logprobs([prompt] * 6, ["1"])
        spent = judge.stats.snapshot()
    assert spent.prompt_tokens == 6 * len(tiny_tokenizer(prompt)["input_ids"])
    assert server.arrivals[-1] - start >= 1.9  # 600 tokens, 200 in the bursts


def test_limits_are_shared_by_all_replicas(tiny_model, tiny_tokenizer):
    first = FakeCompletionServer(tiny_model, tiny_tokenizer)
    second = FakeCompletionServer(tiny_model, tiny_tokenizer)
    try:
        with http_judge(tiny_tokenizer, [first.url, second.url], max_concurrency=8,
                        requests_per_minute=240) as judge:  # 4 per second over both
            start = time.monotonic()
            judge.next_token_logprobs([f"prompt {i}" for i in range(8)], ["1"])
        arrivals = sorted(first.arrivals + second.arrivals)
        assert len(first.arrivals) == len(second.arrivals) == 4
        assert arrivals[-1] - start >= 0.9  # 8 requests at 4/s with a burst of 4
    finally:
        first.close()
        second.close()


def test_stalled_server_fails_at_the_deadline_not_after_every_retry(server, tiny_tokenizer):
    server.delay = 3.0  # every request stalls
    started = time.monotonic()
    with http_judge(tiny_tokenizer, server.url, timeout=10.0, max_retries=5,
                    deadline=0.6) as judge, pytest.raises(JudgeError, match="deadline of 0.6 s"):
        judge.next_token_logprobs(["hello"], ["1"])
    assert time.monotonic() - started < 2.5
    assert len(server.payloads) == 1


def test_default_total_wait_on_a_stalled_server_is_under_two_minutes(tiny_tokenizer):
    judge = OpenAIJudge(tiny_tokenizer, "http://127.0.0.1:1")
    assert judge.deadline is not None and judge.deadline < 120
    assert judge.timeout <= judge.deadline and judge.max_retries >= 1


def test_retry_prints_a_progress_line_with_delay_status_url_and_attempt(server, tiny_tokenizer,
                                                                        caplog):
    server.script.append((429, {"error": "slow down"}, {"Retry-After": "0"}))
    with caplog.at_level(logging.WARNING, logger="rewards.judges.openai_judge"), \
            http_judge(tiny_tokenizer, server.url, max_retries=2) as judge:
        judge.next_token_logprobs(["hello"], ["1"])
    assert f"retrying in 0.0s: 429 from {server.url}/v1/completions, attempt 2/3" in caplog.text


def test_stats_count_calls_tokens_retries_and_failures(server, tiny_tokenizer):
    server.script.append((503, {"error": "busy"}, {}))
    with http_judge(tiny_tokenizer, server.url) as judge:
        judge.next_token_logprobs(["hello"], ["1"])
        spent = judge.stats.snapshot()
        assert (spent.calls, spent.retries, spent.failures) == (2, 1, 0)
        assert spent.prompt_tokens == 2 * len(tiny_tokenizer("hello")["input_ids"])
        server.script.extend([(500, {"error": "down"}, {})] * 3)
        with pytest.raises(JudgeError):
            judge.next_token_logprobs(["hello"], ["1"])
        assert judge.stats.snapshot().failures == 1


def test_max_concurrency_none_means_the_default(tiny_tokenizer):
    judge = OpenAIJudge(tiny_tokenizer, "http://127.0.0.1:1", max_concurrency=None)
    assert judge.max_concurrency == 8


# --------------------------------------------------------------------------- Ctrl-C


class HangingServer:
    """Answers the first ``answer`` POSTs with a canned completion, then never answers."""

    def __init__(self, answer: int) -> None:
        self.answer, self.posts = answer, 0
        self.release = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                owner.posts += 1
                if owner.posts > owner.answer:
                    owner.release.wait()  # "forever": until the test ends
                    return
                top = {"1": -0.4, "2": -1.2}
                body = json.dumps({"choices": [{"index": 0, "text": "1", "logprobs": {
                    "tokens": ["1"], "token_logprobs": [-0.4], "top_logprobs": [top]}}]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def test_ctrl_c_stops_label_with_openai_backend_on_a_hanging_server_within_5_s(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    with pairs.open("w") as f:
        for i in range(4):
            f.write(json.dumps({"id": f"p{i}", "context": f"post number {i}",
                                "responses": [f"summary A{i}", f"summary B{i}"],
                                "human_choice": 0, "confidence": 7}) + "\n")
    out = tmp_path / "labels.jsonl"
    server = HangingServer(answer=4)  # both orders of 2 pairs, then silence
    root = Path(__file__).resolve().parents[1]
    argv = ["label", "--task", "tldr", "--pairs", str(pairs), "--out", str(out),
            "--judge", "tiny-random", "--backend", "openai", "--base-url", server.url,
            "--batch-size", "1"]
    env = {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from rlaif_gym.cli import main; "
                             f"sys.exit(main({argv!r}))"], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        waited = time.monotonic()
        while server.posts <= server.answer and time.monotonic() - waited < 120:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        assert server.posts > server.answer, "the labeler never reached the hanging request"
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        _, stderr = proc.communicate(timeout=30)
        elapsed = time.monotonic() - interrupted
    finally:
        if proc.poll() is None:
            proc.kill()
        server.close()
    assert elapsed < 5.0, f"exit took {elapsed:.1f} s after Ctrl-C; stderr: {stderr[-2000:]}"
    assert proc.returncode == 130, stderr[-2000:]
    labels = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in labels] == ["p0", "p1"]
