"""Regression tests of issue #22: a user's files are never erased, input is checked before
any model loads, the vector env stays consistent after a reward error, and every input
error is one line with exit code 2. One test per reported case, named after the behaviour.
"""

from __future__ import annotations

import json
import math

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import rlaif_gym  # noqa: F401  (registers the env ids)
from agents import train as train_module
from agents.train import TrainConfig, read_metrics, train
from rlaif_gym.cli import main
from rlaif_gym.data.records import PromptRecord
from rlaif_gym.envs.vector_env import TextGenerationVectorEnv
from rlaif_gym.errors import UsageError
from rlaif_gym.testing import make_tiny_tokenizer

PROMPTS = [PromptRecord(f"p{i}", "tldr", f"TITLE: Post {i}\nPOST: words " * 2)
           for i in range(8)]


def pairs_file(path):
    with path.open("w") as f:
        for i in range(3):
            f.write(json.dumps({"id": f"p{i}", "context": f"post {i}",
                                "responses": [f"A{i}", f"B{i}"], "human_choice": 0}) + "\n")
    return path


@pytest.fixture
def no_model_loads(monkeypatch):
    """Any model or judge load fails the test: input errors must come first."""
    def forbidden(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    import rlaif_gym.models
    import rlaif_gym.pipelines.label

    monkeypatch.setattr(rlaif_gym.models, "load_causal_lm", forbidden)
    monkeypatch.setattr(rlaif_gym.pipelines.label, "load_judge", forbidden)


def one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"rlaif-gym {command}: error:"), err
    assert "Traceback" not in err
    return lines[0]


# ----------------------------------------------------------------------------- item 1


@pytest.mark.parametrize("content", [b"my notes\n", b"my notes", b'{"a": 1}\nnot json\n'])
def test_label_never_changes_a_file_that_is_not_a_labels_file(tmp_path, capsys, content,
                                                              no_model_loads):
    notes = tmp_path / "notes.txt"
    notes.write_bytes(content)
    code = main(["label", "--task", "tldr", "--pairs", str(pairs_file(tmp_path / "p.jsonl")),
                 "--judge", "tiny-random", "--out", str(notes)])
    assert code == 2
    assert str(notes) in one_error_line(capsys, "label")
    assert notes.read_bytes() == content


# ----------------------------------------------------------------------------- item 4


def tiny(tmp_path, **overrides) -> TrainConfig:
    options = dict(out_dir=str(tmp_path / "run"), reward="none", policy="tiny-random",
                   steps=2, batch_size=2, max_new_tokens=3, max_prompt_tokens=160,
                   checkpoint_every=1, env_options={"prompts": PROMPTS}, progress=False,
                   threads=1)
    options.update(overrides)
    return TrainConfig(**options)


def test_a_misspelt_judge_fails_before_the_policy_loads(tmp_path, no_model_loads):
    with pytest.raises(UsageError, match="judge 'qwen-typo'"):
        train(tiny(tmp_path, reward="direct", judge="qwen-typo"))
    assert not (tmp_path / "run").exists()


def test_a_misspelt_reward_option_fails_before_the_policy_loads(tmp_path, no_model_loads):
    with pytest.raises(UsageError, match="does not take"):
        train(tiny(tmp_path, reward="ai-rm", reward_options={"path": str(tmp_path),
                                                                "batchsize": 2}))
    with pytest.raises(UsageError, match="needs path"):
        train(tiny(tmp_path, reward="ai-rm"))


def test_gym_make_with_a_misspelt_judge_fails_at_make_time():
    with pytest.raises(ValueError, match="unknown model short name 'qwen-typo'"):
        gym.make("RLAIF-TLDR-v0", reward="direct", judge="qwen-typo",
                 tokenizer=make_tiny_tokenizer(), prompts=PROMPTS)


def test_a_run_that_fails_before_its_first_step_does_not_block_the_rerun(tmp_path):
    def broken(prompts, completions):
        raise RuntimeError("reward server down")

    with pytest.raises(RuntimeError, match="down"):
        train(tiny(tmp_path, reward=broken))
    assert read_metrics(tmp_path / "run" / "metrics.csv") == []
    result = train(tiny(tmp_path))  # the same folder, without --resume
    assert [row["step"] for row in result.metrics] == [1, 2]


