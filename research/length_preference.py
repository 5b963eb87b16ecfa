"""How often a labeler, and the human raters, prefer the longer TL;DR summary.

For each label file: over the pairs whose two summaries differ in length (characters), the
share where the AI preference (``p_first > 0.5``, both orders averaged) picks the longer
summary, next to the share where the human choice does. A labeler far from the human share is
judging length, not content (e.g. SmolLM2 picks the shorter summary 68% of the time).

Example::

    PYTHONPATH=. python research/length_preference.py --data-dir ../shared/data \\
        reports/labels/tldr_hc-base-0shot-*.jsonl
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rewards.alignment import read_labels_jsonl
from rlaif_gym.data.loaders import load_tldr_comparisons


def length_preference(labels: Path, summaries: dict[str, tuple[str, str]]) -> dict:
    """Counts for one label file: pairs of unequal length, AI and human longer-picks."""
    n = ai_longer = human_longer = 0
    for record in read_labels_jsonl(labels).records:
        pair = summaries.get(record["id"])
        if pair is None or len(pair[0]) == len(pair[1]) or record.get("human_choice") is None:
            continue
        longer = 0 if len(pair[0]) > len(pair[1]) else 1
        n += 1
        ai_longer += (0 if record["p_first"] > 0.5 else 1) == longer
        human_longer += record["human_choice"] == longer
    return {"labels": str(labels), "n": n,
            "ai_picks_longer": ai_longer / n if n else None,
            "human_picks_longer": human_longer / n if n else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("labels", nargs="+", type=Path)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    summaries = {c.id: c.summaries for c in load_tldr_comparisons(data_dir=args.data_dir)}
    for path in args.labels:
        r = length_preference(path, summaries)
        if not r["n"]:
            print(f"{path.name}: no TL;DR pair of unequal lengths")
            continue
        print(f"{path.name:48s} N={r['n']}  AI picks the longer summary "
              f"{r['ai_picks_longer']:.1%}, humans {r['human_picks_longer']:.1%}")


if __name__ == "__main__":
    main()
