"""``rlaif-gym reproduce`` end to end on tiny random models and the embedded sample data."""

from __future__ import annotations

import json
import re

import pytest

from rlaif_gym.pipelines.reproduce import PAPER, QUICK

TINY = ["--quick", "--policy", "tiny-random", "--judge", "tiny-random", "--rm-base",
        "tiny-random", "--source", "sample", "--threads", "1"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from rlaif_gym.cli import main

    out = tmp_path_factory.mktemp("reproduce") / "out"
    code = main(["reproduce", *TINY, "--out", str(out)])
    return out, code


def _table(report: str, number: int) -> str:
    start = report.index(f"## Table {number}:")
    end = report.find("\n## ", start + 1)
    return report[start:end if end > 0 else None]


def test_tiny_reproduction_runs_every_stage_and_writes_the_report(tiny_run):
    out, code = tiny_run
    assert code == 0
    report = (out / "REPORT.md").read_text()
    for number in range(1, 6):
        table = _table(report, number)
        header = next(line for line in table.splitlines() if line.startswith("| "))
        assert re.search(r"\| N( \(.*?\))? \|", header), (number, header)
        assert "95% CI" in header, (number, header)
        assert re.search(r"\d+\.\d%", table), f"Table {number} has no numbers"
    assert "![learning curves](learning_curves.png)" in report
    for png in ("learning_curves.png", "win_rates.png", "eval/win_rates.png",
                "work/runs/rlaif/curves.png", "work/runs/rlhf/curves.png",
                "work/runs/d-rlaif/curves.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert "train_rm(" in report and "evaluate_policies(" in report


def test_table_1_puts_the_papers_number_beside_ours(tiny_run):
    out, _ = tiny_run
    table = _table((out / "REPORT.md").read_text(), 1)
    row = next(line for line in table.splitlines() if "| RLAIF vs SFT |" in line)
    paper = PAPER["table1"][("tldr", "RLAIF vs SFT")][0]
    assert f"{100 * paper:.1f}%" in row
    summary = json.loads((out / "eval" / "evaluation.json").read_text())
    ours = next(c for c in summary["comparisons"] if (c["a"], c["b"]) == ("RLAIF", "SFT"))
    assert ours["win_rate"]["n"] == QUICK["eval_n"]
    assert f"| {QUICK['eval_n']} | {100 * ours['win_rate']['rate']:.1f}% |" in row


def test_rl_runs_reach_the_requested_steps_from_the_same_start(tiny_run):
    out, _ = tiny_run
    for run in ("rlaif", "rlhf", "d-rlaif"):
        config = json.loads((out / "work" / "runs" / run / "config.json").read_text())
        state = json.loads((out / "work" / "runs" / run / "checkpoint" / "state.json")
                           .read_text())
        assert config["policy"] == "tiny-random" and state["step"] == QUICK["rl_steps"]
    assert json.loads((out / "work" / "runs" / "rlaif" / "config.json").read_text())["reward"] \
        == "ai-rm"
    assert (out / "work" / ".gitignore").read_text().splitlines()[-1] == "*"


def test_a_rerun_skips_every_cached_stage(tiny_run, capsys):
    from rlaif_gym.cli import main

    out, _ = tiny_run
    before = (out / "eval" / "judgments.jsonl").read_text()
    assert main(["reproduce", *TINY, "--out", str(out)]) == 0
    state = json.loads((out / "state.json").read_text())
    for stage in ("data", "reward_models", "rm_accuracy", "rl_rlaif", "rl_rlhf", "rl_d-rlaif"):
        assert state["stages"][stage]["runs"][-1]["skipped"], stage
    assert (out / "eval" / "judgments.jsonl").read_text() == before


def test_a_rerun_with_other_sizes_is_refused(tiny_run, capsys):
    from rlaif_gym.cli import main

    out, _ = tiny_run
    assert main(["reproduce", *TINY, "--rl-steps", "3", "--out", str(out)]) == 2
    assert "rl_steps: 2 -> 3" in capsys.readouterr().err


def test_the_command_written_in_the_report_parses_back_to_the_same_settings(tiny_run):
    import shlex

    from rlaif_gym.cli import build_parser, reproduce_config_from_args

    out, _ = tiny_run
    report = (out / "REPORT.md").read_text()
    command = report.split("Reproduce with:\n\n```\n", 1)[1].split("\n", 1)[0]
    assert command.startswith("rlaif-gym reproduce ")
    parsed = build_parser().parse_args(shlex.split(command)[1:])
    state = json.loads((out / "state.json").read_text())
    assert reproduce_config_from_args(parsed).pipeline() == state["config"]
