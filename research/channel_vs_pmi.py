"""Noisy-channel scores against PMI labels on the first pairs of the TL;DR choosing half.

PMI labels (``rlaif-gym label --prompt pmi``) score a summary ``r`` of a post ``x`` by
``log P(r | x, "TL;DR:") - log P(r | "TL;DR:")``. By Bayes' rule that is
``log P(x | r) - log P(x)``, and the "channel" direction estimates it directly: the judge,
used as a plain language model, reads the summary FIRST and then the post::

    channel(r) = log P(x + "\\n" | prefix(r))      (summed over the post's tokens)
    P(first)   = sigmoid(channel(r_0) - channel(r_1))   (log P(x) is the same for both)

(Min et al. 2022, "Noisy channel language model prompting for few-shot text
classification".) Two prefixes are tried, as the PMI prompt variants were in session 8:
``v1 = "TL;DR: {r}\\n\\n"`` and ``v2 = "Summary: {r}\\n\\nFull text:\\n"``. Each
(post, summary) is scored once with :meth:`Judge.continuation_logprobs`. The script prints
the accuracy against the human choice of v1, v2, and of the committed PMI and Base 0-shot
labels on the same pairs. It also prints the correlation between channel and PMI log-odds.
Only the choosing half is used; the report half is not touched.

Run from the repo root (about 14 min for 60 pairs on 2 CPU cores)::

    PYTHONPATH=. python research/channel_vs_pmi.py --data-dir ../shared/data --n 60 \\
        --out research/results/channel_vs_pmi_choose60.json
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks._report import command_line, write_json  # noqa: E402
from rewards.alignment import read_labels_jsonl  # noqa: E402
from rewards.judges import load_judge  # noqa: E402
from rlaif_gym.data import load_preference_pairs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {"v1": "TL;DR: {r}\n\n", "v2": "Summary: {r}\n\nFull text:\n"}
LABELS = {"pmi": "tldr_hc-pmi-qwen1.5b.jsonl", "base_0shot": "tldr_hc-base-0shot-qwen1.5b.jsonl"}


def _logit(p: float) -> float:
    q = min(max(p, 1e-15), 1.0 - 1e-15)
    return float(np.log(q) - np.log1p(-q))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--ids",
                        default=str(REPO / "research/results/tldr_hc_choose_ids_seed0.txt"))
    parser.add_argument("--n", type=int, default=60, help="the first N ids of --ids")
    parser.add_argument("--judge", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out",
                        default=str(REPO / "research/results/channel_vs_pmi_choose60.json"))
    args = parser.parse_args(argv)

    order = [line.strip() for line in Path(args.ids).read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    pairs = {str(p.id): p for p in load_preference_pairs(
        "tldr", data_dir=args.data_dir, high_confidence=True)}
    chosen = [pairs[i] for i in order[:args.n]]
    labels = {k: {r["id"]: r for r in read_labels_jsonl(REPO / "reports/labels" / f).records}
              for k, f in LABELS.items()}
    judge = load_judge(args.judge, num_threads=args.threads)

    cache: dict[tuple[str, str, str], float] = {}
    rows = []
    start = time.perf_counter()
    for k, pair in enumerate(chosen):
        row = {"id": str(pair.id), "human_choice": pair.human_choice}
        for name, fmt in VARIANTS.items():
            scores = []
            for response in pair.responses:
                key = (name, pair.context, response)
                if key not in cache:
                    cache[key] = float(judge.continuation_logprobs(
                        fmt.format(r=response.strip()), [pair.context.strip() + "\n"])[0])
                scores.append(cache[key])
            row[name] = scores[0] - scores[1]
        for name, by_id in labels.items():
            row[name] = _logit(by_id[row["id"]]["p_first"])
        rows.append(row)
        print(f"{k + 1}/{len(chosen)} {row['id']} v1 {row['v1']:+.2f} v2 {row['v2']:+.2f} "
              f"pmi {row['pmi']:+.2f} ({time.perf_counter() - start:.0f} s)", flush=True)

    human = np.array([r["human_choice"] for r in rows])
    columns = ["v1", "v2", *LABELS]
    x = {c: np.array([r[c] for r in rows]) for c in columns}
    accuracy = {c: float(np.mean(np.where(x[c] > 0, 0, 1) == human)) for c in columns}
    corr = np.corrcoef(np.stack([x[c] for c in columns])).round(3).tolist()
    agree = {c: float(np.mean((x[c] > 0) == (x["pmi"] > 0))) for c in ("v1", "v2")}
    print(f"\naccuracy vs the human choice, first {len(rows)} choosing-half pairs: "
          + ", ".join(f"{c} {100 * a:.1f}%" for c, a in accuracy.items()))
    print(f"decision agreement with PMI: {agree}; correlation of log-odds {columns}: {corr}")
    write_json(args.out, {"command": command_line(__file__, argv), "judge": args.judge,
                          "n": len(rows), "variants": VARIANTS, "accuracy": accuracy,
                          "agreement_with_pmi": agree, "columns": columns, "correlation": corr,
                          "seconds": time.perf_counter() - start, "rows": rows})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
