"""Does the d-RLAIF direct score separate a post's own reference TL;DR from another post's?

For N TL;DR posts (the first N of the data folder's posts), the judge scores
``(post_i, reference_i)`` (matched) and ``(post_i, reference_j)`` with ``j = (i + 1) mod N``
(mismatched: a real, fluent summary of a different post). Reports

* AUC: P(score(matched) > score(mismatched)) over all matched x mismatched pairs
  (Mann-Whitney, ties count half), with a bootstrap 95% CI over posts;
* paired accuracy: share of posts whose matched score beats its own mismatched score;
* mean expected score (1-10) of each group.

Run from the repo root::

    PYTHONPATH=. python research/direct_score_auc.py --data-dir ../shared/data --n 200 \
        --judge qwen2.5-coder-1.5b-instruct --threads 2 --out reports/direct_auc.json
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from benchmarks._report import write_json  # noqa: E402
from rewards.direct import direct_scores  # noqa: E402
from rewards.judges import load_judge  # noqa: E402
from rlaif_gym.data import format_tldr_post, load_tldr_posts  # noqa: E402


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Mann-Whitney AUC: P(pos > neg) + 0.5 P(pos == neg)."""
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--judge", default="qwen2.5-coder-1.5b-instruct")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    ap.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    posts = list(load_tldr_posts(data_dir=args.data_dir, source="local"))[: args.n]
    n = len(posts)
    if n < 2:
        raise SystemExit(f"need at least 2 posts, got {n}")
    contexts = [format_tldr_post(p.subreddit, p.title, p.post) for p in posts]
    matched = [p.summary for p in posts]
    mismatched = [posts[(i + 1) % n].summary for i in range(n)]

    judge = load_judge(args.judge, num_threads=args.threads, batch_size=args.batch_size)
    t0 = time.perf_counter()
    pos, neg = [], []
    for start in tqdm(range(0, n, args.batch_size), desc="direct score", unit="batch"):
        stop = min(n, start + args.batch_size)
        ctx = contexts[start:stop]
        responses = matched[start:stop] + mismatched[start:stop]
        scores = direct_scores(judge, "tldr", ctx + ctx, responses, batch_size=args.batch_size)
        k = stop - start
        pos.append(scores.expected[:k])
        neg.append(scores.expected[k:])
    elapsed = time.perf_counter() - t0
    pos_a, neg_a = np.concatenate(pos), np.concatenate(neg)

    rng = np.random.default_rng(args.seed)
    boots = []
    for _ in range(1000):
        idx = rng.integers(0, n, size=n)
        boots.append(auc(pos_a[idx], neg_a[idx]))
    result = {
        "judge": args.judge,
        "n_posts": n,
        "auc": auc(pos_a, neg_a),
        "auc_ci95": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))],
        "paired_accuracy": float(np.mean(pos_a > neg_a) + 0.5 * np.mean(pos_a == neg_a)),
        "mean_expected_matched": float(pos_a.mean()),
        "mean_expected_mismatched": float(neg_a.mean()),
        "seconds": elapsed,
        "responses_per_second": 2 * n / elapsed,
        "command": "PYTHONPATH=. python research/direct_score_auc.py "
        f"--n {args.n} --judge {args.judge} --threads {args.threads}",
    }
    print(json.dumps(result, indent=2))
    if args.out:
        write_json(args.out, result, indent=2)


if __name__ == "__main__":
    main()
