"""rewards.server: the reward server over loopback HTTP (uvicorn in a thread, httpx clients):
OpenRLHF's remote reward request shape, the plain JSON route, batching across concurrent
requests, 4xx on bad input, errors, and a graceful shutdown (a subprocess and SIGTERM)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

from rewards.judges.llamacpp_server import free_port  # noqa: E402
from rewards.server import (  # noqa: E402
    context_from_prompt,
    create_app,
    reward_for_serving,
    split_query,
)
from rlaif_gym.reward_protocol import RewardFunction, RewardOutput  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHATML = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n" \
         "<|im_start|>assistant\n"


class LengthReward(RewardFunction):
    """Score = len(completion) + len(prompt) / 1000; records each call's batch."""

    name = "length"

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[tuple[list[str], list[str]]] = []
        self.fail = fail

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> RewardOutput:
        self.batches.append((list(prompts), list(completions)))
        if self.fail:
            raise RuntimeError("judge server unreachable")
        scores = np.array([len(c) + len(p) / 1000 for p, c in zip(prompts, completions,
                                                                  strict=True)])
        return RewardOutput(scores=scores, details={"words": np.array([len(c.split())
                                                                        for c in completions]),
                                                    "pair": np.stack([scores, -scores], 1)})


class Served:
    def __init__(self, reward: RewardFunction, **options: Any) -> None:
        self.app = create_app(reward, **options)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        started = time.monotonic()
        while not self.server.started:
            assert time.monotonic() - started < 30 and self.thread.is_alive()
            time.sleep(0.02)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture()
def served() -> Iterator[tuple[Served, LengthReward]]:
    reward = LengthReward()
    srv = Served(reward, max_batch_size=64, max_wait_ms=300)
    yield srv, reward
    srv.close()


def openrlhf_payload(prompts: list[str], responses: list[str], labels: list[Any]) -> dict:
    """What OpenRLHF 0.11's SingleTurnAgentExecutor._fetch_rewards_via_http posts: the decoded
    prompt + response tokens (skip_special_tokens=False, so the EOS stays), the prompt as
    the policy saw it, and the dataset label."""
    queries = [p + r + "<|im_end|>" for p, r in zip(prompts, responses, strict=True)]
    return {"query": queries, "prompts": prompts, "labels": labels}


# --------------------------------------------------------------------------- contract


