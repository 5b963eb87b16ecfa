"""Summarize a training run for a report: reward of the first vs last K steps (mean and std
over steps), KL at the end, and a few held-out completions before (SFT) and after (RL).

    PYTHONPATH=. python research/summarize_run.py runs/x/metrics.csv \\
        --completions heldout.jsonl --before sft --after rl --k 10 --examples 3
"""

from __future__ import annotations

import argparse
import json
import statistics

from agents.train import read_metrics


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("metrics", help="metrics.csv of a train run")
    p.add_argument("--k", type=int, default=10, help="steps at each end (%(default)s)")
    p.add_argument("--completions", default=None, help="JSONL of held-out completions")
    p.add_argument("--before", default="sft")
    p.add_argument("--after", default="rl")
    p.add_argument("--examples", type=int, default=3)
    p.add_argument("--chars", type=int, default=300, help="truncate completions (%(default)s)")
    args = p.parse_args()

    rows = read_metrics(args.metrics)
    reward = [r["reward"] for r in rows]
    kl = [r["kl"] for r in rows]
    k = args.k
    first, last = reward[:k], reward[-k:]
    print(f"{len(rows)} steps; reward first {k}: {statistics.mean(first):.4f} +- "
          f"{statistics.stdev(first):.4f}; last {k}: {statistics.mean(last):.4f} +- "
          f"{statistics.stdev(last):.4f} (mean +- std over steps); difference "
          f"{statistics.mean(last) - statistics.mean(first):+.4f}, standard error "
          f"{(statistics.variance(first) / k + statistics.variance(last) / k) ** 0.5:.4f}")
    print(f"KL (nats per sequence): last step {kl[-1]:.3f}, mean of the last {k} "
          f"{statistics.mean(kl[-k:]):.3f}; mean completion length last {k}: "
          f"{statistics.mean(r['completion_length'] for r in rows[-k:]):.1f} tokens")
    if args.completions is None:
        return
    by: dict[str, dict[str, dict]] = {}
    with open(args.completions, encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            by.setdefault(d["prompt_id"], {})[d["policy"]] = d
    shown = 0
    for pid in sorted(by):
        pair = by[pid]
        if args.before not in pair or args.after not in pair:
            continue
        if pair[args.before]["completion"] == pair[args.after]["completion"]:
            continue  # same text: nothing to compare
        print(f"\n[{pid}]")
        for name in (args.before, args.after):
            text = " ".join(pair[name]["completion"].split())[: args.chars]
            print(f"  {name:>10}: {text}")
        shown += 1
        if shown == args.examples:
            break


if __name__ == "__main__":
    main()
