"""Calibrated or stacked AI labels, fit on the human choices of some pairs, written as a
labels file that ``rlaif-gym train-rm --labels`` and ``rlaif-gym alignment`` read.

    PYTHONPATH=. python research/calibrate.py LABELS.jsonl [MORE.jsonl ...] \
        --fit-ids IDS.txt|split.json --out OUT.jsonl


- One labels file: a method of :mod:`rewards.calibration` (``--method``, e.g. ``threshold``
  or ``platt``) is fit on the ``--fit-ids`` pairs and applied to every label.
- Several labels files of the same pairs (e.g. one judge's Base, Detailed and PMI labels):
  a logistic stack (:func:`research.stacking.stacked_records`) is fit on those pairs;
  only the pairs every file covers are written.

``--fit-ids`` is a text file of pair ids (one per line) or a ``split.json`` of ``train-rm``,
whose train side is used, so an AI-RM trained on the output never evaluates on pairs whose
human choices shaped its targets. Every output label records the calibration in its
``calibration`` field (method, parameters, source files) with ``"fit": true`` for the pairs
it was fit on; ``train-rm`` refuses labels fit on its test side, and ``alignment`` on the
output counts fit pairs, so the command prints the alignment of the held-out pairs (the
honest number) next to that of the fit pairs.

Exit codes: 0 success, 2 bad input (unreadable files, unknown method, ids without a label
or without a human choice, an existing ``--out`` without ``--force``). Nothing is written
on error; the output is written atomically.

The single-file calibration is the library's :func:`rewards.calibration.calibrate_labels`;
the stack is research (:mod:`research.stacking`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rewards.alignment import alignment_report, format_table, read_labels_jsonl
from rewards.calibration import L2, METHODS, calibrate_labels, with_calibration
from rewards.reward_model import PairSplit
from rlaif_gym.files import write_jsonl
from rlaif_gym.pipelines.label import read_ids


class CalibrateError(ValueError):
    """Bad input for ``rlaif-gym calibrate`` (the message is printed as is)."""


def build_parser() -> argparse.ArgumentParser:
    """The script's arguments."""
    c = argparse.ArgumentParser(
        prog="research/calibrate.py",
        description=("Fit a calibration (one labels file) or a logistic stack (several files "
                     "of the same pairs) on the human choices of --fit-ids, write the "
                     "calibrated labels and print alignment on the fit and held-out pairs."),
    )
    c.add_argument("labels", nargs="+", metavar="LABELS.jsonl",
                   help="labels from `rlaif-gym label`; several files are stacked")
    c.add_argument("--fit-ids", required=True, metavar="IDS.txt|split.json",
                   help="pair ids to fit on: one per line, or a train-rm split.json (its "
                        "train side)")
    c.add_argument("--method", choices=sorted(METHODS), default=None,
                   help="calibration of a single labels file (default: threshold); several "
                        "files are always stacked")
    c.add_argument("--l2", type=float, default=L2,
                   help=f"L2 penalty of the stack's logistic regression (default {L2})")
    c.add_argument("--out", required=True, metavar="OUT.jsonl", help="output labels file")
    c.add_argument("--force", action="store_true", help="overwrite an existing --out")
    c.add_argument("--json", action="store_true",
                   help="print one JSON object (parameters and both alignments) instead")
    return c


def read_fit_ids(path: str | os.PathLike[str]) -> list[str]:
    """The ids of ``path``: a ``train-rm`` ``split.json`` (its ``train`` side) or a text
    file with one id per line (blank lines and ``#`` comments ignored).

    Raises:
        OSError: unreadable file. ValueError: no id, or a JSON file that is not a split.
    """
    path = Path(path)
    if path.suffix == ".json":
        ids = list(PairSplit.load(path).train)
    else:
        ids = sorted(read_ids(path))
    if not ids:
        raise ValueError(f"{path}: no pair id to fit on")
    return ids


def _read(path: str) -> list[dict[str, Any]]:
    found = read_labels_jsonl(path)
    if found.bad_tail is not None:
        print(f"research/calibrate.py: warning: {path}: ignoring an incomplete last line",
              file=sys.stderr)
    if not found.records:
        raise CalibrateError(f"{path}: no label in the file")
    for record in found.records:
        if record.get("calibration") is not None:
            method = record["calibration"].get("method")
            raise CalibrateError(f"{path}: already calibrated ({method}); calibrate the "
                                 "judge's own labels")
    return found.records


def calibrate(label_files: Sequence[str], fit_ids: Sequence[str], method: str | None = None,
              l2: float | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Calibrate one labels file or stack several, fit on ``fit_ids``.

    Returns:
        ``(records, info)``: the calibrated label dicts (each with a ``calibration`` field)
        and ``info``: ``method``, ``params``, ``sources``, ``n_fit`` and ``n_held_out``.

    Raises:
        CalibrateError: unreadable or malformed files, ``method`` given with several files,
            fit ids without a label or a human choice, a fit the method refuses.
    """
    from research.stacking import stacked_records

    if not label_files:
        raise CalibrateError("no labels file")
    if len(label_files) > 1 and method is not None:
        raise CalibrateError("--method calibrates a single labels file; several files are "
                             "stacked by a logistic regression (drop --method)")
    if len(set(label_files)) != len(label_files):
        raise CalibrateError("a labels file is given twice")
    stems = [Path(f).stem for f in label_files]
    names = stems if len(set(stems)) == len(stems) else [str(f) for f in label_files]
    try:
        sets = {name: _read(str(f)) for name, f in zip(names, label_files, strict=True)}
    except (OSError, ValueError) as exc:
        raise CalibrateError(str(exc)) from exc
    fit = [str(i) for i in dict.fromkeys(fit_ids)]
    sources = [os.path.basename(f) for f in label_files]
    try:
        if len(sets) > 1:
            records, params = stacked_records(sets, fit, l2=L2 if l2 is None else l2)
            return with_calibration(records, "stack", params, sources, fit)
        (only,) = sets.values()
        return calibrate_labels(only, fit, method=method or "threshold", sources=sources)
    except ValueError as exc:
        raise CalibrateError(f"{label_files[0] if len(sets) == 1 else 'stack'}: {exc}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    """Run the script; returns the exit code."""
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    try:
        if out.exists() and not args.force:
            raise CalibrateError(f"{out} exists; pass --force to overwrite it")
        if any(out.resolve() == Path(f).resolve() for f in args.labels):
            raise CalibrateError("--out is one of the input files")
        try:
            fit_ids = read_fit_ids(args.fit_ids)
        except (OSError, ValueError) as exc:
            raise CalibrateError(f"--fit-ids: {exc}") from exc
        records, info = calibrate(args.labels, fit_ids, args.method, args.l2)
        fit = [r for r in records if r["calibration"]["fit"]]
        held = [r for r in records if not r["calibration"]["fit"]]
        reports = [alignment_report(fit, source="fit pairs")]
        if held:
            reports.append(alignment_report(held, source="held-out pairs"))
    except CalibrateError as exc:
        print(f"research/calibrate.py: error: {exc}", file=sys.stderr)
        return 2
    write_jsonl(out, records)
    if args.json:
        print(json.dumps({**info, "out": str(out),
                          "alignment": {r.source: r.to_dict() for r in reports}}))
    else:
        weights = ", ".join(f"{k} {v:.4g}" for k, v in info["params"].items()) or "none"
        print(f"{info['method']} of {', '.join(info['sources'])}: {weights}")
        print(format_table(reports))
        if not held:
            print("every label was a fit pair: no held-out alignment", file=sys.stderr)
        print(f"-> {out} ({len(records)} labels, {info['n_fit']} fit)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
