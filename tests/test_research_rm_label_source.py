"""``research/rm_label_source.py``: per-model accuracy, paired differences and labeler
agreement on one split's test side (tiny random RMs, the committed Base 0-shot labels)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(monkeypatch):
    spec = importlib.util.spec_from_file_location(
        "rm_label_source_bench", REPO / "research" / "rm_label_source.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paired_bootstrap_of_identical_credits_is_exactly_zero(bench):
    credits = np.array([1.0, 0.0, 0.5, 1.0])
    assert bench.paired_bootstrap(credits, credits) == (0.0, 0.0, 0.0)
    mean, low, high = bench.paired_bootstrap(np.ones(50), np.zeros(50))
    assert mean == low == high == 1.0


def test_same_start_models_tie_and_labels_score_their_test_side_alignment(
        bench, shared_data_dir, tmp_path):
    from rewards.alignment import alignment_report, read_labels_jsonl
    from rewards.reward_model import split_pairs
    from rlaif_gym.data import load_preference_pairs

    labels = REPO / "reports" / "labels" / "tldr_hc-base-0shot-qwen1.5b.jsonl"
    if not labels.is_file():
        pytest.skip(f"{labels} not found")
    pairs = load_preference_pairs("tldr", data_dir=shared_data_dir, high_confidence=True)
    split = split_pairs(pairs, 0.1, seed=0)
    split.save(tmp_path / "split.json")
    out = tmp_path / "r.json"
    assert bench.main(["--data-dir", str(shared_data_dir), "--split-file",
                       str(tmp_path / "split.json"), "--untrained", "a=tiny-random",
                       "--untrained", "b=tiny-random", "--labels", f"a={labels}",
                       "--threads", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["n_pairs"] == len(split.test)
    assert result["rms"]["a"]["accuracy"] == result["rms"]["b"]["accuracy"]
    assert result["paired"]["a - b"] == {"difference": 0.0, "ci": [0.0, 0.0]}
    test = set(split.test)
    expected = alignment_report([r for r in read_labels_jsonl(labels).records
                                 if r["id"] in test])
    assert result["labelers"]["a"]["z_acc"] == pytest.approx(expected.z_acc)
    assert 0.0 <= result["labelers"]["a"]["rm_agreement"] <= 1.0
