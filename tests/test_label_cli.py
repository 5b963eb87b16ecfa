"""``rlaif-gym label`` / ``rlaif-gym alignment`` through ``rlaif_gym.cli.main``.

The judge and the labeling function are fakes (no model is loaded) except in the last test,
which runs the real pipeline with the tiny random judge; pairs are read from small pairs
files by the real loader.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import rlaif_gym.pipelines.label as label_cli
from rewards.preference import PreferenceLabel
from rlaif_gym.cli import main

N_PAIRS = 6


def write_pairs(path: Path, n: int = N_PAIRS, empty_response_at: int | None = None) -> Path:
    """An rlaif-gym pairs file with ids p0..p{n-1}; human prefers response 0 on even ids."""
    with path.open("w") as f:
        for i in range(n):
            second = "" if i == empty_response_at else f"summary B{i}"
            f.write(json.dumps({"id": f"p{i}", "context": f"post {i}",
                                "responses": [f"summary A{i}", second],
                                "human_choice": i % 2, "confidence": 7}) + "\n")
    return path


class FakeLabeler:
    """Replaces ``load_judge`` and ``label_pairs``; records what they were asked."""

    def __init__(self, fail_after: int | None = None, error: type[Exception] = RuntimeError):
        self.fail_after = fail_after
        self.error = error
        self.judge_loads: list[tuple[str, int | None]] = []
        self.calls: list[dict] = []

    def load_judge(self, spec, num_threads=None, **backend):
        self.judge_loads.append((spec, num_threads))
        self.backend_options = backend
        return f"judge<{spec}>"

    def label_pairs(self, judge, pairs, **options):
        pairs = list(pairs)
        self.calls.append({"judge": judge, "ids": [p.id for p in pairs], **options})
        for pair in pairs:  # the real function validates every pair before labeling
            if not all(r.strip() for r in pair.responses):
                raise ValueError(f"pair {pair.id!r}: empty response 1")
        spec = judge.removeprefix("judge<").removesuffix(">")
        for k, pair in enumerate(pairs):
            if self.fail_after is not None and k == self.fail_after:
                raise self.error("judge crashed")
            p = 0.8 if int(pair.id[1:]) % 2 == 0 else 0.3
            yield PreferenceLabel(
                id=pair.id, task=pair.task, p_first=p, p_order_ab=p, p_order_ba=p,
                human_choice=pair.human_choice, confidence=pair.confidence,
                prompt=options["prompt"], cot=options["cot"], shots=options["shots"],
                judge=spec,
            )


@pytest.fixture
def fake(monkeypatch):
    labeler = FakeLabeler()
    monkeypatch.setattr(label_cli, "load_judge", labeler.load_judge)
    monkeypatch.setattr(label_cli, "label_pairs", labeler.label_pairs)
    return labeler


def label_argv(pairs: Path, out: Path, *extra: str) -> list[str]:
    """The label command for these tests: the paper's Base prompt unless ``extra`` names one
    (the default labeler of TL;DR is PMI, which takes no --cot or --shots)."""
    prompt = [] if "--prompt" in extra else ["--prompt", "base"]
    return ["label", "--task", "tldr", "--pairs", str(pairs), "--out", str(out), *prompt,
            *extra]


def read_ids(out: Path) -> list[str]:
    return [json.loads(line)["id"] for line in out.read_text().splitlines()]


# ----------------------------------------------------------------------------- label


def test_label_writes_one_preference_label_per_line_and_forwards_options(tmp_path, fake, capsys):
    pairs, out = write_pairs(tmp_path / "pairs.jsonl"), tmp_path / "labels.jsonl"
    code = main(label_argv(pairs, out, "--judge", "tiny-judge", "--prompt", "detailed",
                           "--shots", "1", "--batch-size", "3", "--threads", "1"))
    assert code == 0
    lines = out.read_text().splitlines()
    assert [PreferenceLabel.from_json(line).id for line in lines] == [f"p{i}" for i in range(6)]
    assert fake.judge_loads == [("tiny-judge", 1)]
    call = fake.calls[0]
    assert (call["prompt"], call["cot"], call["shots"], call["batch_size"]) == (
        "detailed", False, 1, 3)
    assert "100.0%" in capsys.readouterr().out  # the fake agrees with every human choice


def test_rerun_skips_pairs_already_labeled(tmp_path, fake):
    pairs, out = write_pairs(tmp_path / "pairs.jsonl"), tmp_path / "labels.jsonl"
    assert main(label_argv(pairs, out, "--limit", "2")) == 0
    assert main(label_argv(pairs, out)) == 0
    assert fake.calls[0]["ids"] == ["p0", "p1"]
    assert fake.calls[1]["ids"] == ["p2", "p3", "p4", "p5"]
    assert read_ids(out) == [f"p{i}" for i in range(6)]


def test_rerun_with_everything_labeled_does_not_load_the_judge(tmp_path, fake, capsys):
    pairs, out = write_pairs(tmp_path / "pairs.jsonl"), tmp_path / "labels.jsonl"
    assert main(label_argv(pairs, out)) == 0
    before = out.read_bytes()
    assert main(label_argv(pairs, out)) == 0
    assert len(fake.judge_loads) == 1
    assert out.read_bytes() == before
    assert "already labeled" in capsys.readouterr().out


def test_crash_after_k_labels_keeps_them_and_resume_labels_only_the_rest(
    tmp_path, fake, monkeypatch
):
    pairs, out = write_pairs(tmp_path / "pairs.jsonl"), tmp_path / "labels.jsonl"
    crashing = FakeLabeler(fail_after=3)
    monkeypatch.setattr(label_cli, "label_pairs", crashing.label_pairs)
    with pytest.raises(RuntimeError, match="judge crashed"):
        main(label_argv(pairs, out))
    assert read_ids(out) == ["p0", "p1", "p2"]

    monkeypatch.setattr(label_cli, "label_pairs", fake.label_pairs)
    assert main(label_argv(pairs, out)) == 0
    assert fake.calls[0]["ids"] == ["p3", "p4", "p5"]
    assert read_ids(out) == [f"p{i}" for i in range(6)]


def test_each_label_is_on_disk_before_the_next_one_is_computed(tmp_path, fake, monkeypatch):
    pairs, out = write_pairs(tmp_path / "pairs.jsonl"), tmp_path / "labels.jsonl"
    seen_on_disk = []

    def observing_label_pairs(judge, todo, **options):
        for k, label in enumerate(fake.label_pairs(judge, todo, **options)):
            seen_on_disk.append(len(out.read_text().splitlines()) if out.exists() else 0)
            assert seen_on_disk[-1] == k  # everything yielded so far was flushed
            yield label

    monkeypatch.setattr(label_cli, "label_pairs", observing_label_pairs)
    assert main(label_argv(pairs, out)) == 0
    assert seen_on_disk == list(range(N_PAIRS))


def test_value_error_mid_run_exits_2_with_one_line_and_keeps_labels(
    tmp_path, monkeypatch, capsys
):
    pairs, out = write_pairs(tmp_path / "pairs.jsonl"), tmp_path / "labels.jsonl"
    labeler = FakeLabeler(fail_after=2, error=ValueError)
    monkeypatch.setattr(label_cli, "load_judge", labeler.load_judge)
    monkeypatch.setattr(label_cli, "label_pairs", labeler.label_pairs)
    assert main(label_argv(pairs, out)) == 2
    error_lines = [ln for ln in capsys.readouterr().err.splitlines() if ": error:" in ln]
    assert len(error_lines) == 1 and "judge crashed" in error_lines[0]
    assert "2 new labels" in error_lines[0]
    assert read_ids(out) == ["p0", "p1"]


def test_interrupt_mid_run_exits_130_and_keeps_labels_for_resume(
    tmp_path, monkeypatch, capsys
):
    pairs, out = write_pairs(tmp_path / "pairs.jsonl"), tmp_path / "labels.jsonl"
    labeler = FakeLabeler(fail_after=2, error=KeyboardInterrupt)
    monkeypatch.setattr(label_cli, "load_judge", labeler.load_judge)
    monkeypatch.setattr(label_cli, "label_pairs", labeler.label_pairs)
    assert main(label_argv(pairs, out)) == 130
    assert "interrupted; 2 new labels" in capsys.readouterr().err
    assert read_ids(out) == ["p0", "p1"]


def test_pair_with_empty_response_is_skipped_with_a_warning_naming_it(tmp_path, fake, capsys):
    out = tmp_path / "labels.jsonl"
    good = write_pairs(tmp_path / "good.jsonl", n=2)
    assert main(label_argv(good, out)) == 0
    capsys.readouterr()
    bad = write_pairs(tmp_path / "bad.jsonl", n=5, empty_response_at=3)
    assert main(label_argv(bad, out)) == 0
    err = capsys.readouterr().err
    assert "skipping 1 pairs" in err and "p3 (empty response" in err
    assert read_ids(out) == ["p0", "p1", "p2", "p4"]


def test_labels_of_another_configuration_are_refused(tmp_path, fake, capsys):
    pairs, out = write_pairs(tmp_path / "pairs.jsonl"), tmp_path / "labels.jsonl"
    assert main(label_argv(pairs, out, "--limit", "2")) == 0
    before = out.read_bytes()
    capsys.readouterr()
    for extra in (["--prompt", "detailed"], ["--cot"], ["--shots", "1"], ["--judge", "other"]):
        assert main(label_argv(pairs, out, *extra)) == 2
        err = capsys.readouterr().err
        assert "another configuration" in err and "another --out" in err
    assert main(["label", "--task", "helpful", "--pairs", str(pairs), "--out", str(out)]) == 2
    assert out.read_bytes() == before
    assert len(fake.judge_loads) == 1  # refused before loading a judge


def test_incomplete_last_line_is_reported_cut_and_resumed(tmp_path, fake, capsys):
    pairs, out = write_pairs(tmp_path / "pairs.jsonl"), tmp_path / "labels.jsonl"
    assert main(label_argv(pairs, out, "--limit", "3")) == 0
    complete = out.read_text()
    out.write_text(complete + '{"id": "p3", "task": "tl')  # a write cut short by a crash
    capsys.readouterr()
    assert main(label_argv(pairs, out)) == 0
    assert "incomplete last line" in capsys.readouterr().err
    assert fake.calls[1]["ids"] == ["p3", "p4", "p5"]
    assert read_ids(out) == [f"p{i}" for i in range(6)]
    assert out.read_text().startswith(complete)


def test_last_label_without_newline_is_kept_and_appending_continues(tmp_path, fake):
    pairs, out = write_pairs(tmp_path / "pairs.jsonl"), tmp_path / "labels.jsonl"
    assert main(label_argv(pairs, out, "--limit", "2")) == 0
    out.write_text(out.read_text().rstrip("\n"))
    assert main(label_argv(pairs, out)) == 0
    assert read_ids(out) == [f"p{i}" for i in range(6)]


def test_malformed_line_in_the_middle_is_refused_and_left_alone(tmp_path, fake, capsys):
    pairs, out = write_pairs(tmp_path / "pairs.jsonl"), tmp_path / "labels.jsonl"
    assert main(label_argv(pairs, out, "--limit", "2")) == 0
    lines = out.read_text().splitlines()
    out.write_text(lines[0] + "\n{garbage\n" + lines[1] + "\n")
    before = out.read_bytes()
    assert main(label_argv(pairs, out)) == 2
    assert "line 2" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_unreadable_pairs_file_exits_2_with_a_clear_error(tmp_path, fake, capsys):
    out = tmp_path / "labels.jsonl"
    assert main(label_argv(tmp_path / "missing.jsonl", out)) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlaif-gym label: error: cannot load tldr pairs")
    assert "missing.jsonl" in err
    assert fake.judge_loads == []


@pytest.mark.parametrize("prompt", ["pointwise", "pmi"])
def test_response_scoring_prompts_with_cot_or_shots_exit_2_before_loading_the_judge(
        tmp_path, fake, capsys, prompt):
    pairs, out = write_pairs(tmp_path / "pairs.jsonl"), tmp_path / "labels.jsonl"
    for extra in (("--cot",), ("--shots", "1")):
        assert main(label_argv(pairs, out, "--prompt", prompt, *extra)) == 2
        assert prompt in capsys.readouterr().err
    assert fake.judge_loads == [] and not out.exists()


def test_pmi_with_a_server_backend_is_refused_before_loading(tmp_path, fake, capsys):
    pairs, out = write_pairs(tmp_path / "pairs.jsonl"), tmp_path / "labels.jsonl"
    argv = label_argv(pairs, out, "--prompt", "pmi", "--backend", "openai",
                      "--base-url", "http://127.0.0.1:9")
    assert main(argv) == 2
    assert "--backend transformers" in capsys.readouterr().err
    assert fake.judge_loads == [] and not out.exists()


def test_ids_file_restricts_labeling_to_the_listed_pairs(tmp_path, fake):
    pairs, out = write_pairs(tmp_path / "pairs.jsonl"), tmp_path / "labels.jsonl"
    ids = tmp_path / "ids.txt"
    ids.write_text("# choosing half\np4\n\np1\n")
    assert main(label_argv(pairs, out, "--ids", str(ids))) == 0
    assert read_ids(out) == ["p1", "p4"]  # in the pairs' order


def test_ids_file_with_unknown_ids_or_no_ids_exits_2_before_loading_the_judge(
        tmp_path, fake, capsys):
    pairs, out = write_pairs(tmp_path / "pairs.jsonl"), tmp_path / "labels.jsonl"
    ids = tmp_path / "ids.txt"
    for text, message in (("p1\nnope\n", "not among"), ("# nothing\n", "no pair id")):
        ids.write_text(text)
        assert main(label_argv(pairs, out, "--ids", str(ids))) == 2
        assert message in capsys.readouterr().err
    assert main(label_argv(pairs, out, "--ids", str(tmp_path / "missing.txt"))) == 2
    assert fake.judge_loads == [] and not out.exists()


def test_unknown_task_is_rejected_by_argparse(tmp_path, fake, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["label", "--task", "poetry", "--out", str(tmp_path / "x.jsonl")])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


# ----------------------------------------------------------------------------- alignment


def handmade_labels(path: Path) -> Path:
    """Human choices 0,1,1,0; p_first 0.9, 0.2, 0.7, 0.5 -> right, right, wrong, tie:
    z_acc = 2.5/4. Orders: (0.8, 0.3) same first, (0.3, 0.8) same second, (0.8, 0.9)
    consistent, (0.6, 0.2) same first -> position bias 3/4, favours first."""
    rows = [(0.9, 0, 0.8, 0.3), (0.2, 1, 0.3, 0.8), (0.7, 1, 0.8, 0.9), (0.5, 0, 0.6, 0.2)]
    with path.open("w") as f:
        for i, (p, human, ab, ba) in enumerate(rows):
            f.write(json.dumps({"id": f"h{i}", "task": "tldr", "p_first": p, "p_order_ab": ab,
                                "p_order_ba": ba, "human_choice": human, "confidence": 8,
                                "prompt": "base", "cot": False, "shots": 0,
                                "judge": "j"}) + "\n")
    return path


def test_alignment_prints_z_acc_ci_position_bias_and_n(tmp_path, capsys):
    path = handmade_labels(tmp_path / "hand.jsonl")
    assert main(["alignment", str(path)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "hand.jsonl" in line)
    cells = row.split()
    assert cells[1] == "4"  # N
    assert "62.5%" in row  # z_acc
    assert "[21.9%, 90.8%]" in row  # 95% Wilson interval
    assert "75.0%" in row and cells[-2:] == ["first", "-"]  # position bias; no dtype


def test_alignment_json_output_and_one_bad_file_gives_exit_2(tmp_path, capsys):
    good = handmade_labels(tmp_path / "hand.jsonl")
    code = main(["alignment", "--json", str(good), str(tmp_path / "missing.jsonl")])
    assert code == 2
    captured = capsys.readouterr()
    report = json.loads(captured.out.strip())
    assert report["n"] == 4 and report["z_acc"] == pytest.approx(0.625)
    assert report["position_bias"] == pytest.approx(0.75)
    assert "missing.jsonl" in captured.err


# ----------------------------------------------------------------------------- real pipeline


def test_label_runs_the_real_pipeline_with_the_tiny_random_judge(tmp_path):
    pairs, out = write_pairs(tmp_path / "pairs.jsonl", n=2), tmp_path / "labels.jsonl"
    assert main(label_argv(pairs, out, "--judge", "tiny-random", "--threads", "1")) == 0
    labels = [PreferenceLabel.from_json(line) for line in out.read_text().splitlines()]
    assert [label.id for label in labels] == ["p0", "p1"]
    assert all(0.0 <= label.p_first <= 1.0 for label in labels)
    assert all(label.judge == "tiny-random" for label in labels)
    assert main(label_argv(pairs, out, "--judge", "tiny-random", "--threads", "1")) == 0


def test_dtype_flag_reaches_the_transformers_judge(tmp_path, fake):
    pairs, out = write_pairs(tmp_path / "pairs.jsonl"), tmp_path / "labels.jsonl"
    assert main(label_argv(pairs, out, "--dtype", "float32")) == 0
    assert fake.backend_options == {"dtype": "float32", "batch_size": 16}


def test_judge_forward_batch_holds_both_orders_of_a_labeling_step(tmp_path, fake):
    pairs, out = write_pairs(tmp_path / "pairs.jsonl"), tmp_path / "labels.jsonl"
    assert main(label_argv(pairs, out, "--batch-size", "10")) == 0
    assert fake.calls[0]["batch_size"] == 10
    assert fake.backend_options == {"batch_size": 20}


def test_server_backends_get_no_judge_batch_size(tmp_path, fake):
    pairs, out = write_pairs(tmp_path / "pairs.jsonl"), tmp_path / "labels.jsonl"
    argv = label_argv(pairs, out, "--batch-size", "10", "--backend", "openai",
                      "--base-url", "http://127.0.0.1:9")
    assert main(argv) == 0
    assert "batch_size" not in fake.backend_options


def test_dtype_flag_with_a_server_backend_is_refused_before_loading(tmp_path, fake):
    pairs, out = write_pairs(tmp_path / "pairs.jsonl"), tmp_path / "labels.jsonl"
    argv = label_argv(pairs, out, "--dtype", "float32", "--backend", "openai",
                      "--base-url", "http://127.0.0.1:9")
    assert main(argv) == 2
    assert fake.judge_loads == [] and not out.exists()


def test_judge_options_pass_dtype_and_batch_size_only_when_given():
    options = label_cli.judge_options
    assert options("transformers", threads=1) == {"num_threads": 1}
    assert options("transformers", threads=1, dtype="float32") == {"num_threads": 1,
                                                                   "dtype": "float32"}
    assert options("transformers", threads=1, batch_size=20, dtype=None) == {
        "num_threads": 1, "batch_size": 20}


def test_template_flag_is_checked_before_loading_and_forwarded(tmp_path, fake, capsys):
    pairs, out = write_pairs(tmp_path / "pairs.jsonl"), tmp_path / "labels.jsonl"
    assert main(label_argv(pairs, out, "--template", str(tmp_path / "none.json"))) == 2
    assert "template file not found" in capsys.readouterr().err
    assert fake.judge_loads == [] and not out.exists()
    assert main(label_argv(pairs, out, "--template", "tldr")) == 0
    assert fake.calls[-1]["template"] == "tldr"


def test_labels_record_the_template_and_a_resume_with_another_one_is_refused(tmp_path, fake,
                                                                              capsys):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    out = tmp_path / "labels.jsonl"
    assert main(label_argv(pairs, out, "--template", "tldr", "--limit", "1")) == 0
    assert [json.loads(line)["template"] for line in out.read_text().splitlines()] == ["tldr"]
    before = out.read_text()
    for other in ([], ["--template", "helpful"]):  # the packaged default, or another one
        assert main(label_argv(pairs, out, *other)) == 2
        assert "differs in template" in capsys.readouterr().err
        assert out.read_text() == before
    assert main(label_argv(pairs, out, "--template", "tldr")) == 0  # the same one resumes
    assert len(read_ids(out)) > 1
    plain = tmp_path / "plain.jsonl"  # without --template: no field, as before
    assert main(label_argv(pairs, plain, "--limit", "1")) == 0
    assert "template" not in json.loads(plain.read_text())
    assert main(label_argv(pairs, plain, "--template", "tldr")) == 2
    assert "differs in template" in capsys.readouterr().err


def test_server_limits_and_the_verdict_cache_reach_the_openai_judge(tmp_path, fake):
    pairs, out = write_pairs(tmp_path / "pairs.jsonl"), tmp_path / "labels.jsonl"
    argv = label_argv(pairs, out, "--backend", "openai", "--base-url", "http://127.0.0.1:9",
                      "--timeout", "5", "--retries", "1", "--deadline", "20",
                      "--requests-per-minute", "600", "--tokens-per-minute", "1e5",
                      "--verdict-cache", str(tmp_path / "v.sqlite"))
    assert main(argv) == 0
    options = fake.backend_options
    assert (options["timeout"], options["max_retries"], options["deadline"]) == (5, 1, 20)
    assert (options["requests_per_minute"], options["tokens_per_minute"]) == (600, 1e5)
    assert options["verdict_cache"] == str(tmp_path / "v.sqlite")


def test_server_limits_with_an_in_process_judge_are_refused_before_loading(tmp_path, fake,
                                                                         capsys):
    pairs, out = write_pairs(tmp_path / "pairs.jsonl"), tmp_path / "labels.jsonl"
    assert main(label_argv(pairs, out, "--timeout", "5")) == 2
    assert "--backend openai" in capsys.readouterr().err
    assert fake.judge_loads == [] and not out.exists()


def test_the_default_labeler_is_pmi_for_tldr_and_base_for_hh(tmp_path, fake):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    plain = ["label", "--pairs", str(pairs)]
    assert main([*plain, "--task", "tldr", "--out", str(tmp_path / "t.jsonl")]) == 0
    assert main([*plain, "--task", "helpful", "--out", str(tmp_path / "h.jsonl")]) == 0
    assert [call["prompt"] for call in fake.calls] == ["pmi", "base"]
