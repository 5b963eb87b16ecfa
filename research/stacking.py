"""Stacking and choosing among labeler variants: the study behind issue #3's 75% goal.

Research, not library: :mod:`rewards.calibration` keeps the calibration a library user needs
(fit a method on a few human labels). This module holds what the calibration study added on
top: scoring every (label set x method) candidate on a choosing half and reporting the chosen
one on the other half (:func:`choose_and_report`), the by-context halves
(:func:`split_halves`), and combining labelers (:func:`product_records`,
:func:`stacked_records`). See research/README.md for the questions and answers.

Imported as ``research.stacking`` with the repo root on ``sys.path`` (``PYTHONPATH=.``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rewards.calibration import (
    L2,
    METHODS,
    HalfScore,
    OrderData,
    _check_probability,
    _logit,
    _sigmoid,
    _target,
    fit_logistic,
    get_method,
    score,
)


@dataclass(frozen=True)
class Candidate:
    """One (label set, method) candidate: fitted on the choosing half, scored on both.

    Attributes:
        source: the label set's name (a file name).
        method: the calibration method's name.
        params: parameters fitted on the choosing half.
        n_params, symmetric: as the method's.
        in_pool: it may be chosen (its label set is in the pool and its method applies).
        note: why it is not in the pool, or ``""``.
        choose, report: scores on the choosing / report half.
    """

    source: str
    method: str
    params: dict[str, float]
    n_params: int
    symmetric: bool
    in_pool: bool
    note: str
    choose: HalfScore
    report: HalfScore

    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["choose"] = self.choose.to_dict()
        data["report"] = self.report.to_dict()
        return data


@dataclass(frozen=True)
class ChooseReport:
    """The outcome of :func:`choose_and_report`.

    Attributes:
        choose_ids, report_ids: the pair ids of each half that every label set covers (the
            rows the numbers are computed on).
        candidates: every candidate, in the order tried.
        chosen: index into ``candidates`` of the chosen one (``None``: no candidate in the pool).
        notes: label sets or methods left out, and why.
    """

    choose_ids: tuple[str, ...]
    report_ids: tuple[str, ...]
    candidates: list[Candidate]
    chosen: int | None
    notes: list[str] = field(default_factory=list)

    @property
    def chosen_candidate(self) -> Candidate | None:
        return None if self.chosen is None else self.candidates[self.chosen]

    def to_dict(self) -> dict[str, Any]:
        return {"choose_ids": list(self.choose_ids), "report_ids": list(self.report_ids),
                "n_choose_ids": len(self.choose_ids), "n_report_ids": len(self.report_ids),
                "candidates": [c.to_dict() for c in self.candidates], "chosen": self.chosen,
                "notes": list(self.notes)}


def _selection_key(candidate: Candidate) -> tuple[float, float, float]:
    """Higher is better: z_acc on the choosing half, then fewer parameters, then lower
    log-loss on the choosing half."""
    z = candidate.choose.z_acc if candidate.choose.z_acc is not None else -1.0
    loss = candidate.choose.log_loss if candidate.choose.log_loss is not None else math.inf
    return (z, -candidate.n_params, -loss)


def choose_and_report(label_sets: Mapping[str, Iterable[object]], choose_ids: Sequence[str],
                      report_ids: Sequence[str], methods: Sequence[str] | None = None,
                      pool: Iterable[str] | None = None) -> ChooseReport:
    """Fit every (label set x method) on the choosing half, choose the best there, score all.

    Only choosing-half ids that EVERY label set covers are used (so the candidates are
    compared on the same pairs); give only the label sets that cover what you want to
    compare. A label set with no label on the report half may still compete: labeling the
    choosing half first tells whether a variant is worth labeling the report half for. Its
    report score is then empty (``n = 0``); the report half is the ids covered by every
    label set that has report labels.

    Args:
        label_sets: name -> labels (dicts or ``PreferenceLabel``), e.g. one per JSONL file.
        choose_ids, report_ids: the two halves (must be disjoint).
        methods: method names (default: every method in :data:`METHODS`, in that order).
        pool: names of the label sets that may be chosen (default: all); the others are
            scored for comparison only.

    Raises:
        ValueError: no label set, overlapping halves, an unknown method, a half with no
            covered id, bad labels.
    """
    if not label_sets:
        raise ValueError("no label sets to choose from")
    choose_ids = [str(i) for i in choose_ids]
    report_ids = [str(i) for i in report_ids]
    overlap = set(choose_ids) & set(report_ids)
    if overlap:
        raise ValueError(f"{len(overlap)} ids are in both halves, e.g. {sorted(overlap)[:3]}")
    method_list = [get_method(m) for m in (list(METHODS) if methods is None else methods)]
    pool_set = set(label_sets) if pool is None else set(pool)
    unknown = pool_set - set(label_sets)
    if unknown:
        raise ValueError(f"pool names unknown label sets: {sorted(unknown)}")

    data = {name: OrderData.from_records(list(records)) for name, records in label_sets.items()}
    covered = set.intersection(*(set(d.ids) for d in data.values()))
    report_set = set(report_ids)
    with_report = [set(d.ids) for d in data.values() if report_set & set(d.ids)]
    covered_report = set.intersection(*with_report) if with_report else set()
    choose = tuple(i for i in choose_ids if i in covered)
    report = tuple(i for i in report_ids if i in covered_report)
    if not choose or not report:
        raise ValueError(f"the label sets together cover {len(choose)} choosing and "
                         f"{len(report)} report ids; both halves need some")

    notes: list[str] = []
    candidates: list[Candidate] = []
    for name, full in data.items():
        own = set(full.ids)
        choose_data = full.subset(choose)
        report_data = full.subset([i for i in report if i in own])  # empty: none labeled
        for method in method_list:
            try:
                fitted = method.fit(choose_data)
            except ValueError as exc:
                notes.append(f"{name} / {method.name}: not fitted ({exc})")
                continue
            in_pool = name in pool_set
            candidates.append(Candidate(
                source=name, method=method.name, params=fitted.params,
                n_params=method.n_params, symmetric=method.symmetric, in_pool=in_pool,
                note="" if in_pool else "label set not in the pool",
                choose=score(fitted.predict(choose_data), choose_data),
                report=score(fitted.predict(report_data), report_data),
            ))
    pooled = [k for k, c in enumerate(candidates) if c.in_pool and c.choose.n > 0]
    chosen = None
    if pooled:  # max() keeps the first of equal keys: the order given breaks the last ties
        chosen = max(pooled, key=lambda k: _selection_key(candidates[k]))
    return ChooseReport(choose, report, candidates, chosen, notes)


# --------------------------------------------------------------------------- halves


def split_halves(pairs: Sequence[Any], seed: int = 0) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(choose_ids, report_ids)``: the pairs split in two BY CONTEXT (for TL;DR: by post).

    ``rewards.reward_model.split_pairs(pairs, test_fraction=0.5, seed=seed)``: choose = its
    train side, report = its test side (half of the distinct contexts each; the pair counts
    differ when posts have different numbers of pairs).

    Raises:
        ValueError: as ``split_pairs``; also if a context ends up on both sides.
    """
    from rewards.reward_model import split_pairs  # imports torch: only when splitting

    split = split_pairs(pairs, test_fraction=0.5, seed=seed)
    context = {str(p.id): p.context for p in pairs}
    shared = {context[i] for i in split.train} & {context[i] for i in split.test}
    if shared:
        raise ValueError(f"{len(shared)} contexts are on both sides of the split")
    return split.train, split.test


