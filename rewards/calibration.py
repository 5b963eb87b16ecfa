"""Calibrating AI preference labels on the human choices of a few pairs.

A label (:class:`rewards.preference.PreferenceLabel`, or its JSONL dict) holds the judge's
probability that ``responses[0]`` is preferred in each presentation order::

    p_ab = p_order_ab = P(responses[0] preferred | responses[0] shown first)
    p_ba = p_order_ba = P(responses[0] preferred | responses[0] shown second)

and their log-odds ``x_ab = logit(p_ab)``, ``x_ba = logit(p_ba)`` (probabilities are clipped to
``[1e-6, 1 - 1e-6]`` first, so the log-odds are finite). In POSITION terms, the log-odds that
the FIRST-SHOWN response is preferred are ``x_ab`` in order ab and ``-x_ba`` in order ba.

Every method maps ``(p_ab, p_ba)`` to a calibrated soft label ``p = P(responses[0] preferred)``
in ``[0, 1]``; its parameters are FIT on a choosing set only (:meth:`CalibrationMethod.fit`)
and then applied unchanged to any pairs (:meth:`FittedCalibration.predict`). ``y = 1`` below
means the human chose ``responses[0]`` (``human_choice == 0``); ``sigma`` is the logistic
function.

``none`` (0 parameters)
    ``p = (p_ab + p_ba) / 2``, the label's own ``p_first`` (Lee et al. 2023, section 2.1.1).
``prior`` (1 parameter ``b``): contextual / prior calibration (Zhao et al. 2021, "Calibrate
    before use"; with the prior estimated as the mean over a set of real inputs, as in Zhou et
    al. 2023, "Batch calibration"). ``b`` is the mean log-odds of the first-shown response over
    both orders and the choosing set, ``b = mean_i (x_ab,i - x_ba,i) / 2``; it is subtracted
    from each order's first-shown log-odds before converting back and averaging::

        p = (sigma(x_ab - b) + sigma(x_ba + b)) / 2

    (For a template whose label names the WORSE response the log-odds of the label "1" are
    the negated first-shown log-odds, so subtracting their mean gives the same ``p``.)
    Note: ``sigma(u) + sigma(v) > 1`` iff ``u + v > 0``, so ``p > 1/2`` iff ``x_ab + x_ba > 0``
    whatever ``b`` is: with both orders averaged, removing a constant position prior changes
    the soft label but NEVER the decision, so ``prior`` and ``none`` have the same z_acc.
``confident`` (0 parameters)
    Keep only the order whose label is further from 1/2: ``p = p_ab`` if ``|x_ab| > |x_ba|``,
    ``p = p_ba`` if ``|x_ba| > |x_ab|``, ``(p_ab + p_ba) / 2`` if equal.
``prior_confident`` (1 parameter ``b``)
    ``confident`` applied to the ``prior``-calibrated orders ``sigma(x_ab - b)``,
    ``sigma(x_ba + b)`` (a strong position prior otherwise makes the biased order look the
    more confident one).
``threshold`` (1 parameter ``t``)
    Decide ``responses[0]`` when ``p_first > t``, with ``t`` maximising the accuracy on the
    choosing set (ties of the accuracy go to the ``t`` closest to 1/2); as a soft label
    ``p = sigma(logit(p_first) - logit(t))``, so ``p > 1/2`` iff ``p_first > t``.
``platt`` (2 parameters ``a, c``): Platt scaling of the mean log-odds
    ``p = sigma(a * (x_ab + x_ba) / 2 + c)``, fit by L2-regularised logistic regression.
``logistic`` (3 parameters ``w_ab, w_ba, c``)
    ``p = sigma(w_ab * x_ab + w_ba * x_ba + c)``, fit by L2-regularised logistic regression.

Logistic fits standardise each feature on the choosing set, put an L2 penalty
``l2 / 2 * ||w||^2`` (``l2 = 1``) on the standardised weights (not on ``c``), and run Newton's
method; the reported parameters are on the raw log-odds scale.

Decisions: ``sigma(u) + sigma(v) > 1`` iff ``u + v > 0``, and for labels on either side of
1/2 the further one decides the sign of their mean, so ``none``, ``prior``, ``confident`` and
``prior_confident`` all decide ``responses[0]`` exactly when ``x_ab + x_ba > 0``: they share
one z_acc and differ only in the soft label (log-loss, Brier). More generally, applying any
odd increasing map to each order's log-odds and adding cannot change that decision. Only a
method that treats the two orders differently or adds an offset can.

Symmetry: swapping ``responses[0]`` and ``responses[1]`` maps ``(p_ab, p_ba)`` to
``(1 - p_ba, 1 - p_ab)``. ``none``, ``prior``, ``confident`` and ``prior_confident`` are
equivariant (their label becomes ``1 - p``); ``threshold``, ``platt`` and ``logistic`` are not:
their offset (``t != 1/2``, ``c``, ``w_ab != w_ba``) can learn the dataset's ORDER of the two
responses (e.g. how often the human picked ``responses[0]``), which is no property of the judge.
They are flagged (``symmetric=False``) and are left out whenever the choosing set's human
choices are all the same (HH pairs store the chosen response first: ``human_choice`` is
always 0, so an offset would reach 100% without reading the judge at all).

Use: :func:`calibrate_labels` fits a method on some pairs' human choices and returns the
calibrated labels (``train-rm --labels`` trains on them). Choosing among labelers and
calibrations, and stacking several labelers, is a study: ``research/stacking.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rewards.alignment import alignment_report, label_field

#: Probabilities are clipped to ``[EPS, 1 - EPS]`` before taking log-odds.
EPS: float = 1e-6
#: L2 penalty on the standardised weights of the logistic fits.
L2: float = 1.0


# --------------------------------------------------------------------------- data


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, EPS, 1.0 - EPS)
    return np.log(q) - np.log1p(-q)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # = 1 / (1 + exp(-x)), without overflow


def _check_probability(value: Any, name: str, label_id: str) -> float:
    if value is None:
        raise ValueError(f"label {label_id!r}: {name} is missing (both orders are needed)")
    try:
        p = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"label {label_id!r}: {name} must be a number, got {value!r}") from exc
    if not 0.0 <= p <= 1.0:  # also rejects NaN
        raise ValueError(f"label {label_id!r}: {name} = {value!r} is not in [0, 1]")
    return p


@dataclass(frozen=True)
class OrderData:
    """Per-order probabilities of ``n`` labels, in a fixed id order.

    Attributes:
        ids: label ids, length ``n``.
        p_ab, p_ba: ``(n,)`` float arrays in [0, 1] (see the module docstring).
        human: ``(n,)`` int array: the human choice (0 or 1), ``-1`` where there is none.
    """

    ids: tuple[str, ...]
    p_ab: np.ndarray
    p_ba: np.ndarray
    human: np.ndarray

    @classmethod
    def from_records(cls, records: Iterable[object],
                     ids: Iterable[str] | None = None) -> OrderData:
        """Labels (dicts or :class:`~rewards.preference.PreferenceLabel`) as arrays.

        A repeated id keeps its first label (as :func:`rewards.alignment.alignment_report`).

        Args:
            records: the labels; each needs ``id``, ``p_order_ab``, ``p_order_ba``,
                ``human_choice`` (0, 1 or ``None``).
            ids: keep these ids, in this order (``None``: every label, in file order).

        Raises:
            ValueError: a requested id has no label, a probability is missing or outside
                [0, 1], a human choice is not 0, 1 or ``None``.
        """
        by_id: dict[str, object] = {}
        for record in records:
            by_id.setdefault(str(label_field(record, "id")), record)
        wanted = list(by_id) if ids is None else [str(i) for i in ids]
        missing = [i for i in wanted if i not in by_id]
        if missing:
            raise ValueError(f"{len(missing)} requested ids have no label, e.g. {missing[:3]}")
        p_ab, p_ba, human = [], [], []
        for label_id in wanted:
            record = by_id[label_id]
            p_ab.append(_check_probability(label_field(record, "p_order_ab"), "p_order_ab",
                                           label_id))
            p_ba.append(_check_probability(label_field(record, "p_order_ba"), "p_order_ba",
                                           label_id))
            choice = label_field(record, "human_choice")
            if choice is None:
                human.append(-1)
            elif isinstance(choice, bool) or choice not in (0, 1):
                raise ValueError(f"label {label_id!r}: human_choice must be 0, 1 or null, "
                                 f"got {choice!r}")
            else:
                human.append(int(choice))
        return cls(tuple(wanted), np.asarray(p_ab, dtype=float), np.asarray(p_ba, dtype=float),
                   np.asarray(human, dtype=int))

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def x_ab(self) -> np.ndarray:
        """``logit(p_ab)``, shape ``(n,)``."""
        return _logit(self.p_ab)

    @property
    def x_ba(self) -> np.ndarray:
        """``logit(p_ba)``, shape ``(n,)``."""
        return _logit(self.p_ba)

    @property
    def p_first(self) -> np.ndarray:
        """``(p_ab + p_ba) / 2``, shape ``(n,)``."""
        return (self.p_ab + self.p_ba) / 2.0

    def labeled(self) -> OrderData:
        """Only the labels with a human choice."""
        keep = self.human >= 0
        return OrderData(tuple(i for i, k in zip(self.ids, keep, strict=True) if k),
                         self.p_ab[keep], self.p_ba[keep], self.human[keep])

    def subset(self, ids: Iterable[str]) -> OrderData:
        """The labels of ``ids``, in that order (raises ``ValueError`` on an unknown id)."""
        index = {label_id: k for k, label_id in enumerate(self.ids)}
        wanted = [str(i) for i in ids]
        missing = [i for i in wanted if i not in index]
        if missing:
            raise ValueError(f"{len(missing)} ids are not in this data, e.g. {missing[:3]}")
        rows = np.asarray([index[i] for i in wanted], dtype=int)
        return OrderData(tuple(wanted), self.p_ab[rows], self.p_ba[rows], self.human[rows])

    def swapped(self) -> OrderData:
        """The same pairs with ``responses[0]`` and ``responses[1]`` exchanged."""
        human = np.where(self.human >= 0, 1 - self.human, -1)
        return OrderData(self.ids, 1.0 - self.p_ba, 1.0 - self.p_ab, human)


# --------------------------------------------------------------------------- methods


Params = dict[str, float]


@dataclass(frozen=True)
class CalibrationMethod:
    """One way to turn ``(p_ab, p_ba)`` into a calibrated ``P(responses[0] preferred)``.

    Attributes:
        name: short name (``"none"``, ``"prior"``, ...).
        equation: the mapping, as text (for reports).
        n_params: how many numbers :attr:`fit_fn` fits.
        symmetric: equivariant to swapping the two responses (see the module docstring).
        fit_fn: ``OrderData`` (labeled choosing set) -> parameters.
        apply_fn: ``(OrderData, parameters)`` -> ``(n,)`` probabilities in [0, 1].
    """

    name: str
    equation: str
    n_params: int
    symmetric: bool
    fit_fn: Callable[[OrderData], Params]
    apply_fn: Callable[[OrderData, Mapping[str, float]], np.ndarray]

    def fit(self, choosing: OrderData) -> FittedCalibration:
        """Fit on the labels of ``choosing`` that have a human choice.

        Raises:
            ValueError: no label with a human choice; for a method with an offset
                (``symmetric=False``), human choices that are all the same.
        """
        data = choosing.labeled()
        if self.n_params and not len(data):
            raise ValueError(f"{self.name}: the choosing set has no label with a human choice")
        if not self.symmetric and len(np.unique(data.human)) < 2:
            raise ValueError(f"{self.name}: every human choice in the choosing set is "
                             f"{int(data.human[0]) if len(data) else None}; an offset fit on "
                             "it learns the response order, not the judge")
        params = self.fit_fn(data) if self.n_params else {}
        return FittedCalibration(self, {k: float(v) for k, v in params.items()})


@dataclass(frozen=True)
class FittedCalibration:
    """A method with its fitted parameters."""

    method: CalibrationMethod
    params: dict[str, float]

    def predict(self, data: OrderData) -> np.ndarray:
        """Calibrated ``P(responses[0] preferred)``, shape ``(len(data),)``, in [0, 1]."""
        p = np.asarray(self.method.apply_fn(data, self.params), dtype=float)
        if p.shape != (len(data),) or not np.all((p >= 0.0) & (p <= 1.0)):
            raise RuntimeError(f"{self.method.name}: calibrated labels are not {len(data)} "
                               "probabilities")
        return p


# ---- none / prior / confident


def _prior_offset(data: OrderData) -> Params:
    return {"b": float(np.mean(data.x_ab - data.x_ba) / 2.0)}


def prior_calibrated_orders(data: OrderData, b: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-order ``P(responses[0] preferred)`` with the position prior ``b`` removed:
    ``(sigma(x_ab - b), sigma(x_ba + b))``, each of shape ``(n,)``."""
    return _sigmoid(data.x_ab - b), _sigmoid(data.x_ba + b)


