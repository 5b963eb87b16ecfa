"""The calibration study (research/stacking.py): choose a labeler variant and calibration on one
half of the pairs, report it on the other; stack or multiply labelers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from research import stacking
from rewards.alignment import alignment_report
from rewards.calibration import METHODS, OrderData, get_method, score
from rlaif_gym.data.records import PreferencePair

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


def test_choosing_leaves_out_offset_methods_when_the_human_choices_are_all_the_same():
    labels, _ = biased_labels(n=50)
    for label in labels:
        label["human_choice"] = 0  # as HH pairs: the chosen response is stored first
    data = OrderData.from_records(labels)
    result = stacking.choose_and_report({"hh": labels}, data.ids[:25], data.ids[25:])
    assert {c.method for c in result.candidates} == {m for m in METHODS if METHODS[m].symmetric}
    assert any("threshold" in note for note in result.notes)


def test_score_agrees_with_the_alignment_report():
    labels, _ = biased_labels(n=101, bias=0.3, seed=4)
    labels[0]["p_order_ab"] = labels[0]["p_order_ba"] = labels[0]["p_first"] = 0.5  # a tie
    data = OrderData.from_records(labels)
    mine = score(data.p_first, data)
    theirs = alignment_report(labels)
    assert (mine.n, mine.z_acc, mine.ci_low, mine.ci_high, mine.n_ties) == (
        theirs.n, theirs.z_acc, theirs.ci_low, theirs.ci_high, theirs.n_ties)
    y = (data.human == 0).astype(float)
    assert mine.brier == pytest.approx(float(np.mean((data.p_first - y) ** 2)))


# --------------------------------------------------------------------------- choosing


def _two_judges() -> tuple[dict[str, list[dict]], list[str], list[str]]:
    good, _ = biased_labels(n=300, bias=0.5, seed=5)
    rng = np.random.default_rng(6)
    noisy = [dict(label, p_order_ab=float(rng.random()), p_order_ba=float(rng.random()))
             for label in good]
    ids = [label["id"] for label in good]
    return {"good": good, "noisy": noisy}, ids[:150], ids[150:]


def test_the_chosen_candidate_and_its_parameters_do_not_depend_on_report_half_labels():
    sets, choose, report = _two_judges()
    before = stacking.choose_and_report(sets, choose, report)
    report_set = set(report)
    flipped = {name: [dict(r, human_choice=1 - r["human_choice"],
                           p_order_ab=1 - r["p_order_ab"]) if r["id"] in report_set else r
                      for r in labels] for name, labels in sets.items()}
    after = stacking.choose_and_report(flipped, choose, report)
    assert before.chosen_candidate.source == after.chosen_candidate.source == "good"
    assert before.chosen == after.chosen
    assert [c.params for c in before.candidates] == [c.params for c in after.candidates]
    assert [c.choose for c in before.candidates] == [c.choose for c in after.candidates]
    assert before.chosen_candidate.report != after.chosen_candidate.report  # it was changed


def test_parameters_are_fit_on_the_choosing_half_only():
    sets, choose, report = _two_judges()
    result = stacking.choose_and_report(sets, choose, report, methods=["prior", "logistic"])
    choose_data = OrderData.from_records(sets["good"], choose)
    for candidate in result.candidates:
        if candidate.source == "good":
            expected = get_method(candidate.method).fit(choose_data).params
            assert candidate.params == pytest.approx(expected)


def test_choice_uses_choose_half_z_acc_then_fewer_parameters():
    sets, choose, report = _two_judges()
    result = stacking.choose_and_report(sets, choose, report, methods=["prior", "none"])
    chosen = result.chosen_candidate
    assert (chosen.source, chosen.method) == ("good", "none")  # same z_acc, fewer parameters


def test_only_pool_label_sets_can_be_chosen_and_only_common_ids_are_scored():
    sets, choose, report = _two_judges()
    sets["noisy"] = sets["noisy"][:200]  # covers only part of the report half
    result = stacking.choose_and_report(sets, choose, report, pool=["noisy"])
    assert result.chosen_candidate.source == "noisy"
    assert len(result.choose_ids) == 150 and len(result.report_ids) == 50
    assert all(c.report.n == 50 for c in result.candidates)
    assert not any(c.in_pool for c in result.candidates if c.source == "good")


def test_a_label_set_of_the_choosing_half_only_competes_with_an_empty_report_score():
    sets, choose, report = _two_judges()
    sets["good"] = [r for r in sets["good"] if r["id"] in set(choose)]  # report half unlabeled
    result = stacking.choose_and_report(sets, choose, report)
    chosen = result.chosen_candidate
    assert chosen.source == "good" and chosen.report.n == 0 and chosen.report.z_acc is None
    assert len(result.report_ids) == 150  # the noisy set's report half is still scored
    assert all(c.report.n == 150 for c in result.candidates if c.source == "noisy")


def test_overlapping_halves_are_rejected():
    sets, choose, report = _two_judges()
    with pytest.raises(ValueError, match="both halves"):
        stacking.choose_and_report(sets, choose, report + choose[:1])


# --------------------------------------------------------------------------- halves


def _pairs(n_contexts: int, per_context: int) -> list[PreferencePair]:
    return [PreferencePair(id=f"c{c}-{k}", task="tldr", context=f"post {c}",
                           responses=("a", "b"), human_choice=k % 2)
            for c in range(n_contexts) for k in range(per_context)]


def test_halves_are_disjoint_by_context_and_cover_every_pair():
    pairs = _pairs(10, 3)
    choose, report = stacking.split_halves(pairs, seed=7)
    context = {p.id: p.context for p in pairs}
    assert {context[i] for i in choose}.isdisjoint({context[i] for i in report})
    assert sorted(choose + report) == sorted(p.id for p in pairs)
    assert len({context[i] for i in report}) == 5
    assert stacking.split_halves(pairs, seed=7) == (choose, report)


def test_real_tldr_halves_are_disjoint_by_post(shared_data_dir):
    from rlaif_gym.data import load_preference_pairs

    pairs = load_preference_pairs("tldr", data_dir=shared_data_dir, high_confidence=True)
    choose, report = stacking.split_halves(pairs, seed=0)
    context = {p.id: p.context for p in pairs}
    assert {context[i] for i in choose}.isdisjoint({context[i] for i in report})
    assert len(choose) + len(report) == len(pairs)


def test_benchmark_writes_ids_and_numbers_but_no_pair_text(shared_data_dir, tmp_path, capsys,
                                                           monkeypatch):
    label_file = REPO / "reports" / "labels" / "tldr_hc-base-0shot-qwen1.5b.jsonl"
    if not label_file.is_file():
        pytest.skip(f"{label_file} not found")
    import importlib.util

    from rlaif_gym.data import load_preference_pairs

    spec = importlib.util.spec_from_file_location(
        "choose_and_report_bench", REPO / "research" / "choose_and_report.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "report.json"
    assert bench.main(["--data-dir", str(shared_data_dir), "--labels", str(label_file),
                       "--repeat", "0", "--out", str(out)]) == 0
    assert "**chosen**" in capsys.readouterr().out
    text = out.read_text(encoding="utf-8")
    report = json.loads(text)
    chosen = report["selections"]["all pairs"]["chosen_summary"]
    assert 0.0 <= chosen["report"]["z_acc"] <= 1.0 and chosen["report"]["n"] > 0
    assert not math.isnan(chosen["choose"]["z_acc"])
    assert set(report["choose_ids"]).isdisjoint(report["report_ids"])
    pairs = load_preference_pairs("tldr", data_dir=shared_data_dir, high_confidence=True)
    for pair in pairs[:50]:
        assert pair.context[:80] not in text
        assert pair.responses[0][:60] not in text


def test_product_of_two_labelers_adds_their_log_odds_per_order():

    a = [{"id": "x", "p_order_ab": 0.8, "p_order_ba": 0.4, "p_first": 0.6, "human_choice": 0,
          "prompt": "base", "judge": "j"},
         {"id": "only-a", "p_order_ab": 0.5, "p_order_ba": 0.5, "p_first": 0.5,
          "human_choice": 1, "prompt": "base", "judge": "j"}]
    b = [{"id": "x", "p_order_ab": 0.2, "p_order_ba": 0.2, "p_first": 0.2, "human_choice": 0,
          "prompt": "pointwise", "judge": "j"}]
    (rec,) = stacking.product_records(a, b)
    # logit(0.8) + logit(0.2) = 0: the pointwise labeler cancels order ab exactly
    assert rec["p_order_ab"] == pytest.approx(0.5, abs=1e-12)
    expected_ba = 1.0 / (1.0 + (0.6 / 0.4) * (0.8 / 0.2))  # odds multiply: (4/6) * (2/8)
    assert rec["p_order_ba"] == pytest.approx(expected_ba, abs=1e-12)
    assert rec["p_first"] == pytest.approx((0.5 + expected_ba) / 2, abs=1e-12)
    assert rec["prompt"] == "base x pointwise" and rec["human_choice"] == 0
    with pytest.raises(ValueError, match="human choice"):
        stacking.product_records(a, [dict(b[0], human_choice=1)])
    with pytest.raises(ValueError, match="not in"):
        stacking.product_records(a, [dict(b[0], p_order_ba=1.5)])


def _records(ids, p, human, judge="j"):
    return [{"id": i, "p_order_ab": float(q), "p_order_ba": float(q), "p_first": float(q),
             "human_choice": int(h), "prompt": "base", "judge": judge}
            for i, q, h in zip(ids, p, human, strict=True)]


def test_stack_weights_the_informative_labeler_and_fits_on_the_fit_ids_only():

    rng = np.random.default_rng(0)
    n = 400
    ids = [f"p{k}" for k in range(n)]
    s = rng.normal(0.0, 2.0, n)
    human = np.where(rng.random(n) < _sigmoid(s), 0, 1)
    good = _sigmoid(s + rng.normal(0.0, 0.3, n))  # tracks the human log-odds
    loud = _sigmoid(20.0 * rng.normal(0.0, 1.0, n))  # huge log-odds, no information
    sets = {"good": _records(ids, good, human), "loud": _records(ids, loud, human, "k")}
    fit_ids = ids[:200]
    records, params = stacking.stacked_records(sets, fit_ids)
    assert [r["id"] for r in records] == ids
    assert params["w[good]"] > 0.5 and abs(params["w[loud]"]) < 0.05 * params["w[good]"]
    stacked = np.array([r["p_first"] for r in records])
    assert np.mean((stacked > 0.5) == (good > 0.5)) > 0.95  # the loud one does not outvote
    assert records[0]["prompt"] == "stack(good, loud)" and records[0]["judge"] == "j + k"
    assert all(r["p_order_ab"] == r["p_order_ba"] == r["p_first"] for r in records)
    # the fit sees only fit_ids: changing the labels of the other ids changes nothing
    other = {name: [dict(r, p_order_ab=0.5, p_order_ba=0.5) if r["id"] not in fit_ids else r
                    for r in recs] for name, recs in sets.items()}
    assert stacking.stacked_records(other, fit_ids)[1] == params
    # ...while the product of the same two labelers follows the loud one

    prod = np.array([r["p_first"] for r in stacking.product_records(sets["good"], sets["loud"])])
    assert np.mean((prod > 0.5) == (loud > 0.5)) > 0.9


def test_stack_refuses_uncovered_fit_ids_and_disagreeing_human_choices():

    a = _records(["x", "y", "z"], [0.9, 0.2, 0.6], [0, 1, 0])
    b = _records(["x", "y"], [0.7, 0.4], [0, 1])
    with pytest.raises(ValueError, match="not covered"):
        stacking.stacked_records({"a": a, "b": b}, ["x", "z"])
    with pytest.raises(ValueError, match="disagree on the human choice"):
        stacking.stacked_records({"a": a, "b": _records(["x", "y"], [0.7, 0.4], [1, 1])},
                                 ["x", "y"])
    with pytest.raises(ValueError, match="no label sets"):
        stacking.stacked_records({}, ["x"])
    with pytest.raises(ValueError, match="no id is covered"):
        stacking.stacked_records({"a": a, "b": _records(["w"], [0.5], [0])}, ["w"])
    with pytest.raises(ValueError, match="both present"):  # one class only in the fit ids
        stacking.stacked_records({"a": a, "b": b}, ["x"])


def test_benchmark_stack_is_fit_on_the_choosing_half_and_competes(shared_data_dir, tmp_path,
                                                                  capsys, monkeypatch):
    labels = REPO / "reports" / "labels"
    names = ["tldr_hc-base-0shot-qwen1.5b.jsonl", "tldr_hc-detailed-0shot-qwen1.5b.jsonl"]
    if not all((labels / n).is_file() for n in names):
        pytest.skip("committed TL;DR label files not found")
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "choose_and_report_stack", REPO / "research" / "choose_and_report.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "report.json"
    argv = ["--data-dir", str(shared_data_dir), "--labels", *(str(labels / n) for n in names),
            "--stack", *names, "--repeat", "1", "--out", str(out)]
    assert bench.main(argv) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    name = f"stack({', '.join(names)})"
    assert name in report["pool"]
    assert set(report["label_sets"][name]["stack_params"]) == {*(f"w[{n}]" for n in names), "c"}
    stack = [c for c in report["selections"]["all pairs"]["candidates"]
             if c["source"] == name and c["method"] == "none"]
    assert len(stack) == 1 and stack[0]["report"]["n"] > 0
    assert bench.main([*argv[:-4], "--stack", names[0], "--out", str(out)]) == 1  # one set
    assert "two or more" in capsys.readouterr().err
