"""tianshou REINFORCE on the real SmolLM2-135M-Instruct policy with a toy reward.

The reward is the share of completion characters equal to "a" (a stand-in for an AI judge,
so the example needs no judge model). The policy is trained through tianshou 2.x
(``Reinforce`` + ``OnPolicyTrainer``) on ``DummyVectorEnv`` copies of ``RLAIF-TLDR-v0``.

This path recomputes the full forward pass for every generated token (tianshou's policy
interface has no KV cache): it is meant for algorithm experiments, and it is slow on CPU
(the defaults take a few minutes on one core). ``agents.rollout`` is the fast path.

Run from the repository root (needs ``pip install "rlaif-gym[tianshou]"`` and the packaged
SmolLM2 weights)::

    PYTHONPATH=. python examples/tianshou_reinforce.py --epochs 3
    PYTHONPATH=. python examples/tianshou_reinforce.py --task-prompts --device cuda --epochs 20
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import rlaif_gym  # noqa: E402, F401 - registers the env ids
from agents.tianshou_adapter import (  # noqa: E402
    evaluate_tianshou,
    last_final_infos,
    make_tianshou_reinforce,
    train_tianshou,
)
from rlaif_gym.data.records import PromptRecord  # noqa: E402
from rlaif_gym.models import load_causal_lm, load_tokenizer  # noqa: E402

POSTS = [
    "SUBREDDIT: r/cats\nTITLE: My cat naps all day\nPOST: She sleeps 20 hours a day. Normal?",
    "SUBREDDIT: r/cooking\nTITLE: Banana bread\nPOST: My banana bread always sinks. Any tips?",
    "SUBREDDIT: r/running\nTITLE: First half marathon\nPOST: I ran 21 km today, slowly.",
    "SUBREDDIT: r/travel\nTITLE: Alaska in August\nPOST: Is a week enough for Denali?",
]


def fraction_of_a(prompts: list[str], completions: list[str]) -> list[float]:
    """Toy reward in [0, 1]: the share of completion characters equal to "a"."""
    return [c.count("a") / len(c) if c else 0.0 for c in completions]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--task-prompts", action="store_true",
                   help="use the TL;DR task data (embedded sample when offline) instead of "
                        "four short built-in posts")
    p.add_argument("--max-prompt-tokens", type=int, default=128)
    p.add_argument("--max-new-tokens", type=int, default=6)
    p.add_argument("--num-envs", type=int, default=2)
    p.add_argument("--episodes-per-collect", type=int, default=4)
    p.add_argument("--epochs", type=int, default=3, help="one collect + one update each")
    p.add_argument("--batch-size", type=int, default=None,
                   help="transitions per gradient step (default: all collected at once)")
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--eval-episodes", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tokenizer = load_tokenizer(args.model)
    model = load_causal_lm(args.model, device=args.device, dtype=torch.float32)
    prompts = None if args.task_prompts else [
        PromptRecord(id=f"post{i}", task="tldr", text=text) for i, text in enumerate(POSTS)
    ]
    source = {} if prompts is None else {"prompts": prompts}

    def make_env() -> gym.Env:
        return gym.make(
            "RLAIF-TLDR-v0", tokenizer=tokenizer, reward=fraction_of_a,
            max_prompt_tokens=args.max_prompt_tokens, max_new_tokens=args.max_new_tokens,
            vocab_size=model.config.vocab_size, **source,
        )

    env_fns = [make_env] * args.num_envs
    setup = make_tianshou_reinforce(
        model, env_fns, lr=args.lr, temperature=args.temperature, seed=args.seed
    )
    try:
        start = time.time()
        before = evaluate_tianshou(setup.policy, env_fns, args.eval_episodes, seed=1000)
        print(f"before training: mean reward {before.mean():.4f} over {before.size} episodes "
              f"({time.time() - start:.0f}s)", flush=True)
        for epoch in range(1, args.epochs + 1):
            start = time.time()
            train_tianshou(setup, epochs=1, episodes_per_collect=args.episodes_per_collect,
                           batch_size=args.batch_size)
            final = last_final_infos(setup.train_envs)[0]
            text = str(final.get("completion", ""))
            print(f"epoch {epoch}: {time.time() - start:.0f}s, last completion {text!r} "
                  f"(reward {fraction_of_a([], [text])[0]:.2f})", flush=True)
        after = evaluate_tianshou(setup.policy, env_fns, args.eval_episodes, seed=1000)
        print(f"after training: mean reward {after.mean():.4f} over {after.size} episodes "
              f"(before {before.mean():.4f}, change {np.mean(after) - np.mean(before):+.4f})")
    finally:
        setup.close()


if __name__ == "__main__":
    main()