def _apply_none(data: OrderData, params: Mapping[str, float]) -> np.ndarray:
    return data.p_first


def _apply_prior(data: OrderData, params: Mapping[str, float]) -> np.ndarray:
    p_ab, p_ba = prior_calibrated_orders(data, params["b"])
    return (p_ab + p_ba) / 2.0


def _more_confident(p_ab: np.ndarray, p_ba: np.ndarray) -> np.ndarray:
    d_ab, d_ba = np.abs(p_ab - 0.5), np.abs(p_ba - 0.5)
    return np.where(d_ab > d_ba, p_ab, np.where(d_ba > d_ab, p_ba, (p_ab + p_ba) / 2.0))


def _apply_confident(data: OrderData, params: Mapping[str, float]) -> np.ndarray:
    return _more_confident(data.p_ab, data.p_ba)


def _apply_prior_confident(data: OrderData, params: Mapping[str, float]) -> np.ndarray:
    return _more_confident(*prior_calibrated_orders(data, params["b"]))


# ---- threshold


def _accuracy_credit(p: np.ndarray, human: np.ndarray) -> float:
    """Matches of the decision ``p > 1/2 -> 0`` with ``human``; exact ties count 1/2."""
    return float(np.sum(np.where(p == 0.5, 0.5, ((p < 0.5).astype(int) == human) * 1.0)))


