"""``rlaif-gym reproduce`` end to end on tiny random models and the embedded sample data:
every stage (SFT, labels, RMs, RL with seeds and self-improvement, evaluation) and the
report."""

from __future__ import annotations

import json
import re

import pytest

from rlaif_gym.pipelines.report import PAPER
from rlaif_gym.pipelines.reproduce import QUICK

TINY = ["--quick", "--policy", "tiny-random", "--judge", "tiny-random", "--rm-base",
        "tiny-random", "--si-policy", "tiny-random", "--si-judge", "tiny-random", "--source",
        "sample", "--threads", "1"]


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
    for number in (1, 2, 3, 4, 5):
        table = _table(report, number)
        header = next(line for line in table.splitlines() if line.startswith("| "))
        assert re.search(r"\| N( \(.*?\))? \|", header), (number, header)
        assert "95% CI" in header, (number, header)
        assert re.search(r"\d+\.\d%", table), f"Table {number} has no numbers"
    assert "![learning curves](learning_curves.png)" in report
    pngs = ["learning_curves.png", "win_rates.png", "eval/tldr-drlaif/win_rates.png",
            "work/sft/tldr/loss.png"]
    pngs += [f"work/runs/{key}/curves.png" for key in ("tldr/rlaif", "tldr/rlhf",
                                                        "tldr/d-rlaif-s0", "tldr/d-rlaif-s1",
                                                        "helpful/rlaif", "harmless/rlhf",
                                                        "si/d-rlaif-self")]
    for png in pngs:
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    for call in ("train_sft(", "label_to_file(", "train_rm(", "train(TrainConfig(",
                 "evaluate_policies("):
        assert call in report, call
    for section in ("## The SFT start", "## Goals", "## Against the human references",
                    "## Self-improvement", "across seeds", "HH helpful", "harmless rate SFT"):
        assert section in report, section


def test_table_1_puts_the_papers_number_beside_ours(tiny_run):
    out, _ = tiny_run
    table = _table((out / "REPORT.md").read_text(), 1)
    row = next(line for line in table.splitlines() if "| RLAIF vs SFT |" in line)
    paper = PAPER["table1"][("tldr", "RLAIF vs SFT")][0]
    assert f"{100 * paper:.1f}%" in row
    summary = json.loads((out / "eval" / "tldr-rm" / "evaluation.json").read_text())
    ours = next(c for c in summary["comparisons"] if (c["a"], c["b"]) == ("RLAIF", "SFT"))
    assert ours["win_rate"]["n"] == QUICK["eval_n_small"]
    assert f"| {QUICK['eval_n_small']} | {100 * ours['win_rate']['rate']:.1f}% " in row


def test_every_rl_run_starts_from_its_tasks_sft_policy(tiny_run):
    out, _ = tiny_run
    for key, start, steps in (("tldr/rlaif", "sft/tldr", QUICK["rl_steps"]),
                              ("tldr/d-rlaif-s1", "sft/tldr", QUICK["rl_steps"]),
                              ("helpful/rlhf", "sft/helpful", QUICK["hh_rl_steps"]),
                              ("si/d-rlaif-judge", "sft/si-tldr", QUICK["si_rl_steps"])):
        config = json.loads((out / "work" / "runs" / key / "config.json").read_text())
        state = json.loads((out / "work" / "runs" / key / "checkpoint" / "state.json")
                           .read_text())
        assert config["policy"].endswith(f"{start}/policy") and state["step"] == steps, key
    seeds = {json.loads((out / "work" / "runs" / f"tldr/d-rlaif-s{s}" / "config.json")
                        .read_text())["seed"] for s in QUICK["seeds"]}
    assert seeds == set(QUICK["seeds"])
    assert json.loads((out / "work" / "runs" / "tldr/rlaif" / "config.json").read_text())[
        "reward"] == "ai-rm"
    assert (out / "work" / ".gitignore").read_text().splitlines()[-1] == "*"


