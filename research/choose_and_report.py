"""Choose a judge variant + calibration on one half of the pairs, report it on the other.

Protocol (issue #3, the 75% goal for the 1.5B judge on TL;DR):

1. The high-confidence pairs are split in two halves BY POST with
   ``rewards.reward_model.split_pairs(pairs, test_fraction=0.5, seed=SEED)``: "choose" = its
   train side, "report" = its test side (``--seed``, default 0, the split_pairs default,
   fixed before any result was looked at).
2. Every label file of the task in ``--labels`` is a label set; each (label set x calibration
   method of :mod:`rewards.calibration`) is a candidate, its parameters fit on the choosing
   half only.
3. Candidates from label files whose ``judge`` contains ``--pool-judge`` (default ``1.5b``)
   may be chosen; the others are scored for comparison. The best on the choosing half by
   z_acc (ties: fewer parameters, lower log-loss, order) is chosen and reported on the report
   half with its 95% Wilson interval and N. Every candidate's report-half z_acc is printed
   too, for transparency only: it is not used to choose.
4. Selection "all pairs": label files covering every pair of the choosing half (a variant
   may be labeled on the choosing half only, ``rlaif-gym label --ids
   research/results/tldr_hc_choose_ids_seed0.txt``; if it is chosen the script says so and asks for
   its report half, ``--ids research/results/tldr_hc_report_ids_seed0.txt``). Selection "common
   subset": every label file, restricted to the ids they all cover (e.g. the first 120
   pairs), on the same post split.
5. ``--stack A B ...`` (repeatable): one more label set, ``stack(A, B, ...)``, the files'
   mean log-odds combined by a logistic regression FIT ON THE CHOOSING HALF only
   (:func:`research.stacking.stacked_records`; refit on each ``--repeat`` seed's choosing
   half). It is in the pool when every file is; the calibration methods then apply on top of
   it like on any label set (their fits, too, see the choosing half only).
6. ``--product A B`` (repeatable): one more label set, ``A x B``, the two files' labels
   combined as independent evidence (per-order log-odds added,
   :func:`research.stacking.product_records`, no parameter fit), e.g. a pairwise labeler
   times the pointwise one. It is in the pool when both files are.
7. ``--repeat R``: the "all pairs" selection is rerun on R other seeds (seed+1 .. seed+R) to
   show how much the chosen candidate and its report-half z_acc depend on the split.

Writes ``--out`` (JSON: ids and numbers only, no pair text) and prints markdown tables.
No model is loaded. Run from the repo root::

    PYTHONPATH=. python research/choose_and_report.py --data-dir ../shared/data \
        --out research/results/calibration_choose_report.json
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks._report import command_line  # noqa: E402
from research.stacking import (  # noqa: E402
    METHODS,
    Candidate,
    ChooseReport,
    HalfScore,
    choose_and_report,
    product_records,
    split_halves,
    stacked_records,
)
from rewards.alignment import alignment_report, read_labels_jsonl  # noqa: E402
from rlaif_gym.data import load_preference_pairs  # noqa: E402

GOAL = 0.75
REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- inputs


def read_label_sets(patterns: list[str], task: str, pair_ids: set[str]
                    ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, Any]],
                               list[str]]:
    """Label files matching ``patterns`` -> (name -> records of ``task`` whose id is a pair
    id, name -> info, notes). Files with no such record are left out (with a note)."""
    files = sorted({Path(f) for pattern in patterns for f in glob.glob(pattern)})
    sets: dict[str, list[dict[str, Any]]] = {}
    info: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    for path in files:
        read = read_labels_jsonl(path)
        records = [r for r in read.records if r.get("task") == task]
        kept = [r for r in records if str(r.get("id")) in pair_ids]
        if not kept:
            notes.append(f"{path.name}: no {task} label with a known pair id, left out")
            continue
        if len(kept) < len(records):
            notes.append(f"{path.name}: {len(records) - len(kept)} labels with unknown ids "
                         "ignored")
        if read.bad_tail is not None:
            notes.append(f"{path.name}: incomplete last line ignored (file being written?)")
        labelers = alignment_report(kept).labelers
        judges = sorted({str(r.get("judge")) for r in kept})
        sets[path.name] = kept
        shown = path.resolve()
        shown = shown.relative_to(REPO) if shown.is_relative_to(REPO) else shown
        info[path.name] = {"path": str(shown), "n_labels": len(kept), "labelers": labelers,
                           "judges": judges}
    return sets, info, notes


# --------------------------------------------------------------------------- output


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _loss(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _cell(s: HalfScore) -> str:
    if s.z_acc is None:
        return "n/a"
    return f"{_pct(s.z_acc)} [{_pct(s.ci_low)}, {_pct(s.ci_high)}] N={s.n}"


def _params(c: Candidate) -> str:
    return ", ".join(f"{k}={v:.3g}" for k, v in c.params.items()) or "-"


def markdown_table(result: ChooseReport, info: dict[str, dict[str, Any]]) -> str:
    head = ("| | label set (labeler) | method | params (fit on choose) | choose z_acc [95% CI] | "
            "choose log-loss | report z_acc [95% CI] (not used to choose) | report log-loss |")
    lines = [head, "|" + "---|" * 8]
    for k, c in enumerate(result.candidates):
        mark = "**chosen**" if k == result.chosen else ("" if c.in_pool else "(not in pool)")
        labeler = "; ".join(info[c.source]["labelers"])
        method = c.method if c.symmetric else f"{c.method} (offset)"
        lines.append(
            f"| {mark} | {c.source} ({labeler}) | {method} | {_params(c)} | {_cell(c.choose)} | "
            f"{_loss(c.choose.log_loss)} | {_cell(c.report)} | {_loss(c.report.log_loss)} |")
    return "\n".join(lines)


def summary(result: ChooseReport) -> dict[str, Any] | None:
    c = result.chosen_candidate
    if c is None:
        return None
    return {"source": c.source, "method": c.method, "params": c.params,
            "choose": c.choose.to_dict(), "report": c.report.to_dict(),
            "reaches_goal": c.report.z_acc is not None and c.report.z_acc >= GOAL,
            "ci_above_goal": c.report.ci_low is not None and c.report.ci_low >= GOAL}


# --------------------------------------------------------------------------- main


def run_selection(sets: dict[str, list[dict[str, Any]]], names: list[str], choose: tuple,
                  report: tuple, methods: list[str], pool: set[str]) -> ChooseReport:
    return choose_and_report({n: sets[n] for n in names}, choose, report, methods=methods,
                             pool=[n for n in names if n in pool])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="tldr", choices=["tldr", "helpful", "harmless"])
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--labels", nargs="+", default=[str(REPO / "reports/labels/*.jsonl")],
                        help="label JSONL files or glob patterns")
    parser.add_argument("--seed", type=int, default=0, help="split seed (documented: 0)")
    parser.add_argument("--pool-judge", default="1.5b",
                        help="only label files whose judge contains this may be chosen")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--symmetric-only", action="store_true",
                        help="leave out methods with an offset (threshold, platt, logistic)")
    parser.add_argument("--product", nargs=2, action="append", default=[],
                        metavar=("A.jsonl", "B.jsonl"),
                        help="add the label set 'A x B' (label file names; log-odds added)")
    parser.add_argument("--stack", nargs="+", action="append", default=[],
                        metavar="A.jsonl",
                        help="add the label set 'stack(A, B, ...)' (label file names; a "
                             "logistic regression on their mean log-odds, fit on the choosing "
                             "half)")
    parser.add_argument("--repeat", type=int, default=20,
                        help="rerun the all-pairs selection on this many other seeds")
    parser.add_argument("--out",
                        default=str(REPO / "research/results/calibration_choose_report.json"))
    args = parser.parse_args(argv)
    methods = [m for m in args.methods if METHODS[m].symmetric or not args.symmetric_only]

    pairs = load_preference_pairs(args.task, data_dir=args.data_dir,
                                  high_confidence=args.task == "tldr")
    pair_ids = {str(p.id) for p in pairs if p.human_choice is not None}
    choose_ids, report_ids = split_halves(pairs, seed=args.seed)
    sets, info, notes = read_label_sets(args.labels, args.task, pair_ids)
    if not sets:
        print(f"no {args.task} label files found in {args.labels}", file=sys.stderr)
        return 1
    pool = {n for n, i in info.items() if any(args.pool_judge in j for j in i["judges"])}
    for a, b in args.product:
        missing = [n for n in (a, b) if n not in sets]
        if missing:
            print(f"--product: no label set named {missing} (have {sorted(sets)})",
                  file=sys.stderr)
            return 1
        name = f"{a} x {b}"
        sets[name] = product_records(sets[a], sets[b])
        info[name] = {"path": f"{info[a]['path']} x {info[b]['path']}",
                      "n_labels": len(sets[name]),
                      "labelers": [f"({x}) x ({y})" for x in info[a]["labelers"]
                                   for y in info[b]["labelers"]],
                      "judges": sorted(set(info[a]["judges"]) | set(info[b]["judges"]))}
        if a in pool and b in pool:
            pool.add(name)
    stacks: dict[str, list[str]] = {}
    for names in args.stack:
        missing = [n for n in names if n not in sets]
        if missing or len(names) < 2:
            print(f"--stack: needs two or more label set names, unknown: {missing} (have "
                  f"{sorted(sets)})", file=sys.stderr)
            return 1
        name = f"stack({', '.join(names)})"
        stacks[name] = names
        sets[name], params = stacked_records({n: sets[n] for n in names}, choose_ids)
        info[name] = {"path": " + ".join(info[n]["path"] for n in names),
                      "n_labels": len(sets[name]), "stack_params_seed": args.seed,
                      "stack_params": params,
                      "labelers": [f"stack of {len(names)} label sets"],
                      "judges": sorted(set().union(*(info[n]["judges"] for n in names)))}
        if all(n in pool for n in names):
            pool.add(name)
    full = [n for n in sets if pair_ids <= {str(r["id"]) for r in sets[n]}]
    covers_choose = [n for n in sets if set(choose_ids) <= {str(r["id"]) for r in sets[n]}]
    n_posts = len({p.context for p in pairs})
    print(f"{len(pairs)} {args.task} pairs ({len(pair_ids)} with a human choice), {n_posts} "
          f"posts; split by post, seed {args.seed}: choose {len(choose_ids)} pairs, report "
          f"{len(report_ids)} pairs. Pool: judge contains {args.pool_judge!r}.")
    for note in notes:
        print(f"note: {note}")

    out: dict[str, Any] = {
        "task": args.task, "seed": args.seed, "test_fraction": 0.5, "group_by": "context (post)",
        "command": command_line(__file__, argv),
        "n_pairs": len(pairs), "n_posts": n_posts, "goal": GOAL,
        "methods": {m: {"equation": METHODS[m].equation, "n_params": METHODS[m].n_params,
                        "symmetric": METHODS[m].symmetric} for m in methods},
        "choose_ids": list(choose_ids), "report_ids": list(report_ids),
        "label_sets": info, "pool": sorted(pool), "notes": notes, "selections": {},
    }
    selections = []
    if covers_choose:
        selections.append(("all pairs", covers_choose))
    subset = sorted(sets)
    if subset != sorted(covers_choose):
        selections.append(("common subset", subset))
    for title, names in selections:
        result = run_selection(sets, names, choose_ids, report_ids, methods, pool)
        print(f"\n### Selection: {title} — {len(names)} label set(s), choose N="
              f"{len(result.choose_ids)}, report N={len(result.report_ids)}"
              + ("" if title == "all pairs" else " (ids every label set covers)"))
        print(markdown_table(result, info))
        for note in result.notes:
            print(f"note: {note}")
        chosen = summary(result)
        if chosen is not None and result.chosen_candidate.report.n == 0:
            print(f"\nChosen on the choose half: {chosen['source']} / {chosen['method']}, which "
                  "has no label on the report half yet: label it with the same command and "
                  f"--ids {REPO / 'research/results/tldr_hc_report_ids_seed0.txt'} (seed 0), "
                  "then rerun")
        elif chosen is not None:
            if chosen["ci_above_goal"]:
                verdict = "reached (the whole 95% CI is above it)"
            elif chosen["reaches_goal"]:
                verdict = ("NOT shown: the point estimate is above it but the 95% CI reaches "
                           "below it")
            else:
                verdict = "NOT reached"
            print(f"\nChosen on the choose half: {chosen['source']} / {chosen['method']} -> "
                  f"report half z_acc {_cell(result.chosen_candidate.report)}; goal "
                  f"{_pct(GOAL)} {verdict}")
        out["selections"][title] = {"label_sets": names, "chosen_summary": chosen,
                                    **result.to_dict()}

    if full and args.repeat > 0:
        rows = []
        for seed in range(args.seed + 1, args.seed + 1 + args.repeat):
            choose, report = split_halves(pairs, seed=seed)
            for name, names in stacks.items():  # refit on this seed's choosing half
                sets[name] = stacked_records({n: sets[n] for n in names}, choose)[0]
            result = run_selection(sets, full, choose, report, methods, pool)
            c = result.chosen_candidate
            if c is not None:
                plain = next((d for d in result.candidates
                              if d.source == c.source and d.method == "none"), None)
                rows.append({"seed": seed, "source": c.source, "method": c.method,
                             "choose_z_acc": c.choose.z_acc, "report_z_acc": c.report.z_acc,
                             "report_n": c.report.n,
                             "report_z_acc_none": None if plain is None else plain.report.z_acc})
        z = [r["report_z_acc"] for r in rows]
        z0 = [r["report_z_acc_none"] for r in rows if r["report_z_acc_none"] is not None]
        counts = Counter(f"{r['source']} / {r['method']}" for r in rows)
        out["repeat"] = {"seeds": [r["seed"] for r in rows], "rows": rows,
                         "report_z_acc_mean": sum(z) / len(z) if z else None,
                         "report_z_acc_min": min(z, default=None),
                         "report_z_acc_max": max(z, default=None), "chosen_counts": counts,
                         "report_z_acc_none_mean": sum(z0) / len(z0) if z0 else None}
        if z:
            print(f"\nRobustness, all-pairs selection on seeds {args.seed + 1}.."
                  f"{args.seed + args.repeat}: report-half z_acc of the chosen candidate mean "
                  f"{_pct(sum(z) / len(z))}, min {_pct(min(z))}, max {_pct(max(z))} (same "
                  f"label set, method none: mean {_pct(sum(z0) / len(z0) if z0 else None)}); "
                  f"chosen: {dict(counts)}")

    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