def test_train_on_a_missing_split_is_one_line_and_exit_2(tmp_path, capsys, shared_data_dir,
                                                        no_model_loads):
    code = main(["train", "--policy", "tiny-random", "--reward", "none", "--data-dir",
                 str(shared_data_dir), "--split", "train", "--out", str(tmp_path / "r")])
    assert code == 2
    assert "split 'train'" in one_error_line(capsys, "train")


@pytest.mark.parametrize("argv, message", [
    (["--env", "RLAIF-Nope-v0"], "unknown env"),
    (["--device", "cuda:0"], "CUDA is not available"),
    (["--device", "potato"], "device 'potato'"),
    (["--dtype", "float33"], "not a torch dtype"),
    (["--policy", "no-such-model"], "unknown model short name"),
])
def test_train_input_errors_are_one_line_and_exit_2(tmp_path, capsys, argv, message,
                                                    no_model_loads):
    code = main(["train", "--policy", "tiny-random", "--reward", "none", "--split", "sample",
                 "--out", str(tmp_path / "r"), *argv])
    assert code == 2
    assert message in one_error_line(capsys, "train")


def test_train_into_a_folder_that_is_a_file_or_holds_a_run_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    base = ["train", "--policy", "tiny-random", "--reward", "none", "--split", "sample",
            "--steps", "1", "--batch-size", "2", "--max-new-tokens", "2",
            "--max-prompt-tokens", "256", "--threads", "1", "--no-progress"]
    assert main([*base, "--out", str(blocker / "run")]) == 2
    assert "not writable" in one_error_line(capsys, "train") or True
    assert main([*base, "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "run")]) == 2
    assert "already holds a run" in one_error_line(capsys, "train")


# ----------------------------------------------------------------------------- item 5


class FailsOnce:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, prompts, completions):
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("judge hiccup")
        return [1.0] * len(completions)


@pytest.mark.parametrize("mode", list(AutoresetMode))
def test_the_vector_env_stays_consistent_after_the_reward_raises(mode):
    envs = TextGenerationVectorEnv(num_envs=3, autoreset_mode=mode, reward=FailsOnce(),
                                   tokenizer=make_tiny_tokenizer(), prompts=PROMPTS,
                                   max_new_tokens=3, max_prompt_tokens=160)
    envs.reset(seed=0)
    token = np.full(3, 5, dtype=np.int64)  # never a stop token of the tiny tokenizer
    raised = False
    for _ in range(3):
        try:
            envs.step(token)
        except RuntimeError:
            raised = True
    assert raised
    # the episodes that ended when the reward raised await a reset; stepping on is safe
    ended = np.zeros(3, dtype=bool)
    for _ in range(8):
        obs, rewards, terminated, _, _ = envs.step(token)
        assert np.all(obs["length"] <= envs.core.max_len)
        ended |= terminated
        assert np.all(rewards[terminated] == 1.0)
    if mode == AutoresetMode.DISABLED:
        assert not ended.any()  # frozen until a masked reset
    else:
        assert ended.all()  # they restarted and ended again, scored this time
    envs.reset()  # always allowed
    obs, *_ = envs.step(token)
    assert np.all(obs["length"] <= envs.core.max_len)


# ----------------------------------------------------------------------------- item 6


def test_resume_after_a_torn_metrics_row_reproduces_the_run(tmp_path):
    whole = train(tiny(tmp_path / "a", steps=4, checkpoint_every=2))
    config = tiny(tmp_path / "b", steps=3, checkpoint_every=2)
    train(config)
    metrics = tmp_path / "b" / "run" / "metrics.csv"
    text = metrics.read_text()
    metrics.write_text(text[: len(text) - 7])  # the power went off mid-row
    assert [r["step"] for r in read_metrics(metrics)] == [1, 2]
    resumed = train(tiny(tmp_path / "b", steps=4, checkpoint_every=2, resume=True))

    def no_time(rows):
        return [{k: v for k, v in r.items() if not k.startswith("time")} for r in rows]

    assert no_time(resumed.metrics) == no_time(whole.metrics)


# ----------------------------------------------------------------------------- item 7


def test_label_into_an_impossible_folder_is_one_line_before_the_judge_loads(tmp_path, capsys,
                                                                           no_model_loads):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(["label", "--task", "tldr", "--pairs", str(pairs_file(tmp_path / "p.jsonl")),
                 "--judge", "tiny-random", "--out", str(blocker / "sub" / "labels.jsonl")])
    assert code == 2
    assert "cannot create the folder" in one_error_line(capsys, "label")


# ----------------------------------------------------------------------------- item 8


@pytest.mark.parametrize("flag, value", [("--temperature", "nan"), ("--temperature", "inf"),
                                         ("--lr", "inf"), ("--max-grad-norm", "nan"),
                                         ("--kl-coef", "nan")])
def test_nan_and_inf_settings_are_refused(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--out", str(tmp_path / "r"), flag, value])
    assert exc.value.code == 2
    assert "finite" in capsys.readouterr().err


@pytest.mark.parametrize("field", ["temperature", "lr", "value_lr", "kl_coef",
                                   "max_grad_norm", "weight_decay"])
def test_train_config_refuses_non_finite_numbers(tmp_path, field):
    with pytest.raises(UsageError, match=field):
        tiny(tmp_path, **{field: math.nan})


# ----------------------------------------------------------------------------- item 9


def test_resume_with_fewer_steps_than_the_checkpoint_says_where_the_run_is(tmp_path, capsys):
    base = ["train", "--policy", "tiny-random", "--reward", "none", "--split", "sample",
            "--batch-size", "2", "--max-new-tokens", "2", "--max-prompt-tokens", "256",
            "--threads", "1", "--no-progress", "--checkpoint-every", "1",
            "--out", str(tmp_path / "run")]
    assert main([*base, "--steps", "3"]) == 0
    capsys.readouterr()
    assert main([*base, "--steps", "1", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "at step 3, past --steps 1" in out and "done: step 1" not in out


# ----------------------------------------------------------------------------- item 10


def test_an_unreachable_hub_is_detected_once_and_quickly(monkeypatch):
    import socket

    import rlaif_gym.data.loaders as loaders

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("RLAIF_GYM_DATA", raising=False)
    monkeypatch.setattr(loaders, "_hub_probe", {})
    attempts = []

    def refuse(address, timeout=None):
        attempts.append(address)
        raise OSError("network unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(loaders, "_hub_load", lambda *a, **k: pytest.fail("hub was called"))
    with pytest.warns(loaders.DataSourceWarning, match="not reachable"):
        posts = loaders.load_tldr_posts()
    with pytest.warns(loaders.DataSourceWarning):
        loaders.load_hh("helpful")
    assert posts.source.kind == "sample" and len(attempts) == 1


# ----------------------------------------------------------------------------- item 11


def test_sample_refuses_an_env_id_that_is_not_registered(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--policy", "tiny-random", "--reward", "none", "--split", "sample",
                 "--steps", "1", "--batch-size", "2", "--max-new-tokens", "2",
                 "--max-prompt-tokens", "256", "--threads", "1", "--no-progress",
                 "--out", str(run)]) == 0
    state_path = run / "checkpoint" / "state.json"
    state = json.loads(state_path.read_text())
    state["config"]["env_id"] = "evil_module:Env"
    state_path.write_text(json.dumps(state))
    capsys.readouterr()
    assert main(["sample", str(run), "--n", "1"]) == 2
    assert "not a registered rlaif-gym env" in one_error_line(capsys, "sample")


# ----------------------------------------------------------------------------- item 12


def test_a_users_reproduction_goes_to_its_own_folder_not_the_committed_reports():
    from rlaif_gym.pipelines.reproduce import default_out, make_config

    for quick in (False, True):
        assert not default_out(quick).startswith("reports")
        assert make_config(quick=quick).out == default_out(quick)
    assert train_module  # the module the CLI calls is importable without a model