def product_records(first: Iterable[Mapping[str, Any]], second: Iterable[Mapping[str, Any]]
                    ) -> list[dict[str, Any]]:
    """Combine two labelers of the same pairs as independent evidence (a product of experts,
    naive Bayes with a flat prior): per order, their log-odds add::

        p_ab = sigma(x_ab(first) + x_ab(second)),  p_ba = sigma(x_ba(first) + x_ba(second))
        p_first = (p_ab + p_ba) / 2

    No parameter is fit, so the combination may be chosen on one half and reported on the
    other like any label set. Typical use: a pairwise labeler times the pointwise one
    (``prompt="pointwise"``, whose two orders are equal). Only ids both cover are kept, in
    ``first``'s order; the human fields come from ``first``, ``prompt``/``judge`` name both.

    Raises:
        ValueError: a missing or out-of-range per-order probability, or the two labelers
            disagreeing on an id's human choice.
    """
    by_id = {str(r["id"]): r for r in second}
    out = []
    for a in first:
        key = str(a["id"])
        b = by_id.get(key)
        if b is None:
            continue
        if a.get("human_choice") != b.get("human_choice"):
            raise ValueError(f"label {key!r}: the two labelers disagree on the human choice "
                             f"({a.get('human_choice')!r} vs {b.get('human_choice')!r})")
        orders = []
        for name in ("p_order_ab", "p_order_ba"):
            x = sum(_logit(np.float64(_check_probability(r.get(name), name, key)))
                    for r in (a, b))
            orders.append(float(_sigmoid(x)))
        record = dict(a)
        record.update(p_order_ab=orders[0], p_order_ba=orders[1],
                      p_first=(orders[0] + orders[1]) / 2.0,
                      prompt=f"{a.get('prompt')} x {b.get('prompt')}",
                      judge=f"{a.get('judge')} x {b.get('judge')}", rationales=None)
        out.append(record)
    return out