def test_openrlhf_request_shape_gets_rewards_scores_and_extra_logs(served):
    srv, reward = served
    prompt = CHATML.format("SUBREDDIT: r/cooking\nPOST: my rice burns")
    payload = openrlhf_payload([prompt], ["Rice burns."], [None])
    response = httpx.post(srv.url + "/get_reward", json=payload, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    context = "SUBREDDIT: r/cooking\nPOST: my rice burns"
    want = len("Rice burns.") + len(context) / 1000
    assert body["rewards"] == pytest.approx([want]) and body["scores"] == body["rewards"]
    assert body["extra_logs"] == {"words": [2]}  # 1-D numeric details only
    assert reward.batches == [([context], ["Rice burns."])]


def test_openrlhf_labels_can_carry_the_context(tmp_path):
    reward = LengthReward()
    srv = Served(reward, context="label", max_wait_ms=0)
    try:
        payload = openrlhf_payload([CHATML.format("Summarize: a post")], ["ok"], ["a post"])
        assert httpx.post(srv.url + "/get_reward", json=payload).status_code == 200
        bad = openrlhf_payload([CHATML.format("x")], ["ok"], [3])
        response = httpx.post(srv.url + "/get_reward", json=bad)
        assert response.status_code == 422 and "label" in response.json()["error"]
    finally:
        srv.close()
    assert reward.batches == [(["a post"], ["ok"])]


def test_plain_score_route_returns_scores_and_details(served):
    srv, _ = served
    response = httpx.post(srv.url + "/score", json={"prompts": ["post a", "post b"],
                                                    "completions": ["x y", ""]})
    body = response.json()
    assert response.status_code == 200
    assert body["scores"] == pytest.approx([3.006, 0.006])
    assert body["details"]["words"] == [2, 0] and np.array(body["details"]["pair"]).shape == (2, 2)


def test_health_reports_the_reward_and_counts(served):
    srv, _ = served
    httpx.post(srv.url + "/score", json={"prompts": ["p"], "completions": ["c"]})
    body = httpx.get(srv.url + "/health").json()
    assert body["status"] == "ok" and body["reward"] == "length"
    assert (body["requests"], body["batches"], body["rows"]) == (1, 1, 1)


# --------------------------------------------------------------------------- batching


async def _concurrent(url: str, n: int) -> list[dict]:
    async with httpx.AsyncClient(timeout=30) as client:
        posts = [client.post(url + "/score", json={"prompts": [f"post {i}"],
                                                   "completions": [f"summary {i}"]})
                 for i in range(n)]
        return [r.json() for r in await asyncio.gather(*posts)]


def test_concurrent_requests_are_scored_in_one_reward_call(served):
    srv, reward = served
    bodies = asyncio.run(_concurrent(srv.url, 8))
    assert len(reward.batches) == 1 and len(reward.batches[0][0]) == 8
    for i, body in enumerate(bodies):  # each request got its own row back
        assert body["scores"] == pytest.approx([len(f"summary {i}") + len(f"post {i}") / 1000])


def test_batches_stop_at_max_batch_size():
    reward = LengthReward()
    srv = Served(reward, max_batch_size=3, max_wait_ms=300)
    try:
        asyncio.run(_concurrent(srv.url, 8))
    finally:
        srv.close()
    assert sorted(len(b[0]) for b in reward.batches) == [2, 3, 3]


def test_batching_off_scores_each_request_alone():
    reward = LengthReward()
    srv = Served(reward, batching=False)
    try:
        asyncio.run(_concurrent(srv.url, 5))
    finally:
        srv.close()
    assert [len(b[0]) for b in reward.batches] == [1] * 5


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("route", "body", "status", "message"), [
    ("/score", {"prompts": ["a", "b"], "completions": ["x"]}, 422, "each prompt needs"),
    ("/score", {"prompts": [1], "completions": ["x"]}, 422, "prompts.0"),
    ("/score", {"prompts": "a", "completions": "x"}, 422, "prompts"),
    ("/score", {"prompts": ["a"]}, 422, "completions"),
    ("/score", {"prompts": ["a"], "completions": ["x"], "extra": 1}, 422, "extra"),
    ("/get_reward", {"query": ["abc"]}, 422, "prompts"),
    ("/get_reward", {"query": ["abc"], "prompts": ["zz"]}, 422, "does not start with"),
    ("/get_reward", {"query": ["abc", "abd"], "prompts": ["ab"]}, 422, "2 queries but 1"),
])
def test_bad_input_is_rejected_with_a_4xx_and_a_message(served, route, body, status, message):
    srv, reward = served
    response = httpx.post(srv.url + route, json=body)
    assert response.status_code == status
    assert message in response.json()["error"]
    assert reward.batches == []


