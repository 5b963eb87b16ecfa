"""Fault injection: every long-running command keeps the user's data.

Each command (``label``, ``train``, ``train-rm``, ``evaluate``; ``reproduce`` under SIGKILL)
runs on tiny random models under each fault, then the SAME command runs again, and its
results must equal those of an uninterrupted run exactly: nothing lost, duplicated or
corrupted. Faults:

* SIGINT after k units of work: exit 130 within seconds;
* SIGKILL after k units of work (the process dies mid-run, no cleanup);
* a torn last line or row in each file the command appends to (or its split file);
* a full disk: ``OSError(ENOSPC)`` on the k-th write: one line, exit 2;
* a judge that raises in the middle of a batch (k-th call): one line, exit 2.

The points ``k`` are drawn from ``random.Random(SEED)`` (``RLAIF_FAULT_SEED`` overrides it),
so a failure reproduces; the seed is in every assertion message. The killed runs go
through ``tests/fault_runner.py``, which prints ``MARK`` after every unit of work.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rlaif_gym.cli import main

REPO = Path(__file__).resolve().parents[1]
SEED = int(os.environ.get("RLAIF_FAULT_SEED", "20261203"))
RUNNER = REPO / "tests" / "fault_runner.py"


# --------------------------------------------------------------------------- the commands


@dataclass
class Command:
    """One command line (a function of the work folder and the shared inputs), the files it
    appends to, how to read its result, and whether a judge scores in it."""

    name: str
    argv: Callable[[Path, Path], list[str]]
    appended: Callable[[Path], list[Path]]
    result: Callable[[Path], Any]
    judge: bool


def _labels(work: Path) -> Any:
    return (work / "labels.jsonl").read_bytes()


def _metrics(work: Path) -> Any:
    from agents.train import read_metrics

    rows = read_metrics(work / "run" / "metrics.csv")
    return [{k: v for k, v in r.items() if not k.startswith("time")
             and k != "judge_limit_wait_s"} for r in rows]


def _rm(work: Path) -> Any:
    meta = json.loads((work / "rm" / "rm_meta.json").read_text())
    digest = hashlib.sha256((work / "rm" / "model.safetensors").read_bytes()).hexdigest()
    return digest, meta["step"], meta.get("metrics")


def _evaluation(work: Path) -> Any:
    summary = json.loads((work / "eval" / "evaluation.json").read_text())
    keys = [json.loads(line)["key"] for line in
            (work / "eval" / "judgments.jsonl").read_text().splitlines()]
    assert len(keys) == len(set(keys)), "a judgment was written twice"
    return summary["comparisons"], summary["policies"]


def _reproduction(work: Path) -> Any:
    out = work / "repro"
    summary = json.loads((out / "eval" / "tldr-drlaif" / "evaluation.json").read_text())
    accuracy = json.loads((out / "rm_accuracy.json").read_text())
    table1 = [line for line in (out / "REPORT.md").read_text().splitlines()
              if line.startswith("| TL;DR |")]  # the win-rate rows (other rows name folders)
    return summary["comparisons"], accuracy, table1


COMMANDS = {
    "label": Command(
        "label", lambda w, i: ["label", "--task", "tldr", "--pairs", str(i / "pairs.jsonl"),
                               "--judge", "tiny-random", "--batch-size", "1", "--threads", "1",
                               "--out", str(w / "labels.jsonl")],
        lambda w: [w / "labels.jsonl"], _labels, judge=True),
    "train": Command(
        "train", lambda w, i: ["train", "--policy", "tiny-random", "--reward", "direct",
                               "--judge", "tiny-random", "--split", "sample", "--steps", "6",
                               "--batch-size", "2", "--max-new-tokens", "3",
                               "--max-prompt-tokens", "256", "--checkpoint-every", "2",
                               "--threads", "1", "--no-progress", "--resume",
                               "--out", str(w / "run")],
        lambda w: [w / "run" / "metrics.csv"], _metrics, judge=True),
    "train-rm": Command(
        "train-rm", lambda w, i: ["train-rm", "--human", "--task", "tldr", "--pairs",
                                  str(i / "pairs.jsonl"), "--base", "tiny-random", "--epochs",
                                  "2", "--batch-size", "2", "--max-length", "160",
                                  "--save-every", "1", "--threads", "1", "--no-progress",
                                  "--resume", "--out", str(w / "rm")],
        lambda w: [w / "rm" / "split.json"], _rm, judge=False),
    "evaluate": Command(
        "evaluate", lambda w, i: ["evaluate", "--task", "tldr", "--policy", "A=tiny-random",
                                  "--policy", f"B={i / 'tiny1'}", "--judge", "tiny-random",
                                  "--split", "sample", "--n", "5", "--max-new-tokens", "3",
                                  "--max-prompt-tokens", "256", "--batch-size", "2",
                                  "--judge-batch-size", "2", "--bootstrap", "20",
                                  "--threads", "1", "--no-progress", "--out",
                                  str(w / "eval")],
        lambda w: [w / "eval" / "judgments.jsonl"], _evaluation, judge=True),
}
REPRODUCE = Command(
    "reproduce", lambda w, i: ["reproduce", "--quick", "--policy", "tiny-random", "--judge",
                               "tiny-random", "--rm-base", "tiny-random", "--si-policy",
                               "tiny-random", "--si-judge", "tiny-random", "--source", "sample",
                               "--threads", "1", "--out", str(w / "repro")],
    lambda w: [], _reproduction, judge=True)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    from rlaif_gym.testing import make_tiny_causal_lm, make_tiny_tokenizer

    folder = tmp_path_factory.mktemp("fault-inputs")
    with (folder / "pairs.jsonl").open("w") as f:
        for i in range(10):
            f.write(json.dumps({"id": f"p{i}", "context": f"post {i} " + "word " * (i % 3),
                                "responses": [f"summary A{i}", f"other summary B{i}"],
                                "human_choice": i % 2}) + "\n")
    make_tiny_causal_lm(seed=1).save_pretrained(folder / "tiny1")
    make_tiny_tokenizer().save_pretrained(folder / "tiny1")
    return folder


def run_marked(argv: list[str], delay: float = 0.0, *, stop_after: int | None = None,
               sig: int = signal.SIGKILL, timeout: float = 180) -> tuple[int, int, float]:
    """Run ``argv`` through the fault runner; with ``stop_after=k`` send ``sig`` after k
    units. Returns ``(exit code, units seen, seconds from the signal to the exit)``."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(RUNNER), str(delay), "--", *argv], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    units, signalled = 0, None
    deadline = time.monotonic() + timeout
    try:
        for line in proc.stdout:
            if line.strip() == "MARK":
                units += 1
                if stop_after is not None and units == stop_after and signalled is None:
                    proc.send_signal(sig)
                    signalled = time.monotonic()
            assert time.monotonic() < deadline, f"{argv[0]} took over {timeout} s"
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, units, (time.monotonic() - signalled) if signalled else 0.0


