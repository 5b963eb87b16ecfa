"""Win rate of policy A over policy B on held-out completions, judged by an LLM.

Reads JSON lines ``{policy, prompt_id, context, completion, n_tokens}`` (as written by
``research/sample_heldout.py``), pairs A's and B's completions of the same prompt, labels
each pair with :func:`rewards.evaluation.judge_pairwise` (both orders averaged) and prints /
writes the win rate with its 95% Wilson interval and N, the Appendix-J length-controlled win
rate, and both policies' mean lengths. The per-pair labels are written too (without the
prompt text, which is data from ``../shared/data``).

    PYTHONPATH=. python research/judge_heldout.py COMPLETIONS.jsonl --a rl-ai-rm --b sft \\
        --judge qwen2.5-coder-1.5b-instruct --threads 1 --out reports/x.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("completions", nargs="+", help="JSONL files (merged)")
    p.add_argument("--a", required=True, help="policy A name")
    p.add_argument("--b", required=True, help="policy B name")
    p.add_argument("--judge", default="qwen2.5-coder-1.5b-instruct")
    p.add_argument("--prompt", default="base", help="preamble variant (%(default)s)")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True, help="summary JSON (labels go to OUT.labels.jsonl)")
    args = p.parse_args()

    import torch

    from rewards.evaluation import judge_pairwise, length_controlled_win_rate, win_rate
    from rewards.judges import load_judge

    torch.set_num_threads(args.threads)
    rows: dict[str, dict[str, dict]] = {}
    for path in args.completions:
        with open(path, encoding="utf-8") as f:
            for line in f:
                d = json.loads(line)
                rows.setdefault(d["policy"], {})[d["prompt_id"]] = d
    for name in (args.a, args.b):
        if name not in rows:
            raise SystemExit(f"policy {name!r} not in {sorted(rows)}")
    ids = sorted(set(rows[args.a]) & set(rows[args.b]))[: args.limit]
    a = [rows[args.a][i] for i in ids]
    b = [rows[args.b][i] for i in ids]
    judge = load_judge(args.judge, num_threads=args.threads)
    t0 = time.perf_counter()
    labels = list(judge_pairwise(judge, "tldr", [r["context"] for r in a],
                                 [r["completion"] for r in a], [r["completion"] for r in b],
                                 ids, prompt=args.prompt, progress=True))
    seconds = time.perf_counter() - t0
    p_first = [lab.p_first for lab in labels]
    rate = win_rate(p_first)
    len_a = [len(r["completion"]) for r in a]
    len_b = [len(r["completion"]) for r in b]
    lc = length_controlled_win_rate(p_first, len_a, len_b)
    summary = {
        "a": args.a, "b": args.b, "judge": args.judge, "prompt": args.prompt,
        "files": args.completions, "n": rate.n, "win_rate": rate.rate,
        "ci_low": rate.ci_low, "ci_high": rate.ci_high, "ties": rate.ties,
        "length_controlled": dataclasses.asdict(lc) if dataclasses.is_dataclass(lc) else lc,
        "mean_chars_a": sum(len_a) / len(len_a), "mean_chars_b": sum(len_b) / len(len_b),
        "mean_tokens_a": sum(r.get("n_tokens", 0) for r in a) / len(a),
        "mean_tokens_b": sum(r.get("n_tokens", 0) for r in b) / len(b),
        "judge_seconds": seconds,
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, default=float)
    with open(args.out.removesuffix(".json") + ".labels.jsonl", "w", encoding="utf-8") as f:
        for i, lab in zip(ids, labels, strict=True):
            f.write(json.dumps({"prompt_id": i, "p_first": lab.p_first,
                                "p_order_ab": lab.p_order_ab,
                                "p_order_ba": lab.p_order_ba}) + "\n")
    print(f"{args.a} vs {args.b} judged by {args.judge}: win rate {rate.rate:.1%} "
          f"[{rate.ci_low:.1%}, {rate.ci_high:.1%}] N={rate.n} ties={rate.ties}; "
          f"length-controlled {summary['length_controlled']}; mean chars "
          f"{summary['mean_chars_a']:.0f} vs {summary['mean_chars_b']:.0f}; {seconds:.0f} s")


if __name__ == "__main__":
    main()
