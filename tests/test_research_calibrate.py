"""``research/calibrate.py``: calibrated and stacked label files, fit on some pairs' human
choices, and the guards that keep those pairs out of held-out numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from research.calibrate import calibrate
from research.calibrate import main as calibrate_main
from research.stacking import stacked_records
from rewards.calibration import OrderData, get_method
from rewards.preference import PreferenceLabel
from rewards.reward_model import read_labels, split_pairs
from rlaif_gym.cli import main
from rlaif_gym.data import load_preference_pairs

N = 40


def write_labels(path: Path, seed: int, prompt: str = "base", noise: float = 1.0) -> Path:
    """Labels of pairs p0..p39 (human choice i % 2) whose log-odds lean towards the human
    choice, with per-order noise and a position offset."""
    rng = np.random.default_rng(seed)
    with path.open("w") as f:
        for i in range(N):
            human = i % 2
            lean = 1.0 if human == 0 else -1.0
            x_ab, x_ba = lean + 0.5 + noise * rng.normal(), lean - 0.5 + noise * rng.normal()
            p_ab, p_ba = 1 / (1 + np.exp(-x_ab)), 1 / (1 + np.exp(-x_ba))
            label = PreferenceLabel(id=f"p{i}", task="tldr", p_first=(p_ab + p_ba) / 2,
                                    p_order_ab=p_ab, p_order_ba=p_ba, human_choice=human,
                                    confidence=None, prompt=prompt, cot=False, shots=0,
                                    judge="fake")
            f.write(label.to_json() + "\n")
    return path


def write_ids(path: Path, ids: list[str]) -> Path:
    path.write_text("# fit ids\n" + "\n".join(ids) + "\n")
    return path


def ids_in(path: Path) -> list[str]:
    return [i for i in path.read_text().split() if i.startswith("p")]


@pytest.fixture
def files(tmp_path):
    a = write_labels(tmp_path / "base.jsonl", 0)
    b = write_labels(tmp_path / "pmi.jsonl", 1, prompt="pmi", noise=2.0)
    ids = write_ids(tmp_path / "fit.txt", [f"p{i}" for i in range(0, N, 2)] +
                    [f"p{i}" for i in range(1, N // 2, 2)])
    return tmp_path, a, b, ids


def test_stacking_two_files_writes_readable_labels_marking_the_fit_pairs(files, capsys):
    root, a, b, ids = files
    out = root / "stack.jsonl"
    assert calibrate_main([str(a), str(b), "--fit-ids", str(ids), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "fit pairs" in printed and "held-out pairs" in printed and "w[base]" in printed
    labels = read_labels(out)
    fit = set(ids_in(ids))
    assert len(labels) == N
    assert {lab.id for lab in labels if lab.calibration["fit"]} == fit
    assert {lab.calibration["method"] for lab in labels} == {"stack"}
    assert labels[0].judge == "fake"  # the two files' one judge, named once
    assert labels[0].calibration["sources"] == ["base.jsonl", "pmi.jsonl"]
    expected, params = stacked_records(
        {"base": [json.loads(x) for x in a.read_text().splitlines()],
         "pmi": [json.loads(x) for x in b.read_text().splitlines()]}, sorted(fit))
    assert [lab.p_first for lab in labels] == pytest.approx([r["p_first"] for r in expected])
    assert labels[0].calibration["params"] == pytest.approx(params)


def test_one_file_is_calibrated_by_the_method_fit_on_the_fit_ids_only(files):
    _, a, _, ids = files
    fit = ids_in(ids)
    records, info = calibrate([str(a)], fit, method="platt")
    raw = [json.loads(x) for x in a.read_text().splitlines()]
    fitted = get_method("platt").fit(OrderData.from_records(raw, fit))
    assert info["params"] == pytest.approx(fitted.params)
    everything = OrderData.from_records(raw, [r["id"] for r in raw])
    assert [r["p_first"] for r in records] == pytest.approx(list(fitted.predict(everything)))
    assert info["n_fit"] == len(fit) and info["n_held_out"] == N - len(fit)


def test_the_default_method_of_one_file_is_the_threshold(files):
    _, a, _, ids = files
    _, info = calibrate([str(a)], ids_in(ids))
    assert info["method"] == "threshold" and set(info["params"]) == {"t"}


def test_a_train_rm_split_file_fits_on_its_train_side(files, capsys):
    root, a, b, _ = files
    split = root / "split.json"
    split.write_text(json.dumps({"train": [f"p{i}" for i in range(30)],
                                 "test": [f"p{i}" for i in range(30, N)],
                                 "seed": 0, "test_fraction": 0.25}))
    out = root / "stack.jsonl"
    assert calibrate_main([str(a), str(b), "--fit-ids", str(split), "--out", str(out),
                 "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n_fit"] == 30 and info["n_held_out"] == 10
    assert info["alignment"]["held-out pairs"]["n"] == 10
    assert not any(lab.calibration["fit"] for lab in read_labels(out) if int(lab.id[1:]) >= 30)


@pytest.mark.parametrize("argv_tail, message", [
    (["--method", "platt"], "several files are stacked"),
    ([], "exists; pass --force"),
])
def test_bad_requests_exit_2_and_leave_the_output_untouched(files, capsys, argv_tail, message):
    root, a, b, ids = files
    out = root / "out.jsonl"
    out.write_text("keep me\n")
    # --method with several files is refused even with --force; without it, --out is kept
    argv = [str(a), str(b), "--fit-ids", str(ids), "--out", str(out), *argv_tail]
    if argv_tail:
        argv.append("--force")
    assert calibrate_main(argv) == 2
    assert message in capsys.readouterr().err
    assert out.read_text() == "keep me\n"


def test_fit_ids_without_a_label_or_a_human_choice_are_errors(files, capsys):
    root, a, _, _ = files
    out = root / "out.jsonl"
    unknown = write_ids(root / "unknown.txt", ["p0", "p1", "nope"])
    assert calibrate_main([str(a), "--fit-ids", str(unknown), "--out", str(out)]) == 2
    assert "1 fit ids have no label" in capsys.readouterr().err
    rows = [json.loads(x) for x in a.read_text().splitlines()]
    rows[0]["human_choice"] = None
    c = root / "c.jsonl"
    c.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ids = write_ids(root / "ids.txt", ["p0", "p1", "p2", "p3"])
    assert calibrate_main([str(c), "--fit-ids", str(ids), "--out", str(out)]) == 2
    assert "needs a human choice" in capsys.readouterr().err
    assert not out.exists()


def test_calibrated_labels_cannot_be_calibrated_again(files, capsys):
    root, a, _, ids = files
    once = root / "once.jsonl"
    assert calibrate_main([str(a), "--fit-ids", str(ids), "--out", str(once)]) == 0
    assert calibrate_main([str(once), "--fit-ids", str(ids), "--out",
                 str(root / "twice.jsonl")]) == 2
    assert "already calibrated" in capsys.readouterr().err


def test_alignment_warns_that_fit_pairs_are_not_held_out(files, capsys):
    root, a, _, ids = files
    out = root / "cal.jsonl"
    assert calibrate_main([str(a), "--fit-ids", str(ids), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["alignment", str(out)]) == 0
    assert "30 labels were calibrated on their own human choices" in capsys.readouterr().err


def write_pairs(path: Path) -> Path:
    """Pairs p0..p39, two per context, the response ending in "good" preferred."""
    with path.open("w") as f:
        for i in range(N):
            good, bad = f"summary {i} good", f"summary {i} bad"
            human = i % 2
            f.write(json.dumps({"id": f"p{i}", "context": f"POST: story number {i // 2}",
                                "responses": [good, bad] if human == 0 else [bad, good],
                                "human_choice": human}) + "\n")
    return path


def test_train_rm_refuses_labels_calibrated_on_its_test_side(files, capsys):
    root, a, b, _ = files
    pairs = write_pairs(root / "pairs.jsonl")
    split = split_pairs(load_preference_pairs("tldr", path=pairs), 0.25, seed=3)
    split.save(root / "split.json")
    everything = write_ids(root / "all.txt", [f"p{i}" for i in range(N)])
    leaky, clean = root / "leaky.jsonl", root / "clean.jsonl"
    assert calibrate_main([str(a), str(b), "--fit-ids", str(everything),
                 "--out", str(leaky)]) == 0
    assert calibrate_main([str(a), str(b), "--fit-ids", str(root / "split.json"),
                 "--out", str(clean)]) == 0
    capsys.readouterr()
    argv = ["train-rm", "--task", "tldr", "--pairs", str(pairs), "--base", "tiny-random",
            "--epochs", "1", "--batch-size", "4", "--max-length", "256", "--no-progress",
            "--split-file", str(root / "split.json")]
    assert main([*argv, "--labels", str(leaky), "--out", str(root / "rm-leaky")]) == 2
    err = capsys.readouterr().err
    assert f"{len(split.test)} test-side pairs" in err
    assert not (root / "rm-leaky" / "rm_meta.json").exists()
    assert main([*argv, "--labels", str(clean), "--out", str(root / "rm-clean")]) == 0
