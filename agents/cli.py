"""``rlaif-gym train`` (REINFORCE with a value baseline and KL control) and ``rlaif-gym sample``
(completions of a run's checkpointed policy on held-out prompts).

Heavy imports (torch, transformers) happen inside the command functions so that
``rlaif-gym --help`` stays fast; the defaults below mirror :class:`agents.train.TrainConfig`
(a test keeps them in sync).
"""

from __future__ import annotations

import argparse
import json
import os
import textwrap
from typing import Any

from rlaif_gym.cli import positive_int

#: CLI defaults; equal to the TrainConfig field defaults.
DEFAULTS: dict[str, Any] = {
    "env_id": "RLAIF-TLDR-v0",
    "reward": "direct",
    "policy": "smollm2-135m-instruct",
    "judge": None,
    "steps": 1000,
    "batch_size": 16,
    "micro_batch_size": None,
    "lr": 1e-5,
    "value_lr": 1e-5,
    "kl_coef": 0.05,
    "temperature": 0.9,
    "max_new_tokens": 64,
    "max_prompt_tokens": 512,
    "split": "train",
    "eval_split": "test",
    "train_prompts": None,
    "seed": 0,
    "checkpoint_every": 50,
    "postprocess": "none",
    "max_grad_norm": 1.0,
    "value_init": "first-batch",
    "weight_decay": 0.0,
    "dtype": "float32",
    "device": "cpu",
}

TRAIN_EPILOG = """\
rewards (--reward):
  direct     d-RLAIF: the judge (--judge) rates each completion 1-10, reward in [-1, 1]
  none       always 0 (smoke tests: only the KL term acts)
  ai-rm      a reward model trained on AI labels: --reward-option path=RM_DIR
  human-rm   a reward model trained on human labels: --reward-option path=RM_DIR
  DIR        a trained reward-model folder (same as ai-rm/human-rm with path=DIR)
  NAME       any other name registered in rlaif_gym.reward_registry.REWARD_REGISTRY
  extra options: --reward-option KEY=VALUE (VALUE parsed as JSON when it parses),
  e.g. --reward-option normalize=true

outputs (--out RUN_DIR): metrics.csv (one row per step), curves.png, config.json,
checkpoint/ (every --checkpoint-every steps and at the end). After a crash or Ctrl-C,
rerun the same command with --resume: it continues from the last checkpoint and
reproduces the uninterrupted run.

example (the paper's d-RLAIF on TL;DR, offline data folder):
  rlaif-gym train --env RLAIF-TLDR-v0 --reward direct --policy smollm2-135m-instruct \\
      --judge qwen2.5-coder-1.5b-instruct --steps 2000 --batch-size 16 --lr 1e-5 \\
      --kl-coef 0.05 --data-dir /path/to/data --split test --out runs/tldr-drlaif
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` and ``sample`` subcommands."""
    _register_train(subparsers)
    _register_sample(subparsers)


