"""How well AI preference labels agree with humans, and how much they depend on order.

Two measures from Lee et al. 2023 (arXiv 2309.00267):

* **AI labeler alignment**: ``z_acc = 1/D * sum_i 1[argmax_j P_AI(i, j) = h_i]``, the share
  of pairs where the response the AI labeler prefers (its soft label ``p_first``, averaged
  over both orders) is the one the human chose. A soft label of exactly 0.5 is a tie and
  counts as half a match (the expected accuracy of breaking the tie by a coin flip; note
  that ``PreferenceLabel.ai_choice`` instead breaks ties towards ``responses[0]``).
  Reported with a 95% Wilson score interval and ``N`` (pairs with a human choice).
* **Position bias** (Table 4): the share of pairs where the labeler prefers the same
  *position* (first shown or second shown) in both orders, i.e. its preference flips
  with the order. With ``p_order_ab = P(responses[0])`` when ``responses[0]`` is shown first
  and ``p_order_ba = P(responses[0])`` when it is shown second, a pair counts when
  ``(p_order_ab > 0.5) != (p_order_ba > 0.5)`` and neither is a tie (exactly 0.5, which
  prefers no position). The report also says which position is favoured.

Labels are duck-typed: :class:`rewards.preference.PreferenceLabel` objects or dicts read
from a labels JSONL file (one JSON object per line, as written by ``rlaif-gym label``), each
with ``id``, ``p_first``, ``p_order_ab``, ``p_order_ba``, ``human_choice`` (0, 1 or
``None``) and ``confidence``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlaif_gym.files import JsonlContent, read_jsonl
from rlaif_gym.stats import Z_95, pct, wilson_interval

__all__ = ["Z_95", "AlignmentReport", "LabelsFile", "alignment_report",
           "alignment_report_from_jsonl", "format_table", "label_field", "read_labels_jsonl",
           "wilson_interval"]


# --------------------------------------------------------------------------- label access


def label_field(label: object, name: str, default: Any = None) -> Any:
    """``label[name]`` for a mapping, ``label.name`` for an object, else ``default``."""
    if isinstance(label, Mapping):
        return label.get(name, default)
    return getattr(label, name, default)


def _probability(label: object, name: str) -> float | None:
    """A probability field as float in [0, 1], ``None`` when absent; raises on bad values."""
    value = label_field(label, name)
    if value is None:
        return None
    try:
        p = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"label {label_field(label, 'id')!r}: {name} must be a number, got {value!r}"
        ) from exc
    if not (0.0 <= p <= 1.0):  # also rejects NaN
        raise ValueError(f"label {label_field(label, 'id')!r}: {name} = {value!r} is not in [0, 1]")
    return p


def _labeler(label: object) -> str:
    """``"judge=..., prompt=..., cot=..., shots=..."`` from the fields the label has."""
    parts = []
    for name in ("judge", "prompt", "cot", "shots"):
        value = label_field(label, name)
        if value is not None:
            parts.append(f"{name}={value}")
    return ", ".join(parts)


def _human_choice(label: object) -> int | None:
    value = label_field(label, "human_choice")
    if value is None:
        return None
    if isinstance(value, bool) or value not in (0, 1):
        raise ValueError(
            f"label {label_field(label, 'id')!r}: human_choice must be 0, 1 or null, got {value!r}"
        )
    return int(value)


# --------------------------------------------------------------------------- statistics


def _preferred_position(p_first_shown: float) -> str | None:
    """Which shown position a soft label prefers: ``p`` is P(the first-shown response)."""
    if p_first_shown > 0.5:
        return "first"
    if p_first_shown < 0.5:
        return "second"
    return None


@dataclass
class AlignmentReport:
    """Agreement of one set of AI labels with human choices, and the labeler's position bias.

    Attributes:
        source: where the labels came from (a file name), for the table.
        n_labels: labels read (after dropping repeated ids).
        n: labels with a human choice, the denominator of ``z_acc``.
        z_acc: AI labeler alignment in [0, 1] (ties count 1/2); ``None`` when ``n == 0``.
        ci_low, ci_high: 95% Wilson interval of ``z_acc``; ``None`` when ``n == 0``.
        n_ties: pairs among ``n`` with ``p_first == 0.5`` exactly.
        n_position: labels with both single-order probabilities.
        position_bias: share of those where the same position is preferred in both orders,
            in [0, 1]; ``None`` when ``n_position == 0``.
        same_first, same_second: how many of those favour the first / second shown position.
        favoured_position: ``"first"``, ``"second"`` or ``"none"`` (equal counts).
        n_duplicates: labels skipped because their ``id`` was already seen.
        labelers: distinct labeler configurations found (judge, prompt, cot, shots fields),
            as text.
        dtypes: how many labels record each judge compute dtype (``dtype`` field, e.g.
            ``{"bfloat16": 120, "float32": 223}``); labels without one are not counted.
    """

    source: str
    n_labels: int
    n: int
    z_acc: float | None
    ci_low: float | None
    ci_high: float | None
    n_ties: int
    n_position: int
    position_bias: float | None
    same_first: int
    same_second: int
    favoured_position: str
    n_duplicates: int = 0
    labelers: list[str] = field(default_factory=list)
    dtypes: dict[str, int] = field(default_factory=dict)

    def format_table(self) -> str:
        """This report as a one-row table (see :func:`format_table`)."""
        return format_table([self])

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of every field."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def alignment_report(labels: Iterable[object], source: str = "") -> AlignmentReport:
    """Compute z_acc (with 95% Wilson CI) and position bias of ``labels``.

    Labels repeating an earlier ``id`` are skipped (counted in ``n_duplicates``); labels
    without a human choice count towards position bias only.

    Raises:
        ValueError: a probability outside [0, 1] or not a number, or a human choice that is
            not 0, 1 or null (the message names the label id).
    """
    seen: set[str] = set()
    n_labels = n_duplicates = 0
    credit = 0.0
    n = n_ties = 0
    n_position = same_first = same_second = 0
    labelers: list[str] = []
    dtypes: dict[str, int] = {}
    for label in labels:
        label_id = label_field(label, "id")
        if label_id is not None:
            if str(label_id) in seen:
                n_duplicates += 1
                continue
            seen.add(str(label_id))
        n_labels += 1
        labeler = _labeler(label)
        if labeler and labeler not in labelers:
            labelers.append(labeler)
        dtype = label_field(label, "dtype")
        if dtype is not None:
            dtypes[str(dtype)] = dtypes.get(str(dtype), 0) + 1

        p_first = _probability(label, "p_first")
        human = _human_choice(label)
        if human is not None and p_first is not None:
            n += 1
            if p_first == 0.5:
                n_ties += 1
                credit += 0.5
            elif (0 if p_first > 0.5 else 1) == human:
                credit += 1.0

        p_ab = _probability(label, "p_order_ab")
        p_ba = _probability(label, "p_order_ba")
        if p_ab is not None and p_ba is not None:
            n_position += 1
            pos_ab = _preferred_position(p_ab)  # responses[0] shown first
            pos_ba = _preferred_position(1.0 - p_ba)  # responses[1] shown first
            if pos_ab is not None and pos_ab == pos_ba:
                if pos_ab == "first":
                    same_first += 1
                else:
                    same_second += 1

    z_acc = ci_low = ci_high = None
    if n:
        z_acc = credit / n
        ci_low, ci_high = wilson_interval(credit, n)
    position_bias = (same_first + same_second) / n_position if n_position else None
    if same_first > same_second:
        favoured = "first"
    elif same_second > same_first:
        favoured = "second"
    else:
        favoured = "none"
    return AlignmentReport(
        source=source,
        n_labels=n_labels,
        n=n,
        z_acc=z_acc,
        ci_low=ci_low,
        ci_high=ci_high,
        n_ties=n_ties,
        n_position=n_position,
        position_bias=position_bias,
        same_first=same_first,
        same_second=same_second,
        favoured_position=favoured,
        n_duplicates=n_duplicates,
        labelers=labelers,
        dtypes=dtypes,
    )


# --------------------------------------------------------------------------- JSONL files


#: A labels file as read by :func:`read_labels_jsonl` (``rlaif_gym.files.JsonlContent``).
LabelsFile = JsonlContent


def read_labels_jsonl(path: str | Path) -> JsonlContent:
    """Read a labels JSONL file (:func:`rlaif_gym.files.read_jsonl`: only a torn last line
    is tolerated, and reported in ``bad_tail``)."""
    return read_jsonl(path)


def alignment_report_from_jsonl(path: str | Path) -> AlignmentReport:
    """:func:`alignment_report` of a labels JSONL file (``source`` = the file name).

    An incomplete last line is ignored (it is a crash remnant, not a label).
    """
    labels = read_labels_jsonl(path)
    return alignment_report(labels.records, source=str(path))


# --------------------------------------------------------------------------- table


def _dtype_cell(r: AlignmentReport) -> str:
    if not r.dtypes:
        return "-"
    unrecorded = r.n_labels - sum(r.dtypes.values())
    if len(r.dtypes) == 1 and not unrecorded:
        return next(iter(r.dtypes))
    parts = [f"{k} {v}" for k, v in sorted(r.dtypes.items())]
    return ", ".join(parts + ([f"unrecorded {unrecorded}"] if unrecorded else []))


def format_table(reports: Sequence[AlignmentReport]) -> str:
    """A plain-text table, one row per report: N, z_acc with 95% CI, ties, position bias
    (share of pairs preferring the same position in both orders), favoured position, and the
    judge dtypes the labels record (``float32``, or counts when mixed; ``-`` when none
    records one)."""
    header = ["labels", "N", "z_acc", "95% CI", "ties", "N(both orders)", "same position",
              "favours", "dtype"]
    rows = [header]
    for r in reports:
        ci = "n/a" if r.ci_low is None else f"[{pct(r.ci_low)}, {pct(r.ci_high)}]"
        rows.append([
            r.source or "-",
            str(r.n),
            pct(r.z_acc),
            ci,
            str(r.n_ties),
            str(r.n_position),
            pct(r.position_bias),
            r.favoured_position if r.n_position else "n/a",
            _dtype_cell(r),
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for k, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
