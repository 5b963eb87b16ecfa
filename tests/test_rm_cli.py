"""``rlaif-gym train-rm`` / ``rlaif-gym eval-rm`` round trips with the tiny random model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rewards.preference import PreferenceLabel
from rewards.reward_model import RewardModel
from rlaif_gym.cli import build_parser, main

N_CONTEXTS = 12


def write_pairs(path: Path) -> Path:
    """Two pairs per context ("post k"); the response ending in "good" is preferred."""
    with path.open("w") as f:
        for i in range(2 * N_CONTEXTS):
            good, bad = f"summary {i} good", f"summary {i} bad"
            choice = i % 2
            responses = [good, bad] if choice == 0 else [bad, good]
            f.write(json.dumps({"id": f"p{i}", "context": f"POST: story number {i // 2}",
                                "responses": responses, "human_choice": choice}) + "\n")
    return path


def write_labels(path: Path, pairs: Path, skip: int = 0) -> Path:
    """AI soft labels (p_first 0.8 when the first response is the good one)."""
    with path.open("w") as f:
        for line in pairs.read_text().splitlines()[skip:]:
            row = json.loads(line)
            p = 0.8 if row["responses"][0].endswith("good") else 0.2
            label = PreferenceLabel(id=row["id"], task="tldr", p_first=p, p_order_ab=p,
                                    p_order_ba=p, human_choice=row["human_choice"],
                                    confidence=None, prompt="base", cot=False, shots=0,
                                    judge="fake")
            f.write(label.to_json() + "\n")
    return path


def train_argv(pairs: Path, out: Path, *source: str, extra: tuple[str, ...] = ()) -> list[str]:
    return ["train-rm", *source, "--task", "tldr", "--pairs", str(pairs), "--base", "tiny-random",
            "--epochs", "2", "--lr", "3e-3", "--batch-size", "4", "--max-length", "256",
            "--test-fraction", "0.25", "--split-seed", "3", "--out", str(out), "--no-progress",
            *extra]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An AI-label run and a human-label run on the same pairs."""
    root = tmp_path_factory.mktemp("rm_cli")
    pairs = write_pairs(root / "pairs.jsonl")
    labels = write_labels(root / "labels.jsonl", pairs, skip=2)
    assert main(train_argv(pairs, root / "rm-ai", "--labels", str(labels))) == 0
    assert main(train_argv(pairs, root / "rm-human", "--human")) == 0
    return root


def test_train_rm_writes_a_reloadable_model_with_metadata_and_split(runs, capsys):
    rm = RewardModel.from_pretrained(runs / "rm-ai")
    assert rm.label_source == "ai" and rm.task.name == "tldr" and rm.max_length == 256
    meta = json.loads((runs / "rm-ai" / "rm_meta.json").read_text())
    assert meta["epochs_completed"] == 2 and meta["complete"] is True
    assert meta["metrics"]["eval_n"] == 6  # 3 held-out contexts x 2 pairs
    assert RewardModel.from_pretrained(runs / "rm-human").label_source == "human"


def test_the_ai_and_human_runs_share_the_same_by_post_split(runs):
    ai = json.loads((runs / "rm-ai" / "split.json").read_text())
    human = json.loads((runs / "rm-human" / "split.json").read_text())
    assert (ai["train"], ai["test"]) == (human["train"], human["test"])
    assert ai["group_by"] == "context" and ai["seed"] == 3 and len(ai["test"]) == 6
    test_posts = {int(i[1:]) // 2 for i in ai["test"]}
    train_posts = {int(i[1:]) // 2 for i in ai["train"]}
    assert not test_posts & train_posts


def test_eval_rm_reports_accuracy_with_n_and_a_confidence_interval(runs, capsys):
    capsys.readouterr()
    pairs = runs / "pairs.jsonl"
    assert main(["eval-rm", str(runs / "rm-ai"), "--pairs", str(pairs), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 6 and result["pairs"].endswith("side test")
    assert result["ci_low"] <= result["accuracy"] <= result["ci_high"]
    assert result["accuracy"] >= 0.8  # "good" vs "bad" is easy
    assert main(["eval-rm", str(runs / "rm-human"), "--pairs", str(pairs), "--side", "all"]) == 0
    text = capsys.readouterr().out
    assert "pairwise accuracy vs human" in text and "N=24" in text and "95% CI" in text


def test_eval_rm_uses_an_explicit_split_file_side(runs, capsys):
    capsys.readouterr()
    argv = ["eval-rm", str(runs / "rm-human"), "--pairs", str(runs / "pairs.jsonl"),
            "--split-file", str(runs / "rm-ai" / "split.json"), "--side", "train", "--json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 18


def test_train_rm_refuses_to_overwrite_without_resume(runs, capsys):
    pairs = runs / "pairs.jsonl"
    assert main(train_argv(pairs, runs / "rm-human", "--human")) == 2
    assert "--resume" in capsys.readouterr().err


def test_resuming_a_finished_run_trains_no_further(runs, capsys):
    capsys.readouterr()
    pairs = runs / "pairs.jsonl"
    before = (runs / "rm-human" / "model.safetensors").read_bytes()
    assert main(train_argv(pairs, runs / "rm-human", "--human", extra=("--resume",))) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs_completed"] == 2
    assert (runs / "rm-human" / "model.safetensors").read_bytes() == before


def test_interrupted_cli_run_resumes_to_the_same_model(runs, tmp_path):
    pairs = runs / "pairs.jsonl"
    out = tmp_path / "rm"
    assert main(train_argv(pairs, out, "--human", extra=("--max-steps", "3"))) == 0
    assert json.loads((out / "rm_meta.json").read_text())["step"] == 3
    assert main(train_argv(pairs, out, "--human", extra=("--resume",))) == 0
    assert (out / "model.safetensors").read_bytes() == \
        (runs / "rm-human" / "model.safetensors").read_bytes()


def test_labels_that_match_no_pair_are_an_error(runs, tmp_path, capsys):
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"id": "x1", "context": "c", "responses": ["a", "b"],
                                 "human_choice": 0}) + "\n" +
                     json.dumps({"id": "x2", "context": "d", "responses": ["a", "b"],
                                 "human_choice": 1}) + "\n")
    argv = train_argv(other, tmp_path / "rm", "--labels", str(runs / "labels.jsonl"))
    assert main(argv) == 2
    assert "no label id matches" in capsys.readouterr().err


def test_labels_and_human_are_mutually_exclusive_and_one_is_required(tmp_path):
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["train-rm", "--task", "tldr", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        parser.parse_args(["train-rm", "--task", "tldr", "--out", str(tmp_path), "--human",
                           "--labels", "x.jsonl"])
