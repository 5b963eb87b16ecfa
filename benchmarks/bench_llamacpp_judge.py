"""d-RLAIF scoring through a llama.cpp server vs the in-process transformers judge, side by side.

The same N TL;DR score prompts (post + its human reference summary, template ``tldr``) go
through

1. :class:`rewards.judges.openai_judge.OpenAIJudge` talking to ``python -m llama_cpp.server``
   (started here on the packaged GGUF, ``--logits_all true``, or ``--server-url`` to use one
   already running), and
2. :class:`rewards.judges.transformers_judge.TransformersJudge` on the same weights
   (dequantized GGUF, ``--dtype``, default bfloat16),

one after the other (the server is stopped before the transformers run, so they do not share
the CPU). Prints prompts/s for each, the ratio, the mean/max absolute difference of the
expected scores (1-10) and their Pearson and Spearman correlations.

Needs ``pip install 'llama-cpp-python[server]==0.3.36'``. Run from the repo root::

    PYTHONPATH=. python benchmarks/bench_llamacpp_judge.py --n 100 --threads 2 \\
        --judge qwen2.5-coder-0.5b-instruct --out reports/llamacpp_vs_transformers.json

Notes: each score needs two requests (``prompt`` and ``prompt + "1"``, sent back to back so
the server reuses its KV cache). llama-cpp-python computes ``logprobs`` from logits kept for
EVERY prompt position (``logits_all``) and log-softmaxes all of them per request, so its cost
grows with the prompt length beyond the forward pass itself.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from rewards.direct import DirectScores, direct_scores  # noqa: E402
from rewards.judges import Judge  # noqa: E402
from rewards.judges.llamacpp_server import (  # noqa: E402
    INSTALL_HINT,
    LlamaCppServer,
    missing_server_modules,
)
from rlaif_gym.data import format_tldr_post, load_tldr_posts  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_json  # noqa: E402
from _stats import pearson, spearman  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def gguf_for(spec: str) -> Path:
    """The GGUF file of a packaged short name (joined once) or a ``.gguf`` path."""
    if spec.endswith(".gguf"):
        return Path(spec)
    from rlaif_gym.models import packaged_gguf_path

    return packaged_gguf_path(spec)


# --------------------------------------------------------------------------- runs


def timed_scores(judge: Judge, contexts: list[str], responses: list[str],
                 batch_size: int) -> tuple[DirectScores, float]:
    """Scores of all prompts and the wall time, after one warm-up prompt (not timed)."""
    direct_scores(judge, "tldr", contexts[:1], responses[:1], batch_size=1)
    start = time.perf_counter()
    scores = direct_scores(judge, "tldr", contexts, responses, batch_size=batch_size)
    return scores, time.perf_counter() - start


def run_llamacpp(args: argparse.Namespace, contexts: list[str], responses: list[str],
                 tokenizer: object) -> tuple[DirectScores, float, dict]:
    from rewards.judges.openai_judge import OpenAIJudge

    server, info = None, {}
    url = args.server_url
    if url is None:
        missing = missing_server_modules()
        if missing:
            raise SystemExit(f"llama-cpp-python server not installed (missing {missing}): "
                             f"{INSTALL_HINT}")
        gguf = gguf_for(args.judge)
        server = LlamaCppServer(gguf, alias=args.judge, threads=args.threads, n_ctx=args.n_ctx,
                                port=args.port, timeout=args.start_timeout).start()
        url = server.url
        info = {"gguf": str(gguf), "server_start_s": round(server.start_seconds, 2),
                "server_log": str(server.log)}
    try:
        judge = OpenAIJudge(tokenizer, url, model=args.judge, server="llamacpp",
                            top_logprobs=args.top_logprobs, max_concurrency=args.concurrency,
                            timeout=600.0)
        with judge:
            scores, seconds = timed_scores(judge, contexts, responses, args.batch_size)
    finally:
        if server is not None:
            server.stop()
    return scores, seconds, {"url": url, **info}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="number of TL;DR posts to score")
    ap.add_argument("--threads", type=int, default=2,
                    help="CPU threads for llama.cpp (n_threads, n_threads_batch) and torch")
    ap.add_argument("--judge", default="qwen2.5-coder-0.5b-instruct",
                    help="packaged short name (or a .gguf path) served and loaded")
    ap.add_argument("--dtype", default="bfloat16", help="transformers judge dtype")
    ap.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--batch-size", type=int, default=8, help="prompts per judge call")
    ap.add_argument("--concurrency", type=int, default=1,
                    help="HTTP requests in flight (llama_cpp.server runs one at a time)")
    ap.add_argument("--top-logprobs", type=int, default=1000,
                    help="top-N log-probabilities requested (the digits must be inside)")
    ap.add_argument("--n-ctx", type=int, default=4096)
    ap.add_argument("--server-url", default=None, help="use this running server instead")
    ap.add_argument("--port", type=int, default=0, help="port for the started server")
    ap.add_argument("--start-timeout", type=float, default=300.0)
    ap.add_argument("--out", default=None, help="also write the numbers as JSON here")
    args = ap.parse_args()
    if args.n < 2:
        raise SystemExit("--n must be >= 2")

    import torch

    from rewards.judges.transformers_judge import TransformersJudge
    from rlaif_gym.models import load_tokenizer

    torch.set_num_threads(args.threads)
    posts = list(load_tldr_posts(data_dir=args.data_dir, source="local"))[: args.n]
    contexts = [format_tldr_post(p.subreddit, p.title, p.post) for p in posts]
    responses = [p.summary for p in posts]
    n = len(posts)
    tokenizer = load_tokenizer(args.judge)
    lengths = [len(tokenizer(c)["input_ids"]) for c in contexts]
    print(f"{n} TL;DR posts (+ reference summaries) from {args.data_dir}; post tokens: "
          f"mean {np.mean(lengths):.0f}, max {max(lengths)}; judge {args.judge}, "
          f"{args.threads} threads", flush=True)

    llama_scores, llama_s, server = run_llamacpp(args, contexts, responses, tokenizer)
    print(f"llama.cpp server: {n / llama_s:.3f} prompts/s ({llama_s:.1f} s)", flush=True)

    reference = TransformersJudge(args.judge, dtype=args.dtype, num_threads=args.threads,
                                  batch_size=args.batch_size)
    hf_scores, hf_s = timed_scores(reference, contexts, responses, args.batch_size)
    print(f"transformers {args.dtype}: {n / hf_s:.3f} prompts/s ({hf_s:.1f} s)", flush=True)

    diff = np.abs(llama_scores.expected - hf_scores.expected)
    result = {
        "n": n,
        "judge": args.judge,
        "threads": args.threads,
        "dtype": args.dtype,
        "batch_size": args.batch_size,
        "concurrency": args.concurrency,
        "llamacpp_prompts_per_s": n / llama_s,
        "transformers_prompts_per_s": n / hf_s,
        "speed_ratio_llamacpp_over_transformers": hf_s / llama_s,
        "expected_score_mean_abs_diff": float(diff.mean()),
        "expected_score_max_abs_diff": float(diff.max()),
        "pearson": pearson(llama_scores.expected, hf_scores.expected),
        "spearman": spearman(llama_scores.expected, hf_scores.expected),
        "mean_expected_llamacpp": float(llama_scores.expected.mean()),
        "mean_expected_transformers": float(hf_scores.expected.mean()),
        "server": server,
    }
    print()
    print(f"{'':24}{'llama.cpp':>12}{'transformers':>14}")
    print(f"{'prompts/s':24}{result['llamacpp_prompts_per_s']:12.3f}"
          f"{result['transformers_prompts_per_s']:14.3f}")
    print(f"{'mean expected score':24}{result['mean_expected_llamacpp']:12.3f}"
          f"{result['mean_expected_transformers']:14.3f}")
    print(f"speed ratio (llama.cpp / transformers): "
          f"{result['speed_ratio_llamacpp_over_transformers']:.2f}x")
    print(f"expected score |diff|: mean {result['expected_score_mean_abs_diff']:.4f}, "
          f"max {result['expected_score_max_abs_diff']:.4f}")
    print(f"Pearson {result['pearson']:.4f}, Spearman {result['spearman']:.4f}")
    if args.out:
        write_json(args.out, result, indent=2)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
