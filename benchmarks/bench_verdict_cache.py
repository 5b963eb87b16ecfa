"""The verdict cache, side by side: the same pairwise judging twice against a real judge
behind HTTP, the second time with a new judge client on the same cache file (a repeated
evaluation, or a resumed run).

The judge (``--judge``, default the packaged Qwen2.5-Coder-0.5B) is served by a local
transformers-backed OpenAI-compatible server (``_completion_stub.py``, float32, one torch
thread, vLLM-style candidate ids); :func:`rewards.evaluation.judge_pairwise` labels ``--n``
TL;DR pairs (human-labeled summary pairs, both orders: 2 requests per pair) through
:class:`rewards.judges.openai_judge.OpenAIJudge` with ``verdict_cache=``. Prints the server's
request count and the wall time of each pass, the time ratio, and the largest difference of
``p_first`` between the passes (0.0: the same numbers). Run from the repo root::

    PYTHONPATH=. python benchmarks/bench_verdict_cache.py --n 20 \\
        --out reports/verdict_cache_qwen0.5b.json

With ``--evaluate`` the two passes are the command line ``rlaif-gym evaluate --backend openai
--verdict-cache FILE`` itself, each into a new output folder: SmolLM2 vs the human reference
summaries on ``--n`` TL;DR test prompts (the same seeded completions both times), and the
record compares the two passes' completions, judgments and win rates.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _completion_stub import CompletionStub  # noqa: E402
from _report import command_line, write_json  # noqa: E402

from rewards.evaluation import judge_pairwise  # noqa: E402
from rewards.judges.openai_judge import OpenAIJudge  # noqa: E402
from rlaif_gym.data import load_preference_pairs  # noqa: E402
from rlaif_gym.models import load_causal_lm, load_tokenizer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--judge", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--n", type=int, default=20, help="pairs (2 judge prompts each)")
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--evaluate", action="store_true",
                        help="the passes are `rlaif-gym evaluate` runs (see the docstring)")
    parser.add_argument("--out", default=None, help="JSON result file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.evaluate:
        return _evaluate_twice(args, argv)

    pairs = load_preference_pairs("tldr", data_dir=args.data_dir, high_confidence=True,
                                  source="local", limit=args.n)
    contexts = [p.context for p in pairs]
    a, b = [p.responses[0] for p in pairs], [p.responses[1] for p in pairs]

    def one_pass(stub: CompletionStub, tokenizer: Any, cache: Path, _out: Path) -> dict:
        judge = OpenAIJudge(tokenizer, stub.url, server="vllm", top_logprobs=2,
                            max_concurrency=args.concurrency, verdict_cache=cache,
                            name=args.judge)
        started = time.perf_counter()
        labels = list(judge_pairwise(judge, "tldr", contexts, a, b))
        seconds = time.perf_counter() - started
        stats = judge.stats.snapshot()
        judge.close()
        return {"seconds": seconds, "cache_hits": stats.cache_hits,
                "cache_misses": stats.cache_misses, "calls": stats.calls,
                "p_first": [x.p_first for x in labels]}

    passes = _two_passes(args, one_pass)
    first, repeat = passes
    diff = max(abs(x - y) for x, y in zip(first["p_first"], repeat["p_first"], strict=True))
    result = {
        "command": command_line(__file__, argv),
        "judge": args.judge, "pairs": len(pairs), "judge_prompts": 2 * len(pairs),
        "server": "transformers-backed OpenAI-compatible stub, float32, 1 torch thread",
        "passes": [{k: v for k, v in p.items() if k != "p_first"} for p in passes],
        "max_abs_diff_p_first": diff,
        "time_ratio_first_over_repeat": first["seconds"] / repeat["seconds"],
    }
    for p in result["passes"]:
        print(f"{p['pass']:>7}: {p['server_requests']} server requests, {p['calls']} judge "
              f"calls, {p['cache_hits']} cache hits, {p['seconds']:.2f} s")
    print(f"max |p_first difference| = {diff}; first/repeat time = "
          f"{result['time_ratio_first_over_repeat']:.0f}x")
    if args.out:
        write_json(args.out, result)
    return result


def _two_passes(args: argparse.Namespace,
                one_pass: Callable[[CompletionStub, Any, Path, Path], dict]) -> list[dict]:
    """The judge (``--judge``, float32, 1 thread) behind the stub server and one verdict cache
    file; ``one_pass(stub, tokenizer, cache, out)`` runs twice ("first", "repeat", each with
    its own scratch folder ``out``). Each pass's record gains its name and the requests the
    server received during it."""
    tokenizer = load_tokenizer(args.judge)
    model = load_causal_lm(args.judge, dtype="float32", num_threads=1).eval()
    passes = []
    with tempfile.TemporaryDirectory() as tmp, CompletionStub(model, tokenizer) as stub:
        cache = Path(tmp) / "verdicts.sqlite"
        for name in ("first", "repeat"):
            before = stub.requests
            record = one_pass(stub, tokenizer, cache, Path(tmp) / f"pass-{name}")
            passes.append({"pass": name, "server_requests": stub.requests - before,
                           **record})
    return passes


def _evaluate_twice(args: argparse.Namespace, argv: list[str] | None) -> dict:
    import json

    from rlaif_gym.cli import main as cli

    def one_pass(stub: CompletionStub, _tokenizer: Any, cache: Path, out: Path) -> dict:
        started = time.perf_counter()
        code = cli(["evaluate", "--task", "tldr", "--policy", "SFT=smollm2-135m-instruct",
                    "--policy", "REF=reference", "--pair", "SFT:REF", "--n", str(args.n),
                    "--data-dir", args.data_dir, "--split", "test",
                    "--max-new-tokens", "32", "--judge", args.judge,
                    "--backend", "openai", "--base-url", stub.url, "--server", "vllm",
                    "--concurrency", str(args.concurrency), "--verdict-cache", str(cache),
                    "--threads", "1", "--no-progress", "--out", str(out)])
        seconds = time.perf_counter() - started
        if code != 0:
            raise SystemExit(f"rlaif-gym evaluate failed ({code})")
        summary = json.loads((out / "evaluation.json").read_text())
        return {"seconds": seconds, "win_rate": summary["comparisons"][0]["win_rate"],
                "completions": sorted(p.read_text() for p in out.rglob("completions*.jsonl")),
                "judgments": sorted((out / "judgments.jsonl").read_text().splitlines())}

    passes = _two_passes(args, one_pass)
    first, repeat = passes
    result = {
        "command": command_line(__file__, argv),
        "judge": args.judge, "prompts": args.n, "pair": "SFT:REF", "policy": "smollm2",
        "server": "transformers-backed OpenAI-compatible stub, float32, 1 torch thread",
        "passes": [{k: p[k] for k in ("pass", "server_requests", "seconds", "win_rate")}
                   for p in passes],
        "same_completions": first["completions"] == repeat["completions"],
        "same_judgments": first["judgments"] == repeat["judgments"],
        "same_win_rate": first["win_rate"] == repeat["win_rate"],
    }
    for p in result["passes"]:
        print(f"{p['pass']:>7}: rlaif-gym evaluate sent {p['server_requests']} requests, "
              f"{p['seconds']:.1f} s, win rate {p['win_rate']['rate']:.3f}")
    print(f"same completions {result['same_completions']}, same judgments "
          f"{result['same_judgments']}, same win rate {result['same_win_rate']}")
    if args.out:
        write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
