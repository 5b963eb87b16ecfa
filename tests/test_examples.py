"""The examples run on the tiny random model, in seconds, and print sensible numbers.

Each example runs in this process (no interpreter start-up, torch already imported) with
the tiny random policy and the embedded data sample (conftest sets the hub offline).
"""

from __future__ import annotations

import importlib.util
import math
import re
import runpy
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
#: Seconds an example may take on the tiny model (a loaded 2-core CI machine included).
BUDGET_S = 120

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_quickstart_trains_three_steps_on_the_tiny_model(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / "quickstart.py"), "--tiny"])
    start = time.perf_counter()
    runpy.run_path(str(EXAMPLES / "quickstart.py"), run_name="__main__")
    assert time.perf_counter() - start < BUDGET_S
    lines = re.findall(r"step (\d): reward ([-+.\d]+), KL ([-+.\d]+)", capsys.readouterr().out)
    assert [int(step) for step, _, _ in lines] == [1, 2, 3]
    for _, reward, kl in lines:
        # brevity reward 1 / (1 + words) lies in (0, 1]; the KL to the start stays small
        assert 0.0 < float(reward) <= 1.0
        assert math.isfinite(float(kl)) and abs(float(kl)) < 1.0


@pytest.mark.parametrize("reward", ["none", "brevity"])
def test_single_file_reinforce_runs_and_logs_finite_metrics(reward, capsys):
    example = load_example("reinforce_single_file")
    start = time.perf_counter()
    history = example.main(["--policy", "tiny-random", "--reward", reward, "--steps", "3",
                            "--num-envs", "2", "--max-new-tokens", "6", "--max-prompt-tokens",
                            "160", "--threads", "1"])
    assert time.perf_counter() - start < BUDGET_S
    assert len(history) == 3
    for row in history:
        assert all(math.isfinite(v) for v in row.values()), row
        assert 1 <= row["length"] <= 6
        if reward == "none":
            assert row["reward"] == 0.0
        else:
            assert 0.0 < row["reward"] <= 1.0
    out = capsys.readouterr().out
    assert len(re.findall(r"^step +\d+ +reward [-+]\d", out, flags=re.M)) == 3
    assert "last completion:" in out


def test_single_file_reinforce_runs_with_the_direct_reward(capsys):
    """reward="direct" (the d-RLAIF judge score), with the tiny random model as judge."""
    example = load_example("reinforce_single_file")
    history = example.main(["--policy", "tiny-random", "--reward", "direct", "--judge",
                            "tiny-random", "--steps", "1", "--num-envs", "2",
                            "--max-new-tokens", "4", "--max-prompt-tokens", "160",
                            "--threads", "1"])
    assert len(history) == 1 and -1.0 <= history[0]["reward"] <= 1.0
    assert all(math.isfinite(v) for v in history[0].values())


def test_single_file_losses_equal_the_library_losses():
    """The standalone file's equations give the same numbers as agents/reinforce.py."""
    from agents.reinforce import kl_penalized_reward, reinforce_losses, sequence_kl

    example = load_example("reinforce_single_file")
    g = torch.Generator().manual_seed(0)
    b, t, beta = 3, 5, 0.05
    logp = -torch.rand((b, t), generator=g) * 3
    ref_logp = -torch.rand((b, t), generator=g) * 3
    values = torch.randn((b, t), generator=g)
    rewards = torch.randn((b,), generator=g)
    mask = torch.ones((b, t))
    mask[0, 3:] = 0
    mask[2, 1:] = 0
    pg, v, kl, returns = example.reinforce_losses(logp, ref_logp, values, rewards, mask, beta)
    want_kl = sequence_kl(logp, ref_logp, mask)
    want_returns = kl_penalized_reward(rewards, want_kl, beta)
    want_pg, want_v = reinforce_losses(logp, values, want_returns, mask)
    torch.testing.assert_close(kl, want_kl)
    torch.testing.assert_close(returns, want_returns)
    torch.testing.assert_close(pg, want_pg)
    torch.testing.assert_close(v, want_v)


def test_single_file_does_not_import_agents():
    text = (EXAMPLES / "reinforce_single_file.py").read_text(encoding="utf-8")
    assert not re.search(r"^\s*(from|import) (agents|rewards)\b", text, flags=re.M)
    assert len(text.splitlines()) <= 300


def test_custom_reward_example_runs_on_the_tiny_models(capsys):
    example = load_example("custom_reward")
    assert example.main(["--judge", "tiny-random", "--policy", "tiny-random",
                         "--episodes", "1", "--max-new-tokens", "4", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    rewards = [float(x) for x in re.findall(r"reward ([-+]\d+\.\d+)", out)]
    assert len(rewards) == 2 and np.all(np.isfinite(rewards))


def test_tianshou_example_runs_on_the_tiny_model(monkeypatch, capsys):
    pytest.importorskip("tianshou")
    example = load_example("tianshou_reinforce")
    monkeypatch.setattr(sys, "argv", ["tianshou_reinforce.py", "--model", "tiny-random",
                                      "--epochs", "1", "--eval-episodes", "2",
                                      "--max-new-tokens", "3", "--num-envs", "1",
                                      "--episodes-per-collect", "2"])
    example.main()
    out = capsys.readouterr().out
    assert "before training: mean reward" in out and "after training: mean reward" in out