def _fit_threshold(data: OrderData) -> Params:
    p = data.p_first
    values = np.unique(p)
    candidates = np.concatenate([
        [0.5, values[0] / 2.0, (1.0 + values[-1]) / 2.0],
        (values[1:] + values[:-1]) / 2.0,
    ])
    candidates = candidates[(candidates > 0.0) & (candidates < 1.0)]
    best_t, best_credit = 0.5, -1.0
    for t in candidates[np.argsort(np.abs(candidates - 0.5), kind="stable")]:
        credit = _accuracy_credit(np.where(p > t, 1.0, np.where(p < t, 0.0, 0.5)), data.human)
        if credit > best_credit:  # strict: the first (closest to 1/2) best t wins
            best_t, best_credit = float(t), credit
    return {"t": best_t}


def _apply_threshold(data: OrderData, params: Mapping[str, float]) -> np.ndarray:
    t = float(params["t"])
    return _sigmoid(_logit(data.p_first) - math.log(t / (1.0 - t)))


# ---- logistic fits


def fit_logistic(features: np.ndarray, y: np.ndarray, l2: float = L2,
                 max_iter: int = 100, tol: float = 1e-10) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression ``P(y=1) = sigma(features @ w + c)`` by Newton.

    Features are standardised (mean 0, sd 1 on these rows; a constant column gets weight 0)
    and the penalty ``l2 / 2 * ||w_std||^2`` is on the standardised weights, not on ``c``.

    Args:
        features: ``(n, k)`` floats.
        y: ``(n,)`` zeros and ones, both present.

    Returns:
        ``(w, c)`` on the raw feature scale: ``w`` shape ``(k,)``, ``c`` a float.

    Raises:
        ValueError: bad shapes, non-finite features, ``y`` not 0/1 or constant.
    """
    x = np.asarray(features, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.ndim != 2 or y.shape != (x.shape[0],) or x.shape[0] == 0:
        raise ValueError(f"features must be (n, k) and y (n,), got {x.shape} and {y.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("features must be finite")
    if not np.all((y == 0) | (y == 1)) or y.min() == y.max():
        raise ValueError("y must hold zeros and ones, both present")
    mean, sd = x.mean(axis=0), x.std(axis=0)
    live = sd > 1e-12
    z = np.where(live, (x - mean) / np.where(live, sd, 1.0), 0.0)
    design = np.hstack([z, np.ones((len(y), 1))])
    penalty = np.diag(np.append(np.where(live, l2, 1.0), 0.0))
    theta = np.zeros(design.shape[1])
    for _ in range(max_iter):
        p = _sigmoid(design @ theta)
        grad = design.T @ (p - y) + penalty @ theta
        hess = design.T @ (design * (p * (1.0 - p))[:, None]) + penalty
        hess[-1, -1] += 1e-9  # keeps the solve finite if every p saturates
        step = np.linalg.solve(hess, grad)
        theta -= step
        if float(np.max(np.abs(step))) < tol:
            break
    w_std, c_std = theta[:-1], float(theta[-1])
    w = np.where(live, w_std / np.where(live, sd, 1.0), 0.0)
    return w, c_std - float(np.sum(w * mean))


def _target(data: OrderData) -> np.ndarray:
    return (data.human == 0).astype(float)


def _fit_platt(data: OrderData) -> Params:
    w, c = fit_logistic(((data.x_ab + data.x_ba) / 2.0)[:, None], _target(data))
    return {"a": float(w[0]), "c": c}


def _apply_platt(data: OrderData, params: Mapping[str, float]) -> np.ndarray:
    return _sigmoid(params["a"] * (data.x_ab + data.x_ba) / 2.0 + params["c"])


def _fit_logistic_orders(data: OrderData) -> Params:
    w, c = fit_logistic(np.stack([data.x_ab, data.x_ba], axis=1), _target(data))
    return {"w_ab": float(w[0]), "w_ba": float(w[1]), "c": c}


def _apply_logistic_orders(data: OrderData, params: Mapping[str, float]) -> np.ndarray:
    return _sigmoid(params["w_ab"] * data.x_ab + params["w_ba"] * data.x_ba + params["c"])


def _no_fit(data: OrderData) -> Params:
    return {}


#: Every method, in the order used to break ties.
METHODS: dict[str, CalibrationMethod] = {m.name: m for m in (
    CalibrationMethod("none", "p = (p_ab + p_ba) / 2", 0, True, _no_fit, _apply_none),
    CalibrationMethod("prior", "p = (s(x_ab - b) + s(x_ba + b)) / 2, b = mean(x_ab - x_ba) / 2",
                      1, True, _prior_offset, _apply_prior),
    CalibrationMethod("confident", "p = the order with larger |p - 1/2|", 0, True, _no_fit,
                      _apply_confident),
    CalibrationMethod("prior_confident",
                      "confident over s(x_ab - b), s(x_ba + b), b = mean(x_ab - x_ba) / 2",
                      1, True, _prior_offset, _apply_prior_confident),
    CalibrationMethod("threshold", "p = s(logit(p_first) - logit(t)), t = argmax accuracy", 1,
                      False, _fit_threshold, _apply_threshold),
    CalibrationMethod("platt", "p = s(a (x_ab + x_ba) / 2 + c)", 2, False, _fit_platt,
                      _apply_platt),
    CalibrationMethod("logistic", "p = s(w_ab x_ab + w_ba x_ba + c)", 3, False,
                      _fit_logistic_orders, _apply_logistic_orders),
)}


def get_method(name: str) -> CalibrationMethod:
    """The method called ``name`` (raises ``ValueError`` naming the known ones)."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown calibration method {name!r}; known: {sorted(METHODS)}") from None


