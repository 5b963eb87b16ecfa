"""d-RLAIF (``reward="direct"``) vs pairwise-vs-reference (``reward="pairwise"``,
``anchor="reference"``): the same SmolLM2 start, the same prompts, the same steps, the same
judge; then each trained policy's win rate over the start policy, judged in both orders.

Both runs use the same trainer settings: B = 8 episodes per step, 4 prompts x k = 2 samples,
the leave-one-out baseline (no value model: a run holds ~6 GB instead of ~9 GB, and two
~9 GB runs did not fit next to the other jobs of this 24 GB machine).

Stages (separate commands; run the two trainings one after the other)::

    python research/pairwise_vs_direct/run.py train --reward direct   --threads 1
    python research/pairwise_vs_direct/run.py train --reward pairwise --threads 1
    python research/pairwise_vs_direct/run.py evaluate --threads 2
    python research/pairwise_vs_direct/run.py report

Prompts: the TL;DR test posts of ``--data-dir`` (the DOVE sample, 500 posts) whose plain
text is at most ``--max-post-tokens`` judge tokens (short posts keep the CPU judge's cost
down; this is a selection, stated in the README), in file order: the first
``--train-prompts`` train both policies (same schedule, seed 0), the next
``--eval-prompts`` are held out for the win rates.

Outputs, in this folder: ``<reward>/metrics.csv`` and ``<reward>/curves.png`` (the trainer's),
``<reward>/config.json``, ``eval/completions.jsonl`` is NOT written (generated text of the
dataset's posts stays out of git); ``eval/winrates.json`` holds the numbers,
``curves.png`` both runs' reward and KL side by side. Checkpoints go to ``runs/`` (ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RUNS = REPO / "runs" / "pairwise_vs_direct"
REWARDS = {"direct": ("direct", {}), "pairwise": ("pairwise", {"anchor": "reference"})}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("stage", choices=["train", "evaluate", "report"])
    p.add_argument("--reward", choices=sorted(REWARDS), help="train: which reward")
    p.add_argument("--judge", default="qwen2.5-coder-0.5b-instruct")
    p.add_argument("--judge-dtype", default="float32")
    p.add_argument("--policy", default="smollm2-135m-instruct")
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--samples-per-prompt", type=int, default=2)
    p.add_argument("--baseline", default="loo", choices=["value", "loo"])
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--max-prompt-tokens", type=int, default=384)
    p.add_argument("--max-post-tokens", type=int, default=250)
    p.add_argument("--train-prompts", type=int, default=64)
    p.add_argument("--eval-prompts", type=int, default=48)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=os.environ.get("RLAIF_GYM_DATA", "../shared/data"))
    return p.parse_args(argv)


def select_prompts(args: argparse.Namespace):
    """(train records, eval records): short TL;DR test posts, in file order."""
    from rlaif_gym.models import load_tokenizer
    from rlaif_gym.tasks import get_task

    records = get_task("tldr").load_prompts("test", data_dir=args.data_dir)
    tok = load_tokenizer(args.judge)
    short = [r for r in records if len(tok(r.text)["input_ids"]) <= args.max_post_tokens]
    need = args.train_prompts + args.eval_prompts
    if len(short) < need:
        raise SystemExit(f"only {len(short)} posts <= {args.max_post_tokens} tokens, need {need}")
    return short[: args.train_prompts], short[args.train_prompts: need]


def train_stage(args: argparse.Namespace) -> None:
    from agents.train import TrainConfig, train

    train_records, _ = select_prompts(args)
    name, options = REWARDS[args.reward]
    out = RUNS / args.reward
    config = TrainConfig(
        out_dir=str(out), reward=name, reward_options={**options, "dtype": args.judge_dtype},
        judge=args.judge, policy=args.policy, steps=args.steps, batch_size=args.batch_size,
        samples_per_prompt=args.samples_per_prompt, baseline=args.baseline,
        lr=args.lr, max_new_tokens=args.max_new_tokens, max_prompt_tokens=args.max_prompt_tokens,
        split="test", data_dir=args.data_dir, seed=args.seed, threads=args.threads,
        checkpoint_every=args.steps, env_options={"prompts": train_records}, progress=False,
        resume=True,
    )
    t0 = time.time()
    train(config, on_step=lambda step, row: print(
        f"[{args.reward}] step {step}: reward {row['reward']:+.3f} kl {row['kl']:.3f} "
        f"len {row['completion_length']:.1f} ({row['time']:.0f} s)", flush=True))
    print(f"[{args.reward}] {args.steps} steps in {time.time() - t0:.0f} s")
    copy_outputs(out, HERE / args.reward)


def copy_outputs(out: Path, dest: Path) -> None:
    """The run's metrics, curves and config into ``dest``; the config's prompt records
    (dataset text, never committed) are replaced by their ids."""
    dest.mkdir(exist_ok=True)
    for name in ("metrics.csv", "curves.png"):
        (dest / name).write_bytes((out / name).read_bytes())
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    prompts = config.get("env_options", {}).get("prompts")
    if prompts is not None:
        config["env_options"]["prompts"] = {"prompt_ids": [r["id"] for r in prompts]}
    for key in ("out_dir", "data_dir"):  # relative to the repository root, not this machine
        if config.get(key):
            config[key] = os.path.relpath(config[key], REPO)
    (dest / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def sample(policy_spec: str, records, args: argparse.Namespace) -> list[str]:
    """One completion per record (temperature 0.9, seeded), through the env."""
    import gymnasium as gym
    import torch
    from gymnasium.vector import AutoresetMode

    from agents.rollout import collect_episodes
    from rlaif_gym.models import load_causal_lm

    policy = load_causal_lm(policy_spec, dtype="float32")
    out: list[str] = []
    generator = torch.Generator().manual_seed(args.seed)
    envs = gym.make_vec("RLAIF-TLDR-v0", num_envs=len(records),
                        vectorization_mode="vector_entry_point",
                        autoreset_mode=AutoresetMode.DISABLED, reward="none",
                        policy=args.policy, prompts=records,
                        max_prompt_tokens=args.max_prompt_tokens,
                        max_new_tokens=args.max_new_tokens,
                        vocab_size=int(policy.config.vocab_size))
    batch = collect_episodes(policy, envs, temperature=0.9, generator=generator,
                             reset_options={"index": list(range(len(records)))})
    out.extend(batch.completions)
    envs.close()
    return out


def evaluate_stage(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    import rlaif_gym  # noqa: F401
    from rewards.evaluation import judge_pairwise, win_rate
    from rewards.judges import load_judge
    from rewards.pairwise import position_consistent

    torch.set_num_threads(args.threads)
    _, eval_records = select_prompts(args)
    contexts = [r.text for r in eval_records]
    t0 = time.time()
    completions = {"start": sample(args.policy, eval_records, args)}
    for reward in REWARDS:
        completions[reward] = sample(str(RUNS / reward / "checkpoint" / "policy"),
                                     eval_records, args)
    t_sample = time.time() - t0
    judge = load_judge(args.judge, dtype=args.judge_dtype, num_threads=args.threads)
    results: dict = {"judge": args.judge, "judge_dtype": args.judge_dtype,
                     "eval_prompts": len(eval_records), "sampling_seconds": t_sample,
                     "temperature": 0.9, "win_rates": {}}
    for reward in REWARDS:
        t1 = time.time()
        labels = list(judge_pairwise(judge, "tldr", contexts, completions[reward],
                                     completions["start"]))
        p = np.array([lab.p_first for lab in labels])
        rate = win_rate(p)
        consistent = position_consistent([lab.p_order_ab for lab in labels],
                                         [lab.p_order_ba for lab in labels])
        results["win_rates"][f"{reward}_vs_start"] = {
            "win_rate": rate.rate, "ci95": [rate.ci_low, rate.ci_high], "n": rate.n,
            "ties": rate.ties, "mean_p": float(p.mean()),
            "position_consistency": float(consistent.mean()),
            "mean_chars": float(np.mean([len(c) for c in completions[reward]])),
            "seconds": time.time() - t1,
        }
    results["start_mean_chars"] = float(np.mean([len(c) for c in completions["start"]]))
    (HERE / "eval").mkdir(exist_ok=True)
    (HERE / "eval" / "winrates.json").write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


def report_stage(args: argparse.Namespace) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from agents.train import read_metrics

    fig = Figure(figsize=(12, 3.6), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    for reward in REWARDS:
        rows = read_metrics(HERE / reward / "metrics.csv")
        steps = [r["step"] for r in rows]
        for ax, column in zip(axes, ("reward", "kl", "completion_length"), strict=True):
            ax.plot(steps, [r[column] for r in rows], marker="o", ms=3, label=reward)
    titles = ("mean raw reward (own scale: direct vs pairwise-vs-reference)",
              "KL(policy || start) per sequence", "completion length (tokens)")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.savefig(HERE / "curves.png", dpi=100)
    print(f"wrote {HERE / 'curves.png'}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.stage == "train":
        if args.reward is None:
            raise SystemExit("train needs --reward")
        train_stage(args)
    elif args.stage == "evaluate":
        evaluate_stage(args)
    else:
        report_stage(args)


if __name__ == "__main__":
    main()
