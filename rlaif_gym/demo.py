"""``rlaif-gym demo``: a short d-RLAIF episode batch on the embedded defaults.

Loads the default policy (SmolLM2-135M-Instruct) and the default judge
(Qwen2.5-Coder-1.5B-Instruct), samples one episode per sub-env of the native vector env
at temperature 0.9, and prints each prompt, completion and d-RLAIF reward in [-1, 1].
"""

from __future__ import annotations

import argparse
import os
import textwrap
import time


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand."""
    p = subparsers.add_parser(
        "demo",
        help="sample a few episodes and score them with the d-RLAIF judge",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--task", default="tldr", choices=["tldr", "helpful", "harmless"])
    p.add_argument("--policy", default="smollm2-135m-instruct", help="policy model spec")
    p.add_argument("--judge", default="qwen2.5-coder-1.5b-instruct", help="judge model spec")
    p.add_argument("--episodes", type=int, default=4, help="episodes (= vector env size)")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--max-prompt-tokens", type=int, default=384)
    p.add_argument("--temperature", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="data folder (default: $RLAIF_GYM_DATA)")
    p.add_argument("--split", default=None, help="data split (default: the task's test split)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo described by ``args``; returns the exit code."""
    import gymnasium as gym
    import numpy as np
    import torch
    from gymnasium.vector import AutoresetMode

    import rlaif_gym  # noqa: F401  (registers the envs)
    from agents.rollout import collect_episodes
    from rewards.direct import DirectReward
    from rlaif_gym.envs.registration import TASK_ENV_IDS
    from rlaif_gym.models import load_causal_lm

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    policy = load_causal_lm(args.policy, num_threads=args.threads)
    print(f"policy {args.policy} loaded in {time.perf_counter() - t0:.1f}s")
    reward = DirectReward(judge=args.judge, task=args.task, num_threads=args.threads)
    env_kwargs = dict(
        reward=reward,
        policy=args.policy,
        data_dir=args.data_dir,
        max_prompt_tokens=args.max_prompt_tokens,
        max_new_tokens=args.max_new_tokens,
    )
    if args.split is not None:
        env_kwargs["split"] = args.split
    envs = gym.make_vec(
        TASK_ENV_IDS[args.task],
        num_envs=args.episodes,
        vectorization_mode="vector_entry_point",
        autoreset_mode=AutoresetMode.DISABLED,
        **env_kwargs,
    )
    print(f"env {TASK_ENV_IDS[args.task]} x{args.episodes}, data source: {envs.data_source}")
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(args.seed)
    batch = collect_episodes(
        policy, envs, temperature=args.temperature, seed=args.seed, generator=gen
    )
    elapsed = time.perf_counter() - t0
    for i in range(args.episodes):
        info = batch.final_infos[i]
        print("=" * 100)
        print(f"episode {i}  reward {batch.rewards[i]:+.3f}  "
              f"expected score {info.get('direct_expected_score', float('nan')):.2f}/10  "
              f"tokens {len(batch.completion_ids[i])}")
        print("PROMPT:\n" + textwrap.shorten(batch.prompts[i], width=600, placeholder=" [...]"))
        print("COMPLETION:\n" + batch.completions[i])
    print("=" * 100)
    print(f"{args.episodes} episodes, {batch.steps} env steps, mean reward "
          f"{np.mean(batch.rewards):+.3f} (sampling + judging took {elapsed:.1f}s)")
    envs.close()
    return 0
