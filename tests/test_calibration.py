"""Calibration of AI preference labels fit on a few human choices (rewards.calibration)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rewards.alignment import alignment_report
from rewards.calibration import (
    METHODS,
    OrderData,
    calibrate_labels,
    calibrated_records,
    fit_logistic,
    get_method,
    prior_calibrated_orders,
    score,
)

REPO = Path(__file__).resolve().parents[1]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def biased_labels(n: int = 400, bias: float = 3.0, seed: int = 0) -> tuple[list[dict], np.ndarray]:
    """Synthetic labels of a judge with true log-odds ``s`` (humans choose responses[0] with
    probability sigma(s)) and a position prior ``bias`` on the first-shown response: in order
    ab the log-odds of responses[0] are ``s + bias``, in order ba ``s - bias``.
    Returns (label dicts, s)."""
    rng = np.random.default_rng(seed)
    s = rng.normal(0.0, 1.5, n)
    human = np.where(rng.random(n) < _sigmoid(s), 0, 1)
    p_ab, p_ba = _sigmoid(s + bias), _sigmoid(s - bias)
    labels = [{"id": f"p{k}", "task": "tldr", "p_first": float((a + b) / 2),
               "p_order_ab": float(a), "p_order_ba": float(b), "human_choice": int(h)}
              for k, (a, b, h) in enumerate(zip(p_ab, p_ba, human, strict=True))]
    return labels, s


def _accuracy(p: np.ndarray, human: np.ndarray) -> float:
    return float(np.mean((p < 0.5).astype(int) == human))


# --------------------------------------------------------------------------- methods


def test_prior_calibration_of_a_position_biased_judge_recovers_the_unbiased_accuracy():
    labels, s = biased_labels(bias=3.0)
    data = OrderData.from_records(labels)
    choose, report = data.subset(data.ids[:200]), data.subset(data.ids[200:])
    unbiased = _accuracy(_sigmoid(s[200:]), report.human)
    assert _accuracy(report.p_ab, report.human) < unbiased - 0.15  # the bias hurts one order

    fitted = get_method("prior").fit(choose)
    assert fitted.params["b"] == pytest.approx(3.0)
    p_ab, p_ba = prior_calibrated_orders(report, fitted.params["b"])
    assert _accuracy(p_ab, report.human) == pytest.approx(unbiased)
    assert _accuracy(p_ba, report.human) == pytest.approx(unbiased)
    np.testing.assert_allclose(fitted.predict(report), _sigmoid(s[200:]), atol=1e-9)


def test_prior_calibration_removes_the_position_bias_of_the_written_labels():
    labels, _ = biased_labels(bias=3.0)
    assert alignment_report(labels).position_bias > 0.8
    fitted = get_method("prior").fit(OrderData.from_records(labels[:200]))
    calibrated = calibrated_records(labels, fitted)
    assert alignment_report(calibrated).position_bias == 0.0
    assert set(calibrated[0]) == set(labels[0])  # same fields, readable as labels


def test_prior_calibrated_confident_order_beats_the_raw_confident_order_under_strong_bias():
    labels, s = biased_labels(bias=3.0)
    data = OrderData.from_records(labels)
    raw = get_method("confident").fit(data).predict(data)
    calibrated = get_method("prior_confident").fit(data).predict(data)
    unbiased = _accuracy(_sigmoid(s), data.human)
    assert score(calibrated, data).log_loss < score(raw, data).log_loss - 0.2
    assert _accuracy(calibrated, data.human) == pytest.approx(unbiased)


def test_symmetric_methods_share_the_decision_of_the_averaged_label():
    rng = np.random.default_rng(1)
    n = 300
    labels = [{"id": str(k), "p_order_ab": float(a), "p_order_ba": float(b),
               "human_choice": int(h)}
              for k, (a, b, h) in enumerate(zip(rng.random(n), rng.random(n),
                                                rng.integers(0, 2, n), strict=True))]
    data = OrderData.from_records(labels)
    decision = data.x_ab + data.x_ba > 0
    for name in ("none", "prior", "confident", "prior_confident"):
        p = get_method(name).fit(data.subset(data.ids[:100])).predict(data)
        np.testing.assert_array_equal(p > 0.5, decision, err_msg=name)


@pytest.mark.parametrize("name", [m for m in METHODS if METHODS[m].symmetric])
def test_symmetric_methods_are_equivariant_to_swapping_the_responses(name):
    labels, _ = biased_labels(n=120, bias=1.0, seed=2)
    data = OrderData.from_records(labels)
    method = get_method(name)
    p = method.fit(data).predict(data)
    p_swapped = method.fit(data.swapped()).predict(data.swapped())
    np.testing.assert_allclose(p_swapped, 1.0 - p, atol=1e-12)


def test_threshold_picks_the_accuracy_maximising_cut_closest_to_one_half():
    labels = [{"id": str(k), "p_order_ab": p, "p_order_ba": p, "human_choice": h}
              for k, (p, h) in enumerate([(0.40, 1), (0.52, 1), (0.54, 1), (0.60, 0),
                                          (0.70, 0), (0.30, 1)])]
    data = OrderData.from_records(labels)
    fitted = get_method("threshold").fit(data)
    assert fitted.params["t"] == pytest.approx(0.57)
    assert score(fitted.predict(data), data).z_acc == 1.0
    assert score(get_method("none").fit(data).predict(data), data).z_acc == pytest.approx(4 / 6)


def test_logistic_fit_recovers_known_weights():
    rng = np.random.default_rng(3)
    x = rng.normal(0.0, 1.0, (20000, 2))
    y = (rng.random(20000) < _sigmoid(1.5 * x[:, 0] - 0.5 * x[:, 1] + 0.3)).astype(float)
    w, c = fit_logistic(x, y)
    np.testing.assert_allclose(w, [1.5, -0.5], atol=0.08)
    assert c == pytest.approx(0.3, abs=0.06)


def test_offset_methods_refuse_a_choosing_set_whose_human_choices_are_all_the_same():
    labels, _ = biased_labels(n=50)
    for label in labels:
        label["human_choice"] = 0  # as HH pairs: the chosen response is stored first
    data = OrderData.from_records(labels)
    for name in ("threshold", "platt", "logistic"):
        with pytest.raises(ValueError, match="every human choice"):
            get_method(name).fit(data)


def test_bad_labels_are_rejected_with_the_label_id():
    with pytest.raises(ValueError, match="'x'.*p_order_ab"):
        OrderData.from_records([{"id": "x", "p_order_ab": 1.5, "p_order_ba": 0.5,
                                 "human_choice": 0}])
    with pytest.raises(ValueError, match="'y'.*p_order_ba is missing"):
        OrderData.from_records([{"id": "y", "p_order_ab": 0.5, "human_choice": 0}])
    with pytest.raises(ValueError, match="no label"):
        OrderData.from_records([{"id": "z", "p_order_ab": 0.5, "p_order_ba": 0.5,
                                 "human_choice": 0}], ids=["z", "w"])
    with pytest.raises(ValueError, match="unknown calibration method"):
        get_method("isotonic")


def test_calibrate_labels_fits_on_the_fit_ids_and_marks_them():
    labels, _ = biased_labels(n=120, bias=2.0, seed=3)
    fit_ids = [label["id"] for label in labels[:60]]
    records, info = calibrate_labels(labels, fit_ids, method="prior", sources=["a.jsonl"])
    assert info["method"] == "prior" and info["n_fit"] == 60 and info["n_held_out"] == 60
    assert [r["calibration"]["fit"] for r in records] == [True] * 60 + [False] * 60
    assert records[0]["calibration"]["sources"] == ["a.jsonl"]
    expected = get_method("prior").fit(OrderData.from_records(labels, fit_ids))
    assert records[0]["calibration"]["params"] == expected.params
    with pytest.raises(ValueError, match="already calibrated"):
        calibrate_labels(records, fit_ids)
    with pytest.raises(ValueError, match="no label"):
        calibrate_labels(labels, ["nope"])