# --------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class HalfScore:
    """How a calibrated labeler does on one half.

    Attributes:
        n: labels with a human choice.
        z_acc: share matching the human (ties count 1/2), with its 95% Wilson interval
            ``ci_low, ci_high`` (as :func:`rewards.alignment.alignment_report`).
        log_loss: mean ``-log P(human's choice)`` (probabilities clipped to [1e-6, 1 - 1e-6]).
        brier: mean ``(p - 1[human chose responses[0]])^2``.
        n_ties: labels with ``p == 1/2`` exactly.
    """

    n: int
    z_acc: float | None
    ci_low: float | None
    ci_high: float | None
    log_loss: float | None
    brier: float | None
    n_ties: int

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def score(p: np.ndarray, data: OrderData) -> HalfScore:
    """z_acc, Wilson CI, log-loss and Brier score of soft labels ``p`` (aligned with ``data``)
    against the human choices (labels without one are left out)."""
    p = np.asarray(p, dtype=float)
    if p.shape != (len(data),):
        raise ValueError(f"p has shape {p.shape}, expected ({len(data)},)")
    keep = data.human >= 0
    report = alignment_report([
        {"id": i, "p_first": float(q), "human_choice": int(h)}
        for i, q, h in zip(np.asarray(data.ids)[keep], p[keep], data.human[keep], strict=True)
    ])
    if report.n == 0:
        return HalfScore(0, None, None, None, None, None, 0)
    y = (data.human[keep] == 0).astype(float)
    q = np.clip(p[keep], EPS, 1.0 - EPS)
    log_loss = float(-np.mean(y * np.log(q) + (1.0 - y) * np.log1p(-q)))
    brier = float(np.mean((p[keep] - y) ** 2))
    return HalfScore(report.n, report.z_acc, report.ci_low, report.ci_high, log_loss, brier,
                     report.n_ties)