def test_body_that_is_not_json_or_too_large_is_rejected():
    reward = LengthReward()
    srv = Served(reward, max_body_bytes=1000)
    try:
        response = httpx.post(srv.url + "/score", content=b"{not json",
                              headers={"Content-Type": "application/json"})
        assert response.status_code == 400 and "not valid JSON" in response.json()["error"]
        big = {"prompts": ["x" * 2000], "completions": ["y"]}
        response = httpx.post(srv.url + "/score", json=big)
        assert response.status_code == 413 and "1000 bytes" in response.json()["error"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while reading
            yield b'{"prompts": ["' + b"x" * 800
            yield b"x" * 800 + b'"], "completions": ["y"]}'

        response = httpx.post(srv.url + "/score", content=chunks())
        assert response.status_code == 413
    finally:
        srv.close()
    assert reward.batches == []


def test_a_failing_reward_answers_500_with_its_error_never_a_score():
    srv = Served(LengthReward(fail=True))
    try:
        response = httpx.post(srv.url + "/score", json={"prompts": ["p"], "completions": ["c"]})
    finally:
        srv.close()
    assert response.status_code == 500
    assert "judge server unreachable" in response.json()["error"]


# --------------------------------------------------------------------------- helpers


def test_split_query_strips_trailing_end_tokens_only():
    assert split_query("P: hi<|im_end|>\n<|endoftext|>", "P: ") == "hi"
    assert split_query("P: a <|im_end|> b", "P: ") == "a <|im_end|> b"
    with pytest.raises(ValueError, match="does not start with its prompt"):
        split_query("other", "P: ")


def test_context_from_prompt_takes_the_last_user_turn():
    assert context_from_prompt(CHATML.format(" the post ")) == "the post"
    llama3 = ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nthe post<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert context_from_prompt(llama3) == "the post"
    assert context_from_prompt("TL;DR of: the post\n") == "TL;DR of: the post"


def test_direct_reward_behind_the_server_matches_in_process(tiny_model, tiny_tokenizer):
    from rewards.direct import DirectReward
    from rewards.judges.transformers_judge import TransformersJudge

    judge = TransformersJudge(tiny_model, tiny_tokenizer, batch_size=8)
    reward = reward_for_serving("direct", judge=judge, task="tldr")  # a Judge instance
    posts = ["POST: my rice burns", "POST: my knee hurts"]
    summaries = ["Rice burns.", "Knee pain."]
    want = DirectReward(judge=judge, task="tldr")(posts, summaries).scores
    srv = Served(reward, max_wait_ms=200)
    try:
        plain = httpx.post(srv.url + "/score", json={"prompts": posts, "completions": summaries})
        prompts = [CHATML.format(p) for p in posts]
        openrlhf = httpx.post(srv.url + "/get_reward",
                              json=openrlhf_payload(prompts, summaries, [None, None]))
    finally:
        srv.close()
    np.testing.assert_allclose(plain.json()["scores"], want, atol=1e-9)
    np.testing.assert_allclose(openrlhf.json()["rewards"], want, atol=1e-9)
    assert "direct_expected_score" in openrlhf.json()["extra_logs"]


# --------------------------------------------------------------------------- shutdown


SLOW_SERVER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from rewards.server import serve_reward
    from rlaif_gym.reward_protocol import CallableReward

    def slow(prompts, completions):
        print("scoring", len(prompts), flush=True)
        time.sleep(2.0)
        return np.full(len(prompts), 0.25)

    serve_reward(CallableReward(slow, name="slow"), port=int(sys.argv[1]), max_wait_ms=0,
                 log_level="warning")
""")


def test_graceful_shutdown_answers_the_batch_in_flight(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SERVER, str(port)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        started = time.monotonic()
        while True:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() - started < 60, "server did not start"
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        result: dict[str, Any] = {}

        def call() -> None:
            result["response"] = httpx.post(url + "/score", json={
                "prompts": ["p1", "p2"], "completions": ["c1", "c2"]}, timeout=30)

        client = threading.Thread(target=call)
        client.start()
        assert proc.stdout.readline().startswith("scoring 2")  # the batch is in flight
        proc.send_signal(signal.SIGTERM)
        client.join(timeout=30)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    response = result["response"]
    assert response.status_code == 200 and response.json()["scores"] == [0.25, 0.25]
    # uvicorn re-raises the signal once it has shut down: "killed by SIGTERM", after answering
    assert proc.returncode in (0, -signal.SIGTERM)
    with pytest.raises(httpx.TransportError):  # and it is gone
        httpx.get(url + "/health", timeout=1)


def test_payload_helper_matches_openrlhf_field_names():
    payload = openrlhf_payload(["p"], ["r"], ["l"])
    assert sorted(payload) == ["labels", "prompts", "query"]
    assert json.loads(json.dumps(payload))["query"] == ["pr<|im_end|>"]


# --------------------------------------------------------------------------- verl


def test_verl_reward_functions_call_the_server_as_verl_calls_them(served):
    from rewards.verl_reward import compute_score, compute_score_batch

    srv, reward = served
    # naive manager: keyword arguments, reward_kwargs merged in (get_custom_reward_fn)
    one = compute_score(data_source="tldr", solution_str="Rice burns.", ground_truth=None,
                        extra_info={"context": "POST: rice", "index": 0}, url=srv.url)
    assert one == {"score": pytest.approx(11 + 10 / 1000), "words": 2}
    # batch manager: the whole batch in one request
    many = compute_score_batch(data_sources=["tldr"] * 2, solution_strs=["a b", "c"],
                               ground_truths=["POST: one", "POST: two"],
                               extra_infos=[{}, {}], url=srv.url)
    assert [m["score"] for m in many] == pytest.approx([3.009, 1.009])
    assert [len(b[0]) for b in reward.batches] == [1, 2]
    with pytest.raises(ValueError, match="extra_info"):
        compute_score(solution_str="x", ground_truth=None, extra_info={}, url=srv.url)


def test_the_serve_reward_command_serves_the_direct_reward_until_ctrl_c():
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlaif_gym.cli", "serve-reward", "--reward", "direct",
         "--judge", "tiny-random", "--threads", "1", "--port", str(port)], cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        started = time.monotonic()
        while True:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() - started < 60, "server did not start"
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        body = {"prompts": ["SUBREDDIT: r/a\nTITLE: t\nPOST: a post"],
                "completions": ["a summary"]}
        response = httpx.post(url + "/score", json=body, timeout=60)
        assert response.status_code == 200
        (score,) = response.json()["scores"]
        assert -1.0 <= score <= 1.0
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (0, 130, -signal.SIGINT)