def stacked_records(label_sets: Mapping[str, Iterable[Mapping[str, Any]]],
                    fit_ids: Sequence[str], l2: float = L2
                    ) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Stack several labelers of the same pairs by logistic regression (stacked
    generalisation, Wolpert 1992), fit on ``fit_ids`` only::

        xbar_k = (x_ab,k + x_ba,k) / 2                      (labeler k's mean log-odds)
        p      = sigma(sum_k w_k * xbar_k + c)              (w, c: :func:`fit_logistic`)

    Unlike :func:`product_records`, which adds the log-odds with weight 1 and fits nothing,
    the weights are learnt, so a labeler with huge but noisy log-odds (PMI, in nats) does not
    outvote the others, and one that carries no information gets a weight near 0. The fit
    sees only ``fit_ids`` (e.g. the choosing half), so the stack is reported on the other
    half like any candidate.

    The features are odd under swapping the two responses, the intercept ``c`` is not: like
    the offset methods it can learn how often ``responses[0]`` is the human's choice, so the
    fit ids need both human choices (HH pairs, which always store the chosen response
    first, raise).

    Args:
        label_sets: name -> label dicts (``id``, ``p_order_ab``, ``p_order_ba``,
            ``human_choice``), at least one set.
        fit_ids: the ids to fit on; every set must cover them and they need a human choice.
        l2: the L2 penalty on the standardised weights (:func:`fit_logistic`).

    Returns:
        ``(records, params)``: one record per id that every set covers, in the first set's
        order (its fields, with ``p_first = p_order_ab = p_order_ba = p``, ``prompt``
        ``"stack(...)"``, ``judge`` naming the sets' distinct judges), and ``params``:
        ``w[name]`` per set and ``c``, on the raw log-odds scale.

    Raises:
        ValueError: no set, an id of ``fit_ids`` that a set does not cover or that has no
            human choice, sets disagreeing on a human choice, bad probabilities.
    """
    if not label_sets:
        raise ValueError("no label sets to stack")
    sets = {name: [dict(r) for r in records] for name, records in label_sets.items()}
    names = list(sets)
    first = sets[names[0]]
    common = set.intersection(*({str(r["id"]) for r in s} for s in sets.values()))
    ids = [i for i in dict.fromkeys(str(r["id"]) for r in first) if i in common]
    if not ids:
        raise ValueError(f"no id is covered by every label set ({names})")
    data = {name: OrderData.from_records(records, ids) for name, records in sets.items()}
    human = data[names[0]].human
    for name in names[1:]:
        bad = [ids[k] for k in np.flatnonzero(data[name].human != human)]
        if bad:
            raise ValueError(f"labels {bad[:3]}: {names[0]!r} and {name!r} disagree on the "
                             "human choice")
    row = {label_id: k for k, label_id in enumerate(ids)}
    uncovered = [str(i) for i in fit_ids if str(i) not in row]
    if uncovered:
        raise ValueError(f"{len(uncovered)} fit ids are not covered by every label set, "
                         f"e.g. {uncovered[:3]}")
    fit_rows = np.asarray([row[str(i)] for i in fit_ids], dtype=int)
    if np.any(human[fit_rows] < 0):
        raise ValueError("every fit id needs a human choice")
    x = np.stack([(data[n].x_ab + data[n].x_ba) / 2.0 for n in names], axis=1)  # (ids, sets)
    w, c = fit_logistic(x[fit_rows], _target(data[names[0]])[fit_rows], l2=l2)
    p = _sigmoid(x @ w + c)
    by_id = {str(r["id"]): r for r in reversed(first)}  # a repeated id keeps its first label
    judges = " + ".join(dict.fromkeys(str(sets[n][0].get("judge")) for n in names))
    records = []
    for k, label_id in enumerate(ids):
        record = dict(by_id[label_id])
        record.update(p_order_ab=float(p[k]), p_order_ba=float(p[k]), p_first=float(p[k]),
                      prompt=f"stack({', '.join(names)})", judge=judges, rationales=None)
        records.append(record)
    params = {f"w[{name}]": float(wk) for name, wk in zip(names, w, strict=True)}
    params["c"] = float(c)
    return records, params