def _register_train(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a policy with REINFORCE (value baseline, KL to the initial policy)",
        description=(
            "Token-level REINFORCE as in RLAIF (Lee et al. 2023): return (1 - beta) r - "
            "beta KL(policy || initial policy) for every token, a separate value model as "
            "baseline, sampling at --temperature through the native vector env."
        ),
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = DEFAULTS
    p.add_argument("--env", dest="env_id", default=d["env_id"], help="env id (%(default)s)")
    p.add_argument("--reward", default=d["reward"],
                   help="direct | none | ai-rm | human-rm | a reward-model DIR (%(default)s)")
    p.add_argument("--reward-option", action="append", default=[], metavar="KEY=VALUE",
                   help="option of the reward (repeatable)")
    p.add_argument("--policy", default=d["policy"], help="policy model spec (%(default)s)")
    p.add_argument("--judge", default=d["judge"],
                   help="judge model spec for --reward direct (default: the reward's default)")
    p.add_argument("--steps", type=positive_int, default=d["steps"],
                   help="total updates (%(default)s)")
    p.add_argument("--batch-size", type=positive_int, default=d["batch_size"],
                   help="episodes per update = vector env size (%(default)s)")
    p.add_argument("--micro-batch-size", type=positive_int, default=d["micro_batch_size"],
                   help="sequences per forward/backward (default: the whole batch)")
    p.add_argument("--lr", type=float, default=d["lr"], help="policy AdamW lr (%(default)s)")
    p.add_argument("--value-lr", type=float, default=d["value_lr"],
                   help="value model AdamW lr (%(default)s)")
    p.add_argument("--value-init", choices=("first-batch", "zero"), default=d["value_init"],
                   help="start the value baseline at the first batch's mean return "
                        "(first-batch) or at 0 (%(default)s)")
    p.add_argument("--kl-coef", type=float, default=d["kl_coef"],
                   help="beta in (1 - beta) r - beta KL (%(default)s)")
    p.add_argument("--temperature", type=float, default=d["temperature"],
                   help="sampling (and loss) temperature (%(default)s)")
    p.add_argument("--max-new-tokens", type=positive_int, default=d["max_new_tokens"])
    p.add_argument("--max-prompt-tokens", type=positive_int, default=d["max_prompt_tokens"])
    p.add_argument("--split", default=d["split"], help="training prompt split (%(default)s)")
    p.add_argument("--train-prompts", type=positive_int, default=d["train_prompts"],
                   help="train on the first N prompts of --split only; the rest stay held "
                        "out (default: all)")
    p.add_argument("--eval-split", default=d["eval_split"],
                   help="held-out split used by `rlaif-gym sample` (%(default)s)")
    p.add_argument("--data-dir", default=None, help="data folder (default: $RLAIF_GYM_DATA)")
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--checkpoint-every", type=positive_int, default=d["checkpoint_every"])
    p.add_argument("--threads", type=positive_int, default=os.cpu_count() or 1,
                   help="torch threads (policy and judge; default: all cores)")
    p.add_argument("--postprocess", default=d["postprocess"],
                   choices=["none", "strip-trailing-punctuation"],
                   help="applied to completions before the reward (%(default)s)")
    p.add_argument("--max-grad-norm", type=float, default=d["max_grad_norm"],
                   help="gradient-norm clipping, <= 0 disables (%(default)s)")
    p.add_argument("--weight-decay", type=float, default=d["weight_decay"])
    p.add_argument("--dtype", default=d["dtype"], help="trained models' dtype (%(default)s)")
    p.add_argument("--device", default=d["device"], help="torch device (%(default)s)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train)


def _register_sample(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sample",
        help="print completions of a training run's checkpointed policy",
        description="Sample completions from RUN_DIR/checkpoint/policy for held-out prompts "
                    "(the run's --eval-split unless --split is given).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--n", type=positive_int, default=5, help="completions (%(default)s)")
    p.add_argument("--split", default=None, help="prompt split (default: the run's eval split)")
    p.add_argument("--data-dir", default=None, help="data folder (default: the run's)")
    p.add_argument("--temperature", type=float, default=None,
                   help="default: the run's temperature")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=positive_int, default=os.cpu_count() or 1)
    p.set_defaults(func=run_sample)


def _parse_options(items: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--reward-option expects KEY=VALUE, got {item!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def config_from_args(args: argparse.Namespace):
    """The :class:`~agents.train.TrainConfig` described by parsed ``train`` arguments."""
    from agents.train import TrainConfig

    return TrainConfig(
        out_dir=args.out, env_id=args.env_id, reward=args.reward,
        reward_options=_parse_options(args.reward_option), policy=args.policy,
        judge=args.judge, steps=args.steps, batch_size=args.batch_size,
        micro_batch_size=args.micro_batch_size, lr=args.lr, value_lr=args.value_lr,
        kl_coef=args.kl_coef, temperature=args.temperature,
        max_new_tokens=args.max_new_tokens, max_prompt_tokens=args.max_prompt_tokens,
        split=args.split, eval_split=args.eval_split, train_prompts=args.train_prompts,
        data_dir=args.data_dir, seed=args.seed,
        checkpoint_every=args.checkpoint_every, threads=args.threads,
        postprocess=args.postprocess,
        max_grad_norm=args.max_grad_norm if args.max_grad_norm > 0 else None,
        value_init=args.value_init,
        weight_decay=args.weight_decay, dtype=args.dtype, device=args.device,
        resume=args.resume, progress=not args.no_progress,
    )


def run_train(args: argparse.Namespace) -> int:
    """Run ``rlaif-gym train``; returns the exit code (130 on Ctrl-C)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from agents.train import train

    config = config_from_args(args)
    try:
        result = train(config)
    except KeyboardInterrupt:
        print(f"\ninterrupted; rerun with --resume to continue from {config.out_dir}/checkpoint")
        return 130
    if result.metrics:
        last = result.metrics[-1]
        print(f"done: step {result.step}, reward {last['reward']:+.4f}, KL {last['kl']:.4f}; "
              f"metrics in {result.out_dir / 'metrics.csv'}, curves in "
              f"{result.out_dir / 'curves.png'}")
    return 0


def run_sample(args: argparse.Namespace) -> int:
    """Run ``rlaif-gym sample``; returns the exit code."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from agents.postprocess import POSTPROCESSORS
    from agents.rollout import collect_episodes
    from agents.train import find_checkpoint
    from rlaif_gym.models import load_causal_lm

    checkpoint = find_checkpoint(args.run_dir)
    if checkpoint is None:
        print(f"no checkpoint in {args.run_dir} (expected {args.run_dir}/checkpoint/)")
        return 1
    state = json.loads((checkpoint / "state.json").read_text(encoding="utf-8"))
    config = state["config"]
    torch.set_num_threads(args.threads)
    policy = load_causal_lm(checkpoint / "policy", dtype=config.get("dtype"),
                            device=config.get("device", "cpu"))
    import gymnasium as gym
    from gymnasium.vector import AutoresetMode

    import rlaif_gym  # noqa: F401  (registers the ids)

    split = args.split or config.get("eval_split", "test")
    envs = gym.make_vec(
        config["env_id"], num_envs=args.n, vectorization_mode="vector_entry_point",
        autoreset_mode=AutoresetMode.DISABLED, reward="none", policy=str(checkpoint / "policy"),
        split=split, data_dir=args.data_dir or config.get("data_dir"),
        max_prompt_tokens=config["max_prompt_tokens"], max_new_tokens=config["max_new_tokens"],
        vocab_size=int(policy.config.vocab_size),
    )
    temperature = args.temperature or config["temperature"]
    device = next(policy.parameters()).device
    batch = collect_episodes(policy, envs, temperature=temperature, seed=args.seed,
                             generator=torch.Generator(device=device).manual_seed(args.seed))
    post = POSTPROCESSORS.get(str(config.get("postprocess")), None)
    print(f"{checkpoint} (step {state['step']}), {config['env_id']} split {split!r} "
          f"({envs.unwrapped.data_source}), temperature {temperature}")
    for i in range(args.n):
        print("=" * 100)
        print(f"[{i}] PROMPT ({batch.final_infos[i].get('prompt_index')}):")
        print(textwrap.shorten(batch.prompts[i], width=500, placeholder=" [...]"))
        print(f"COMPLETION ({len(batch.completion_ids[i])} tokens):")
        print(batch.completions[i])
        if post is not None and config.get("postprocess") != "none":
            print(f"POSTPROCESSED ({config['postprocess']}): {post(batch.completions[i])}")
    envs.close()
    return 0
