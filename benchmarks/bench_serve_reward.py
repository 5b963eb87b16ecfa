"""``serve-reward`` throughput, side by side: 1 client vs 8 concurrent clients, cross-request
batching on vs off, same judge, same prompts.

The d-RLAIF reward (``direct``, template ``tldr``) on an in-process transformers judge
(``--judge``, default the packaged Qwen2.5-Coder-0.5B, float32, one torch thread) is served by
:func:`rewards.server.create_app` on uvicorn (loopback). ``--n`` TL;DR posts with their
reference summaries are scored through ``POST /get_reward`` one query per request, the way
OpenRLHF sends them (chat-templated prompt + summary + ``<|im_end|>``): by 1 client one after
another, or by 8 concurrent clients sharing them. Each configuration runs once, in the same
process, one after the other after a warm-up request. Prints rows/s per configuration and the
ratios to 1 client; checks that every configuration got the same scores. Run from the repo
root::

    PYTHONPATH=. python benchmarks/bench_serve_reward.py --n 16 \\
        --out reports/serve_reward_qwen0.5b.json
    PYTHONPATH=. python benchmarks/bench_serve_reward.py --judge tiny-random --n 64
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import uvicorn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import command_line, write_json  # noqa: E402

from rewards.direct import DirectReward  # noqa: E402
from rewards.judges.llamacpp_server import free_port  # noqa: E402
from rewards.judges.transformers_judge import TransformersJudge  # noqa: E402
from rewards.server import create_app  # noqa: E402
from rlaif_gym.data import format_tldr_post, load_tldr_posts  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHATML = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
CONFIGS = [("1 client, batching off", 1, False), ("1 client, batching on", 1, True),
           ("8 clients, batching off", 8, False), ("8 clients, batching on", 8, True)]


class Served:
    def __init__(self, app: Any) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.app = app
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


async def run_clients(url: str, queries: list[dict], clients: int) -> list[float]:
    """Each client sends its share of the queries one after another; returns the scores."""
    scores: list[float] = [float("nan")] * len(queries)

    async def client(k: int, http: httpx.AsyncClient) -> None:
        for i in range(k, len(queries), clients):
            response = await http.post(url + "/get_reward", json=queries[i])
            response.raise_for_status()
            scores[i] = response.json()["rewards"][0]

    async with httpx.AsyncClient(timeout=600) as http:
        await asyncio.gather(*(client(k, http) for k in range(clients)))
    return scores


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--judge", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--n", type=int, default=16, help="queries per configuration")
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=20.0)
    parser.add_argument("--out", default=None, help="JSON result file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    if args.judge == "tiny-random":
        from rlaif_gym.testing import make_tiny_causal_lm, make_tiny_tokenizer

        judge = TransformersJudge(make_tiny_causal_lm(), make_tiny_tokenizer(),
                                  batch_size=args.max_batch_size)
    else:
        judge = TransformersJudge(args.judge, dtype="float32", num_threads=1,
                                  batch_size=args.max_batch_size)
    reward = DirectReward(judge=judge, task="tldr", batch_size=args.max_batch_size)
    posts = list(load_tldr_posts(data_dir=args.data_dir, source="local"))[:args.n]
    queries = []
    for p in posts:
        prompt = CHATML.format(format_tldr_post(p.subreddit, p.title, p.post))
        queries.append({"query": [prompt + p.summary + "<|im_end|>"], "prompts": [prompt],
                        "labels": [None]})

    rows = []
    reference: list[float] | None = None
    for label, clients, batching in CONFIGS:
        served = Served(create_app(reward, max_batch_size=args.max_batch_size,
                                   max_wait_ms=args.max_wait_ms, batching=batching))
        try:
            asyncio.run(run_clients(served.url, queries[:1], 1))  # warm-up
            stats = served.app.state.scorer.stats
            batches_before = stats.batches
            started = time.perf_counter()
            scores = asyncio.run(run_clients(served.url, queries, clients))
            seconds = time.perf_counter() - started
            sizes = stats.batch_sizes[batches_before:]
        finally:
            served.close()
        if reference is None:
            reference = scores
        diff = float(np.max(np.abs(np.subtract(scores, reference))))
        rows.append({"config": label, "clients": clients, "batching": batching,
                     "seconds": seconds, "rows_per_s": len(queries) / seconds,
                     "reward_calls": len(sizes), "mean_batch": float(np.mean(sizes)),
                     "max_abs_score_diff_vs_first": diff})
        print(f"{label:>25}: {len(queries) / seconds:7.2f} rows/s, {len(sizes)} reward calls "
              f"(mean batch {np.mean(sizes):.1f}), max |score diff| {diff:.2e}", flush=True)
    base = rows[0]["rows_per_s"]
    for row in rows:
        row["ratio_vs_1_client_batching_off"] = row["rows_per_s"] / base
    on8 = next(r for r in rows if r["clients"] == 8 and r["batching"])
    off8 = next(r for r in rows if r["clients"] == 8 and not r["batching"])
    on1 = next(r for r in rows if r["clients"] == 1 and r["batching"])
    result = {
        "command": command_line(__file__, argv),
        "judge": args.judge, "queries": len(queries), "torch_threads": 1,
        "max_batch_size": args.max_batch_size, "max_wait_ms": args.max_wait_ms,
        "configs": rows,
        "ratio_8_clients_over_1_batching_on": on8["rows_per_s"] / on1["rows_per_s"],
        "ratio_8_clients_over_1_batching_off": off8["rows_per_s"] / base,
        "ratio_batching_on_over_off_8_clients": on8["rows_per_s"] / off8["rows_per_s"],
    }
    print(f"8 clients / 1 client: batching on {result['ratio_8_clients_over_1_batching_on']:.2f}"
          f"x, off {result['ratio_8_clients_over_1_batching_off']:.2f}x; with 8 clients "
          f"batching on / off {result['ratio_batching_on_over_off_8_clients']:.2f}x")
    if args.out:
        write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
