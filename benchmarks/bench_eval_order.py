"""Benchmark: ``rlaif-gym evaluate``'s judging prompt by prompt vs comparison by comparison.

An evaluation judges several pairs of policies on the same prompts. Judged comparison by
comparison (the old order), consecutive judge calls change posts every time; judged prompt
by prompt (``evaluate_policies(prompt_major=True)``, the default), the comparisons of one
post follow each other, so the judge's prefix memo (``TransformersJudge(reuse_prefix=True)``)
runs the preamble and the post once for all of them. Both orders label the same items; the
labels agree up to batching noise.

The items: ``--n`` TL;DR posts, four texts per post (the human summary, its first half,
its first sentence, and the post's first 30 words) and all 6 pairs of them, judged in both
orders by ``rewards.evaluation.judge_pairwise``. The two orders run alternately, ``--repeat``
times each, in one process with the same judge.

    PYTHONPATH=. python benchmarks/bench_eval_order.py --data-dir ../shared/data --n 8 \\
        --judge qwen2.5-coder-0.5b-instruct --threads 2 --out reports/eval_order_qwen0.5b.json
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from collections.abc import Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _report import command_line, write_json  # noqa: E402

from rewards.evaluation import judge_pairwise  # noqa: E402
from rewards.judges import load_judge  # noqa: E402
from rlaif_gym.tasks import get_task  # noqa: E402


def texts_of(post: str, reference: str) -> list[str]:
    """Four candidate summaries of one post."""
    words = reference.split()
    return [reference, " ".join(words[: max(1, len(words) // 2)]),
            reference.split(". ")[0], " ".join(post.split()[:30])]


def run(judge, items: Sequence[tuple[int, int, int]], contexts, texts) -> tuple[float, list]:
    start = time.perf_counter()
    labels = list(judge_pairwise(judge, "tldr", [contexts[p] for p, _, _ in items],
                                 [texts[p][a] for p, a, _ in items],
                                 [texts[p][b] for p, _, b in items]))
    return time.perf_counter() - start, [label.p_first for label in labels]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--n", type=int, default=8, help="posts")
    parser.add_argument("--judge", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    records = get_task("tldr").load_prompts(split="test", data_dir=args.data_dir)[: args.n]
    contexts = [r.text for r in records]
    texts = [texts_of(r.text, r.reference) for r in records]
    pairs = list(itertools.combinations(range(4), 2))
    prompt_major = [(p, a, b) for p in range(len(records)) for a, b in pairs]
    pair_major = [(p, a, b) for a, b in pairs for p in range(len(records))]
    judge = load_judge(args.judge, num_threads=args.threads, batch_size=8)
    run(judge, prompt_major[:2], contexts, texts)  # warm-up
    seconds = {"prompt_major": [], "pair_major": []}
    labels = {}
    for _ in range(args.repeat):
        for name, items in (("pair_major", pair_major), ("prompt_major", prompt_major)):
            judge.clear_prefix_cache()
            s, p = run(judge, items, contexts, texts)
            seconds[name].append(s)
            labels[name] = dict(zip(items, p, strict=True))
    diff = max(abs(labels["prompt_major"][k] - labels["pair_major"][k]) for k in prompt_major)
    best = {k: min(v) for k, v in seconds.items()}
    result = {
        "judge": args.judge, "threads": args.threads, "posts": len(records),
        "comparisons": len(prompt_major), "seconds": seconds,
        "comparisons_per_s": {k: len(prompt_major) / v for k, v in best.items()},
        "speedup_prompt_major": best["pair_major"] / best["prompt_major"],
        "max_abs_label_difference": diff,
        "command": command_line(__file__, argv),
    }
    print(f"{len(prompt_major)} comparisons ({len(records)} posts x 6 pairs, both orders), "
          f"{args.judge}, {args.threads} threads: pair by pair {best['pair_major']:.1f} s, "
          f"prompt by prompt {best['prompt_major']:.1f} s -> "
          f"{result['speedup_prompt_major']:.2f}x; labels within {diff:.2e}")
    if args.out:
        write_json(args.out, result)
    return 0 if np.isfinite(diff) else 1


if __name__ == "__main__":
    sys.exit(main())