def test_self_improvement_runs_use_the_leave_one_out_baseline_without_a_value_model(tiny_run):
    out, _ = tiny_run
    for key in ("si/d-rlaif-self", "si/d-rlaif-judge"):
        folder = out / "work" / "runs" / key
        config = json.loads((folder / "config.json").read_text())
        assert (config["baseline"], config["samples_per_prompt"]) == ("loo", 2), key
        assert not (folder / "checkpoint" / "value.safetensors").exists(), key
    main = json.loads((out / "work" / "runs" / "tldr/d-rlaif-s0" / "config.json").read_text())
    assert (main["baseline"], main["samples_per_prompt"]) == ("value", 1)


def test_finished_reward_models_and_rl_runs_keep_no_optimizer_state(tiny_run):
    out, _ = tiny_run
    work = out / "work"
    assert len(list(work.glob("rm/*/*/rm_meta.json"))) == 7
    assert not list(work.rglob("trainer_state.pt"))
    assert not list(work.glob("runs/*/*/checkpoint/value.safetensors"))
    for key in ("tldr/rlaif", "tldr/d-rlaif-s0", "helpful/rlhf"):
        state = json.loads((work / "runs" / key / "checkpoint" / "state.json").read_text())
        assert state["training_state"] is False, key


def test_sft_never_trains_on_an_evaluation_prompt(tiny_run):
    out, _ = tiny_run
    for task in ("tldr", "helpful", "harmless"):
        evaluated = set(json.loads((out / "data" / task / "eval_ids.json").read_text()))
        split = json.loads((out / "work" / "sft" / task / "split.json").read_text())
        assert evaluated and not evaluated & set(split["train_ids"] + split["heldout_ids"])


def test_a_rerun_skips_every_cached_stage(tiny_run, capsys):
    from rlaif_gym.cli import main

    out, _ = tiny_run
    before = (out / "eval" / "tldr-drlaif" / "judgments.jsonl").read_text()
    assert main(["reproduce", *TINY, "--out", str(out)]) == 0
    state = json.loads((out / "state.json").read_text())
    for stage in ("data", "reward_models", "rm_accuracy", "rl tldr/rlaif", "rl tldr/d-rlaif-s0",
                  "rl si/d-rlaif-self"):
        assert state["stages"][stage]["runs"][-1]["skipped"], stage
    assert (out / "eval" / "tldr-drlaif" / "judgments.jsonl").read_text() == before


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


def test_the_device_option_is_parsed_but_does_not_change_the_cached_settings():
    from rlaif_gym.cli import build_parser, reproduce_config_from_args

    on_gpu = reproduce_config_from_args(build_parser().parse_args(
        ["reproduce", "--quick", "--device", "cuda"]))
    on_cpu = reproduce_config_from_args(build_parser().parse_args(["reproduce", "--quick"]))
    assert (on_gpu.device, on_cpu.device) == ("cuda", "cpu")
    assert on_gpu.pipeline() == on_cpu.pipeline() and "device" not in on_gpu.pipeline()


def test_reference_evaluation_larger_than_eval_n_is_refused_before_any_stage(tmp_path, capsys):
    from rlaif_gym.cli import main

    out = tmp_path / "out"
    assert main(["reproduce", *TINY, "--eval-n", "4", "--eval-n-ref", "6", "--out",
                 str(out)]) == 2
    assert "eval_n_ref (6) must be <= eval_n (4)" in capsys.readouterr().err
    assert not out.exists()


def test_d_rlaif_is_judged_against_the_references_on_eval_n_ref_prompts(tiny_run):
    out, _ = tiny_run
    ref = json.loads((out / "eval" / "tldr-ref" / "evaluation.json").read_text())
    sft = json.loads((out / "eval" / "tldr-drlaif" / "evaluation.json").read_text())
    assert ref["comparisons"][0]["win_rate"]["n"] == QUICK["eval_n_ref"]
    assert "REF" not in sft["policies"] and "REF" in ref["policies"]
