"""Completions of a training run's checkpointed policy on held-out prompts
(``rlaif-gym sample``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.postprocess import POSTPROCESSORS
from agents.rollout import collect_episodes
from agents.train import find_checkpoint
from rlaif_gym.envs.registration import ENV_IDS
from rlaif_gym.errors import UsageError
from rlaif_gym.files import read_json

__all__ = ["SampleResult", "sample_run"]


@dataclass
class SampleResult:
    """What :func:`sample_run` sampled.

    Attributes:
        checkpoint: the checkpoint folder; step: its training step.
        env_id, split, data_source, temperature: where the prompts came from and how.
        prompts: the task inputs ``(n,)``; prompt_indices: their indices in the split.
        completions: the decoded completions ``(n,)``; tokens: their lengths in tokens.
        postprocessed: the run's post-processing of each completion, or None when the run
            had none.
    """

    checkpoint: Path
    step: int
    env_id: str
    split: str
    data_source: str
    temperature: float
    prompts: list[str]
    prompt_indices: list[int]
    completions: list[str]
    tokens: list[int]
    postprocessed: list[str] | None


def sample_run(run_dir: str | os.PathLike[str], *, n: int = 5, split: str | None = None,
               data_dir: str | os.PathLike[str] | None = None, temperature: float | None = None,
               seed: int = 0, threads: int | None = None) -> SampleResult:
    """Sample ``n`` completions from ``run_dir/checkpoint/policy`` on the run's held-out split.

    Args:
        run_dir: a ``rlaif-gym train`` run folder.
        n: completions (one per prompt). split: prompt split (default the run's
            ``eval_split``). data_dir: default the run's. temperature: default the run's.
        seed: sampling seed. threads: torch CPU threads.

    Raises:
        UsageError: no checkpoint in ``run_dir``, or a checkpoint whose env id is not a
            registered rlaif-gym id (a ``module:Env`` string would import a module named by a
            file).
    """
    import gymnasium as gym
    import torch
    from gymnasium.vector import AutoresetMode

    from rlaif_gym.models import load_causal_lm

    checkpoint = find_checkpoint(run_dir)
    if checkpoint is None:
        raise UsageError(f"no checkpoint in {run_dir} (expected {run_dir}/checkpoint/)")
    state = read_json(checkpoint / "state.json")
    config: dict[str, Any] = state["config"]
    env_id = str(config.get("env_id"))
    if env_id not in ENV_IDS:
        raise UsageError(f"{checkpoint / 'state.json'} names env {env_id!r}, which is not a "
                         f"registered rlaif-gym env ({', '.join(ENV_IDS)})")
    if threads is not None:
        torch.set_num_threads(threads)
    policy = load_causal_lm(checkpoint / "policy", dtype=config.get("dtype"),
                            device=config.get("device", "cpu"))
    split = split or config.get("eval_split", "test")
    envs = gym.make_vec(
        env_id, num_envs=n, vectorization_mode="vector_entry_point",
        autoreset_mode=AutoresetMode.DISABLED, reward="none", policy=str(checkpoint / "policy"),
        split=split, data_dir=data_dir or config.get("data_dir"),
        max_prompt_tokens=config["max_prompt_tokens"], max_new_tokens=config["max_new_tokens"],
        vocab_size=int(policy.config.vocab_size),
    )
    try:
        temperature = temperature or config["temperature"]
        device = next(policy.parameters()).device
        batch = collect_episodes(policy, envs, temperature=temperature, seed=seed,
                                 generator=torch.Generator(device=device).manual_seed(seed))
        post_name = str(config.get("postprocess"))
        post = POSTPROCESSORS.get(post_name) if post_name != "none" else None
        return SampleResult(
            checkpoint=checkpoint, step=int(state["step"]), env_id=env_id, split=split,
            data_source=str(envs.unwrapped.data_source), temperature=float(temperature),
            prompts=list(batch.prompts),
            prompt_indices=[int(batch.final_infos[i].get("prompt_index", -1))
                            for i in range(n)],
            completions=list(batch.completions),
            tokens=[len(ids) for ids in batch.completion_ids],
            postprocessed=[post(c) for c in batch.completions] if post else None)
    finally:
        envs.close()
