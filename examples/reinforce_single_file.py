"""d-RLAIF on RLAIF-TLDR-v0 with token-level REINFORCE, the whole loop in one file.

The readable, standalone version of ``agents/`` (rollout.py, reinforce.py, train.py), in
the spirit of CleanRL: arguments at the top, then seeding, the env, the models, and the loop
(sample token by token through the env, score, update). It imports only the core
``rlaif_gym`` package; ``reward="direct"`` (the d-RLAIF judge score) is found by name in the
reward registry. RLAIF (Lee et al. 2023, arXiv 2309.00267), Sec. 2.3 and Appendix A.3:

    J(theta) = E_{y ~ pi_theta(.|x)} [ (1 - beta) r(x, y) - beta KL(pi_theta(y|x) || pi_SFT(y|x)) ]

Run from the repository root::

    PYTHONPATH=. python examples/reinforce_single_file.py                # SmolLM2 + 1.5B judge
    PYTHONPATH=. python examples/reinforce_single_file.py --judge qwen2.5-coder-0.5b-instruct
    PYTHONPATH=. python examples/reinforce_single_file.py --policy tiny-random --reward none \
        --steps 3 --num-envs 2 --max-new-tokens 8                        # seconds
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import inspect
import random
import sys
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from torch import nn

import rlaif_gym  # noqa: F401  (registers the RLAIF-* env ids)
from rlaif_gym.models import load_causal_lm


@dataclass
class Args:
    env_id: str = "RLAIF-TLDR-v0"
    policy: str = "smollm2-135m-instruct"  # the start policy (our "SFT" model)
    reward: str = "direct"  # "direct" (d-RLAIF), "none", "brevity" (a plain lambda), a name
    judge: str = ""  # judge of the direct reward ("" = its default, Qwen2.5-Coder-1.5B)
    steps: int = 20  # updates, one batch of num_envs episodes each
    num_envs: int = 8  # episodes per update
    lr: float = 1e-5  # policy AdamW learning rate
    value_lr: float = 1e-5  # value model AdamW learning rate
    beta: float = 0.05  # KL coefficient (paper: 0.05)
    temperature: float = 0.9  # sampling and loss temperature (paper: 0.9)
    max_new_tokens: int = 48
    max_prompt_tokens: int = 384
    max_grad_norm: float = 1.0
    seed: int = 0
    threads: int = 0  # torch CPU threads (0 = torch's default)
    data_dir: str = ""  # data folder ("" = $RLAIF_GYM_DATA, else the hub, else the sample)
    split: str = "test"


def parse_args(argv: list[str] | None = None) -> Args:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for f in dataclasses.fields(Args):
        kind = {"int": int, "float": float}.get(f.type, str)
        parser.add_argument("--" + f.name.replace("_", "-"), type=kind, default=f.default)
    return Args(**vars(parser.parse_args(argv)))


def make_reward(args: Args):
    if args.reward == "brevity":  # any callable (prompts, completions) -> scores is a reward
        return lambda prompts, completions: [1.0 / (1 + len(c.split())) for c in completions]
    return args.reward  # a registered name: "direct", "none", ...


class ValueModel(nn.Module):
    """V(x_t): a copy of the initial policy's backbone with a scalar head (a separate model,
    as in the paper), zero-initialised."""

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.backbone = copy.deepcopy(policy.base_model)
        self.head = nn.Linear(policy.config.hidden_size, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids, attention_mask, position_ids):
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                               position_ids=position_ids).last_hidden_state
        return self.head(hidden).squeeze(-1).float()


def left_pad(rows: list[np.ndarray], width: int | None = None):
    """int64 ids and attention mask (B, width), each row right-aligned; pad id 0 (masked)."""
    width = width or max(len(r) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.as_tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    return ids, mask


@torch.no_grad()
def rollout(policy, envs, temperature: float, generator: torch.Generator, seed: int | None):
    """Run every sub-env to the end of one episode, sampling each token from the policy
    (which keeps its own KV cache: the prompts are prefilled once, then one token a step)."""
    obs, _ = envs.reset(seed=seed)
    n = envs.num_envs
    n_actions = int(envs.single_action_space.n)  # ids beyond it (padded vocab) are masked
    prompts = [obs["tokens"][i, : obs["length"][i]].copy() for i in range(n)]
    ids, mask = left_pad(prompts)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    # transformers >= 5.2x calls the KV-cache argument `cache`, older ones `past_key_values`
    cache_kw = "cache" if "cache" in inspect.signature(policy.forward).parameters \
        else "past_key_values"
    out = policy(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
    completions: list[list[int]] = [[] for _ in range(n)]
    rewards, texts = np.zeros(n), [""] * n
    done = np.zeros(n, dtype=bool)
    while not done.all():
        # a_t ~ pi_theta(. | x_t) = softmax(logits / T)
        probs = torch.softmax(out.logits[:, -1, :n_actions].float() / temperature, dim=-1)
        actions = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        # the env appends a_t; an episode ends at a stop token or max_new_tokens and only
        # then is it scored: r is 0 on every step but the last (sparse terminal reward)
        _, r, terminated, truncated, infos = envs.step(actions.numpy())
        for i in np.flatnonzero(~done):
            completions[i].append(int(actions[i]))
        for i in np.flatnonzero((terminated | truncated) & ~done):
            rewards[i], texts[i] = r[i], str(infos["completion"][i])
            done[i] = True
        if done.all():
            break
        mask = torch.cat([mask, torch.ones((n, 1), dtype=torch.long)], dim=-1)
        positions = positions[:, -1:] + 1
        out = policy(input_ids=actions[:, None], attention_mask=mask, position_ids=positions,
                     use_cache=True, **{cache_kw: getattr(out, cache_kw)})
    return prompts, [np.array(c) for c in completions], rewards, texts


def reinforce_losses(logp, ref_logp, values, rewards, mask, beta: float):
    """The paper's losses for B sequences of T completion tokens ((B, T) tensors, mask 1 on
    real tokens; rewards (B,)). Per sequence a sum over tokens, then a mean over sequences."""
    # KL(y) = sum_t [log pi_theta(a_t | x_t) - log pi_SFT(a_t | x_t)]   (stop-gradient)
    kl = ((logp.detach() - ref_logp) * mask).sum(-1)
    # R = (1 - beta) r(x, y) - beta KL(y); gamma = 1 and the reward arrives at the end, so the
    # return of every token is Z_t = sum_{t' >= t} r_t' = R   (token-level return)
    returns = ((1 - beta) * rewards - beta * kl)[:, None].expand_as(mask)
    # L_PG = - sum_t log pi_theta(a_t | x_t) * stopgrad(Z_t - V(x_t))   (value baseline)
    advantage = (returns - values).detach()
    pg_loss = -(logp * advantage * mask).sum(-1).mean()
    # L_V = sum_t (Z_t - V(x_t))^2
    v_loss = ((returns - values).pow(2) * mask).sum(-1).mean()
    return pg_loss, v_loss, kl, returns[:, 0]


def update(policy, reference, value, optimizers, prompts, completions, rewards, args: Args,
           n_actions: int) -> dict[str, float]:
    """One REINFORCE step on the sampled episodes: [left pad | prompt | completion | pad]."""
    width, steps = max(len(p) for p in prompts), max(len(c) for c in completions)
    ids, attn = left_pad(prompts, width)
    comp = torch.zeros((len(prompts), steps), dtype=torch.long)
    mask = torch.zeros((len(prompts), steps))
    for i, c in enumerate(completions):
        comp[i, : len(c)], mask[i, : len(c)] = torch.as_tensor(c), 1.0
    ids, attn = torch.cat([ids, comp], -1), torch.cat([attn, mask.long()], -1)
    positions = (attn.cumsum(-1) - 1).clamp(min=0)
    states = slice(width - 1, width - 1 + steps)  # outputs here predict the completion tokens

    def logprobs(model):  # log pi(a_t | x_t) of the tempered distribution softmax(logits / T)
        logits = model(input_ids=ids, attention_mask=attn, position_ids=positions).logits
        logp = torch.log_softmax(logits[:, states, :n_actions].float() / args.temperature, -1)
        return logp.gather(-1, comp[..., None]).squeeze(-1)

    with torch.no_grad():
        ref_logp = logprobs(reference)
    logp = logprobs(policy)
    values = value(ids, attn, positions)[:, states]
    r = torch.as_tensor(rewards, dtype=torch.float32)
    pg_loss, v_loss, kl, returns = reinforce_losses(logp, ref_logp, values, r, mask, args.beta)
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    (pg_loss + v_loss).backward()  # disjoint parameters: one backward for both models
    for model in (policy, value):
        nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
    for opt in optimizers:
        opt.step()
    return {"reward": float(r.mean()), "kl": float(kl.mean()), "return": float(returns.mean()),
            "pg_loss": pg_loss.item(), "v_loss": v_loss.item(),
            "length": float(mask.sum(-1).mean())}


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    args = parse_args(argv)
    # seeding: python, numpy, torch (weights init of nothing here; sampling has its own RNG)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)

    # models: pi_theta (trained), pi_SFT (frozen copy of the start), V (separate model)
    policy = load_causal_lm(args.policy, dtype=torch.float32)  # eval mode: no dropout
    reference = copy.deepcopy(policy).requires_grad_(False)
    value = ValueModel(policy)
    optimizers = [torch.optim.AdamW(policy.parameters(), lr=args.lr),
                  torch.optim.AdamW(value.parameters(), lr=args.value_lr)]

    reward_options = {"judge": args.judge} if args.judge and args.reward == "direct" else {}
    envs = gym.make_vec(
        args.env_id, num_envs=args.num_envs, vectorization_mode="vector_entry_point",
        autoreset_mode=AutoresetMode.DISABLED,  # ended episodes wait until all have ended
        reward=make_reward(args), policy=args.policy, split=args.split,
        data_dir=args.data_dir or None, max_new_tokens=args.max_new_tokens,
        max_prompt_tokens=args.max_prompt_tokens, vocab_size=policy.config.vocab_size,
        **reward_options)
    n_actions = int(envs.single_action_space.n)
    print(f"{args.env_id}: policy {args.policy}, reward {args.reward}, "
          f"{args.num_envs} episodes per update, {envs.unwrapped.data_source}")

    history = []
    for step in range(1, args.steps + 1):
        t0 = time.perf_counter()
        prompts, completions, rewards, texts = rollout(
            policy, envs, args.temperature, generator, seed=args.seed if step == 1 else None)
        t1 = time.perf_counter()
        if step == 1:  # start the baseline at the first batch's mean return (R with KL = 0)
            with torch.no_grad():
                value.head.bias.fill_((1 - args.beta) * float(np.mean(rewards)))
        stats = update(policy, reference, value, optimizers, prompts, completions, rewards,
                       args, n_actions)
        stats["time"] = time.perf_counter() - t0
        history.append(stats)
        print(f"step {step:3d}  reward {stats['reward']:+.4f}  kl {stats['kl']:+.4f}  "
              f"return {stats['return']:+.4f}  pg_loss {stats['pg_loss']:+.4f}  "
              f"v_loss {stats['v_loss']:.4f}  length {stats['length']:.1f}  "
              f"rollout {t1 - t0:.1f}s  total {stats['time']:.1f}s", flush=True)
    print(f"last completion: {texts[0][:200]!r}")
    envs.close()
    return history


if __name__ == "__main__":
    main(sys.argv[1:])
