"""Write your own reward: a length penalty composed with another reward.

Two ways to plug a user reward into ``gym.make("RLAIF-TLDR-v0", reward=...)``:

1. a :class:`rlaif_gym.reward_protocol.RewardFunction` subclass (here
   :class:`LengthPenalized`, which wraps
   another reward, by default the d-RLAIF judge score ``"direct"``), with per-episode details
   that end up in the final ``info``;
2. a plain callable ``(prompts, completions) -> list[float]`` (here :func:`brevity_bonus`),
   optionally normalized by the env (``normalize={"whiten": True, "clip": [-3, 3]}``).

Either way the env calls the reward ONCE per step for all episodes that ended, with the plain
task inputs (the Reddit post) and the decoded completions.

Run (from the repository root)::

    python examples/custom_reward.py                     # judge Qwen2.5-Coder-1.5B: slow on CPU
    python examples/custom_reward.py --judge tiny-random --policy tiny-random    # seconds
    python examples/custom_reward.py --reward none       # the length penalty alone
    python examples/custom_reward.py --actions policy    # sample tokens from the policy

Prompts: the embedded TL;DR sample, or ``--data-dir DIR`` for the real posts.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Sequence
from pathlib import Path

import gymnasium as gym
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

import rlaif_gym  # noqa: E402,F401 - registers RLAIF-TLDR-v0
from rlaif_gym.reward_protocol import RewardFunction, RewardOutput  # noqa: E402
from rlaif_gym.reward_registry import make_reward  # noqa: E402


class LengthPenalized(RewardFunction):
    """``inner(prompt, completion) - coef * max(0, words(completion) - target_words)``.

    A TL;DR should be one sentence; this discourages long completions whatever the inner
    reward says. Details: the inner reward's details, ``inner_score`` and ``length_penalty``.
    """

    def __init__(self, inner: object = "none", coef: float = 0.05, target_words: int = 20,
                 **inner_options: object) -> None:
        self.inner = make_reward(inner, **inner_options)  # a name, instance or callable
        self.coef = float(coef)
        self.target_words = int(target_words)
        self.name = f"length_penalized({self.inner.name})"

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> RewardOutput:
        inner = self.inner(prompts, completions)  # one batched call; validated scores (n,)
        words = np.array([len(c.split()) for c in completions], dtype=np.float64)
        penalty = self.coef * np.maximum(0.0, words - self.target_words)
        details = {**inner.details, "inner_score": inner.scores, "length_penalty": penalty}
        return RewardOutput(scores=inner.scores - penalty, details=details)


def brevity_bonus(prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
    """A plain callable reward: 1 for an empty completion, decreasing with its length."""
    return [1.0 / (1.0 + len(c.split())) for c in completions]


def policy_sampler(spec: str, seed: int):
    """``obs -> token id`` sampled from the policy model, with a KV cache that is reused
    while the observation extends the previous one by the sampled token."""
    import torch

    from rlaif_gym.models import load_causal_lm

    model = load_causal_lm(spec)
    generator = torch.Generator().manual_seed(seed)
    state: dict = {"ids": None, "cache": None}
    # transformers >= 5.x calls the KV cache `cache`; 4.x `past_key_values`
    key = "cache" if "cache" in inspect.signature(model.forward).parameters else \
        "past_key_values"

    @torch.no_grad()
    def act(obs: dict) -> int:
        ids = torch.as_tensor(obs["tokens"][: int(obs["length"])]).unsqueeze(0)
        prev = state["ids"]
        if prev is not None and ids.shape[1] == prev.shape[1] + 1 and torch.equal(
                ids[:, :-1], prev):
            out = model(ids[:, -1:], use_cache=True, **{key: state["cache"]})
        else:  # a new episode: run the whole prompt
            out = model(ids, use_cache=True)
        state["ids"], state["cache"] = ids, getattr(out, key)
        probs = torch.softmax(out.logits[0, -1].float(), -1)
        return int(torch.multinomial(probs, 1, generator=generator))

    return act


def run_episodes(env: gym.Env, episodes: int, seed: int, act) -> None:
    for k in range(episodes):
        obs, info = env.reset(seed=seed + k)
        terminated, steps = False, 0
        while not terminated:
            obs, reward, terminated, truncated, info = env.step(act(obs))
            steps += 1
        extras = {key: round(float(info[key]), 4) for key in
                  ("inner_score", "length_penalty", "raw_score", "direct_expected_score")
                  if key in info}
        print(f"  episode {k}: prompt {info['prompt_index']}, {steps} tokens, "
              f"reward {reward:+.4f} {extras}\n    completion: {info['completion'][:80]!r}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reward", default="direct",
                        help="inner reward of the length penalty (default: direct; 'none')")
    parser.add_argument("--judge", default=None,
                        help="judge spec for --reward direct (default: the direct reward's; "
                             "'tiny-random' runs in seconds)")
    parser.add_argument("--policy", default="smollm2-135m-instruct",
                        help="policy tokenizer/model spec ('tiny-random' for a fast run)")
    parser.add_argument("--actions", choices=("random", "policy"), default="random")
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--data-dir", default=None, help="real data folder (default: sample)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 is fastest on a busy machine)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)

    inner_options = {}
    if args.reward == "direct":
        inner_options["task"] = "tldr"
        if args.judge is not None:
            inner_options["judge"] = args.judge
    common = dict(policy=args.policy, max_new_tokens=args.max_new_tokens,
                  source="local" if args.data_dir else "sample", data_dir=args.data_dir)

    # 1. a RewardFunction subclass wrapping another reward
    reward = LengthPenalized(args.reward, coef=0.05, target_words=5, **inner_options)
    env = gym.make("RLAIF-TLDR-v0", reward=reward, **common)
    if args.actions == "policy":
        act = policy_sampler(args.policy, args.seed)
    else:
        env.action_space.seed(args.seed)

        def act(obs: dict) -> int:
            return int(env.action_space.sample())

    print(f"reward={reward.name}:")
    run_episodes(env, args.episodes, args.seed, act)

    # 2. a plain callable, whitened and clipped by the env's reward options
    env2 = gym.make("RLAIF-TLDR-v0", reward=brevity_bonus,
                    normalize={"whiten": True, "clip": [-3, 3]}, **common)
    if args.actions == "random":
        env2.action_space.seed(args.seed)

        def act(obs: dict) -> int:  # noqa: F811 - same policy, the second env's space
            return int(env2.action_space.sample())

    print(f"reward={env2.unwrapped.reward_fn.name} (normalized plain callable):")
    run_episodes(env2, args.episodes, args.seed, act)
    return 0


if __name__ == "__main__":
    sys.exit(main())
