"""Quickstart: make the env, plug in a custom reward, train a few REINFORCE steps.

The README's quickstart is this file below the docstring (tests/test_docs.py checks it).

    python examples/quickstart.py           # SmolLM2-135M-Instruct: minutes on a 2-core CPU
    python examples/quickstart.py --tiny    # the tiny random model: seconds, no weights needed

Prompts: ``$RLAIF_GYM_DATA`` when set (e.g. ``RLAIF_GYM_DATA=../shared/data``), else the
Hugging Face Hub, else the small embedded sample.
"""

import copy
import sys

import gymnasium as gym
import torch
from gymnasium.vector import AutoresetMode

import rlaif_gym  # noqa: F401  (registers RLAIF-TLDR-v0, RLAIF-HH-Helpful-v0, RLAIF-HH-Harmless-v0)
from agents.reinforce import ValueModel, reinforce_step
from agents.rollout import collect_episodes
from rlaif_gym.models import load_causal_lm

POLICY = "tiny-random" if "--tiny" in sys.argv else "smollm2-135m-instruct"


def brevity(prompts, completions):  # a custom reward: one float per finished episode
    return [1.0 / (1.0 + len(c.split())) for c in completions]


policy = load_causal_lm(POLICY, dtype=torch.float32)
reference = copy.deepcopy(policy).requires_grad_(False)  # frozen pi_SFT of the KL term
value = ValueModel.from_policy(policy)  # the baseline V(x_t): a backbone copy + scalar head
envs = gym.make_vec("RLAIF-TLDR-v0", num_envs=4, vectorization_mode="vector_entry_point",
                    autoreset_mode=AutoresetMode.DISABLED, reward=brevity, policy=POLICY,
                    max_new_tokens=24, vocab_size=policy.config.vocab_size)
optimizers = [torch.optim.AdamW(m.parameters(), lr=1e-5) for m in (policy, value)]
for step in range(3):
    batch = collect_episodes(policy, envs, temperature=0.9)  # token by token through the env
    stats = reinforce_step(policy, value, reference, *optimizers, batch.prompt_ids,
                           batch.completion_ids, batch.rewards, kl_coef=0.05, temperature=0.9,
                           n_actions=int(envs.single_action_space.n),
                           pad_id=envs.unwrapped.core.pad_token_id)
    print(f"step {step + 1}: reward {stats.reward:+.3f}, KL {stats.kl:+.4f}, "
          f"first completion {batch.completions[0][:60]!r}")