@pytest.fixture(scope="module")
def references(inputs, tmp_path_factory) -> dict[str, tuple[Any, int]]:
    """Each command's uninterrupted result and its number of units of work."""
    out = {}
    for name, command in COMMANDS.items():
        work = tmp_path_factory.mktemp(f"ref-{name}")
        code, units, _ = run_marked(command.argv(work, inputs))
        assert code == 0 and units >= 3, (name, code, units)
        out[name] = (command.result(work), units)
    return out


def point(name: str, fault: str, units: int) -> int:
    """The seeded unit of work after which ``fault`` strikes ``name``: 1 <= k < units."""
    return random.Random(f"{SEED}-{name}-{fault}").randint(1, units - 1)


def rerun_matches(command: Command, work: Path, inputs: Path, expected: Any, what: str) -> None:
    assert main(command.argv(work, inputs)) == 0, f"{what}: the rerun failed (seed {SEED})"
    assert command.result(work) == expected, f"{what}: the rerun differs (seed {SEED})"


def one_error_line(capsys, command: str, *words: str) -> None:
    err = [line for line in capsys.readouterr().err.splitlines()
           if f"rlaif-gym {command}: error:" in line]
    assert len(err) == 1 and all(w in err[0] for w in words), err


# --------------------------------------------------------------------------- the faults


