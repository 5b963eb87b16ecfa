"""A short d-RLAIF episode batch on the embedded defaults (``rlaif-gym demo``).

Loads the default policy (SmolLM2-135M-Instruct) and the default judge
(Qwen2.5-Coder-1.5B-Instruct), samples one episode per sub-env of the native vector env at
temperature 0.9, and returns each prompt, completion and d-RLAIF reward in [-1, 1].
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from agents.rollout import collect_episodes
from rewards.direct import DirectReward
from rlaif_gym.defaults import DEFAULT_JUDGE, DEFAULT_POLICY
from rlaif_gym.envs.registration import TASK_ENV_IDS
from rlaif_gym.errors import UsageError

__all__ = ["DemoResult", "demo"]


@dataclass
class DemoResult:
    """The demo's episodes: ``prompts``, ``completions`` and ``rewards`` (each ``(B,)``,
    rewards in [-1, 1]), the judge's ``expected_scores`` (``(B,)`` in [1, 10]), ``tokens``
    per completion, the env's ``data_source``, ``env_steps`` and the seconds the policy took
    to load and the batch to be sampled and judged."""

    prompts: list[str]
    completions: list[str]
    rewards: np.ndarray
    expected_scores: list[float]
    tokens: list[int]
    data_source: str
    env_steps: int
    load_seconds: float
    sample_seconds: float


def demo(*, task: str = "tldr", policy: str = DEFAULT_POLICY, judge: str = DEFAULT_JUDGE,
         episodes: int = 4, max_new_tokens: int = 48, max_prompt_tokens: int = 384,
         temperature: float = 0.9, seed: int = 0, data_dir: str | os.PathLike[str] | None = None,
         split: str | None = None, threads: int | None = None) -> DemoResult:
    """Sample ``episodes`` completions of ``policy`` and score them with the d-RLAIF reward.

    Raises:
        UsageError: an unknown task or a non-positive size.
    """
    import gymnasium as gym
    import torch
    from gymnasium.vector import AutoresetMode

    from rlaif_gym.models import load_causal_lm

    if task not in TASK_ENV_IDS:
        raise UsageError(f"unknown task {task!r}; valid: {', '.join(TASK_ENV_IDS)}")
    if episodes < 1 or max_new_tokens < 1 or max_prompt_tokens < 1:
        raise UsageError("episodes, max_new_tokens and max_prompt_tokens must be >= 1")
    if threads is not None:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    model = load_causal_lm(policy, num_threads=threads)
    load_seconds = time.perf_counter() - t0
    reward = DirectReward(judge=judge, task=task, num_threads=threads)
    envs = gym.make_vec(
        TASK_ENV_IDS[task], num_envs=episodes, vectorization_mode="vector_entry_point",
        autoreset_mode=AutoresetMode.DISABLED, reward=reward, policy=policy,
        data_dir=data_dir, max_prompt_tokens=max_prompt_tokens, max_new_tokens=max_new_tokens,
        **({"split": split} if split is not None else {}))
    try:
        t0 = time.perf_counter()
        batch = collect_episodes(model, envs, temperature=temperature, seed=seed,
                                 generator=torch.Generator().manual_seed(seed))
        sample_seconds = time.perf_counter() - t0
        return DemoResult(
            prompts=list(batch.prompts), completions=list(batch.completions),
            rewards=np.asarray(batch.rewards, dtype=np.float64),
            expected_scores=[float(batch.final_infos[i].get("direct_expected_score",
                                                            float("nan")))
                             for i in range(episodes)],
            tokens=[len(ids) for ids in batch.completion_ids],
            data_source=str(envs.data_source), env_steps=int(batch.steps),
            load_seconds=load_seconds, sample_seconds=sample_seconds)
    finally:
        envs.close()