# --------------------------------------------------------------------------- choosing


def calibrated_records(records: Iterable[Mapping[str, Any]],
                       fitted: FittedCalibration) -> list[dict[str, Any]]:
    """Copies of label dicts with ``p_first`` replaced by the calibrated label (the per-order
    fields too for ``prior``), e.g. to train a reward model on calibrated soft labels."""
    records = [dict(r) for r in records]
    data = OrderData.from_records(records, [str(r["id"]) for r in records])
    p = fitted.predict(data)
    if fitted.method.name == "prior":
        p_ab, p_ba = prior_calibrated_orders(data, fitted.params["b"])
    for k, record in enumerate(records):
        record["p_first"] = float(p[k])
        if fitted.method.name == "prior":
            record["p_order_ab"], record["p_order_ba"] = float(p_ab[k]), float(p_ba[k])
    return records


def calibrate_labels(records: Iterable[Mapping[str, Any]], fit_ids: Sequence[str], *,
                     method: str = "threshold", sources: Sequence[str] = ()
                     ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Fit a calibration of AI labels on the human choices of a few pairs and apply it to
    every label (the library user's calibration: a few human labels correct the judge's
    bias, e.g. its position bias or its threshold).

    Args:
        records: label dicts of one labeler (``rlaif-gym label`` output: ``id``,
            ``p_order_ab``, ``p_order_ba``, ``human_choice``).
        fit_ids: the ids whose human choices the method is fit on; each needs a label and a
            human choice.
        method: a name of :data:`METHODS` (``"threshold"``, ``"platt"``, ``"prior"``...).
        sources: where the labels came from (recorded in each output label).

    Returns:
        ``(records, info)``: copies of the labels with the calibrated ``p_first`` and a
        ``calibration`` field (``method``, ``params``, ``sources``, ``fit``: whether that
        pair's human choice was used; ``train-rm`` refuses labels fit on its test side),
        and ``info``: ``method``, ``params``, ``sources``, ``n_fit``, ``n_held_out``.

    Raises:
        ValueError: already calibrated labels, fit ids without a label or a human choice, an
            unknown method, or a fit the method refuses.
    """
    records = [dict(r) for r in records]
    if not records:
        raise ValueError("no label to calibrate")
    done = next((r for r in records if r.get("calibration") is not None), None)
    if done is not None:
        raise ValueError(f"labels already calibrated ({done['calibration'].get('method')}); "
                         "calibrate the judge's own labels")
    fit = [str(i) for i in dict.fromkeys(fit_ids)]
    covered = {str(r["id"]) for r in records}
    missing = [i for i in fit if i not in covered]
    if missing:
        raise ValueError(f"{len(missing)} fit ids have no label, e.g. {missing[:3]}")
    data = OrderData.from_records(records, fit)
    unlabeled = [i for i, h in zip(data.ids, data.human, strict=True) if h < 0]
    if unlabeled:  # the method's fit would silently drop them
        raise ValueError(f"every fit id needs a human choice; {len(unlabeled)} have none, "
                         f"e.g. {unlabeled[:3]}")
    fitted = get_method(method).fit(data)
    return with_calibration(calibrated_records(records, fitted), fitted.method.name,
                            fitted.params, sources, fit)


def with_calibration(records: list[dict[str, Any]], method: str, params: Mapping[str, float],
                     sources: Sequence[str], fit_ids: Sequence[str]
                     ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``records`` with a ``calibration`` field each (``fit``: the id is in ``fit_ids``),
    and the ``info`` summary of :func:`calibrate_labels`."""
    fit_set = {str(i) for i in fit_ids}
    for record in records:
        record["calibration"] = {"method": method, "params": dict(params),
                                 "sources": list(sources), "fit": str(record["id"]) in fit_set}
    n_fit = sum(r["calibration"]["fit"] for r in records)
    info = {"method": method, "params": dict(params), "sources": list(sources),
            "n_fit": n_fit, "n_held_out": len(records) - n_fit}
    return records, info