@pytest.mark.parametrize("name", list(COMMANDS))
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_a_signal_mid_run_then_the_same_command_gives_the_uninterrupted_result(
        name, sig, inputs, references, tmp_path):
    command, (expected, units) = COMMANDS[name], references[name]
    k = point(name, signal.Signals(sig).name, units)
    code, _, seconds = run_marked(command.argv(tmp_path, inputs), delay=0.3, stop_after=k,
                                  sig=sig)
    what = f"{name} {signal.Signals(sig).name} after {k} of {units} units"
    if sig == signal.SIGINT:
        assert code == 130 and seconds < 5, f"{what}: exit {code} after {seconds:.1f} s"
    else:
        assert code == -signal.SIGKILL, what
    rerun_matches(command, tmp_path, inputs, expected, what)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_torn_last_line_of_each_appended_file_is_repaired_by_the_rerun(
        name, inputs, references, tmp_path):
    command, (expected, _) = COMMANDS[name], references[name]
    assert main(command.argv(tmp_path, inputs)) == 0
    for path in command.appended(tmp_path):
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 7])  # the power went off mid-line
    rerun_matches(command, tmp_path, inputs, expected, f"{name} with torn files")


def _write_functions(name: str) -> list[tuple[Any, str]]:
    import agents.train
    import rewards.reward_model
    import rlaif_gym.files

    return {"label": [(rlaif_gym.files.JsonlAppender, "write")],
            "evaluate": [(rlaif_gym.files.JsonlAppender, "write")],
            "train": [(agents.train.MetricsWriter, "write")],
            "train-rm": [(rewards.reward_model, "_commit")]}[name]


def _fail_on_call(k: int, make_error: Callable[[], BaseException]):
    calls = {"n": 0}

    def wrap(fn):
        def wrapper(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == k:
                raise make_error()
            return fn(*args, **kwargs)
        return wrapper

    return wrap


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_full_disk_is_one_line_and_the_rerun_completes_the_result(
        name, inputs, references, tmp_path, monkeypatch, capsys):
    command, (expected, units) = COMMANDS[name], references[name]
    k = point(name, "ENOSPC", units)
    wrap = _fail_on_call(k, lambda: OSError(errno.ENOSPC, "No space left on device"))
    with monkeypatch.context() as patch:
        for owner, attr in _write_functions(name):
            patch.setattr(owner, attr, wrap(getattr(owner, attr)))
        assert main(command.argv(tmp_path, inputs)) == 2, f"{name} ENOSPC at {k} ({SEED})"
    one_error_line(capsys, name, "No space left")
    rerun_matches(command, tmp_path, inputs, expected, f"{name} ENOSPC at write {k}")


@pytest.mark.parametrize("name", [n for n, c in COMMANDS.items() if c.judge])
def test_a_judge_that_raises_mid_batch_is_one_line_and_the_rerun_completes(
        name, inputs, references, tmp_path, monkeypatch, capsys):
    from rewards.judges.base import JudgeError
    from rewards.judges.transformers_judge import TransformersJudge

    command, (expected, _) = COMMANDS[name], references[name]
    k = random.Random(f"{SEED}-{name}-judge").randint(2, 4)
    wrap = _fail_on_call(k, lambda: JudgeError("judge server returned 503"))
    with monkeypatch.context() as patch:
        for attr in ("next_token_logprobs", "next_token_logprobs_two_step",
                     "next_token_logprobs_shared_prefix", "continuation_logprobs"):
            patch.setattr(TransformersJudge, attr, wrap(getattr(TransformersJudge, attr)))
        assert main(command.argv(tmp_path, inputs)) == 2, f"{name} judge fault ({SEED})"
    one_error_line(capsys, name, "503")
    rerun_matches(command, tmp_path, inputs, expected, f"{name} judge raising at call {k}")


def test_reproduce_killed_at_a_random_point_resumes_to_the_same_report(inputs, tmp_path):
    reference = tmp_path / "ref"
    code, units, _ = run_marked(REPRODUCE.argv(reference, inputs))
    assert code == 0 and units >= 3
    k = point("reproduce", "SIGKILL", units)
    code, _, _ = run_marked(REPRODUCE.argv(tmp_path / "killed", inputs), delay=0.05,
                            stop_after=k)
    assert code == -signal.SIGKILL
    rerun_matches(REPRODUCE, tmp_path / "killed", inputs, REPRODUCE.result(reference),
                  f"reproduce SIGKILL after {k} of {units} units")
    shutil.rmtree(tmp_path / "ref", ignore_errors=True)
