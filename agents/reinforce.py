"""Token-level REINFORCE with a learned value baseline (or a leave-one-out one) and KL control
(RLAIF, Lee et al. 2023, arXiv 2309.00267, Sec. 2 and Appendix A.3/F). All the math of one
update lives in this file.

The MDP
-------
A state is the prompt plus the tokens generated so far, ``x_t = (prompt, a_1 .. a_{t-1})``;
an action is the next token ``a_t``. The episode ends at a stop token or after
``max_new_tokens``. The reward arrives only at the last token and gamma = 1, so the return
of EVERY token of a completion is the sequence reward::

    Z_t = sum_{t' >= t} gamma^(t'-t) r_t' = R          for all t = 1..T

KL control (how the KL enters the return)
-----------------------------------------
The paper maximises::

    J(theta) = E_{y ~ pi_theta}[(1 - beta) r(x, y) - beta KL(pi_theta || pi_ref)]

with ``pi_ref`` the frozen initial policy and ``beta = 0.05``. The KL of a sampled sequence
is estimated with the explicit per-token estimator, summed over the completion::

    KL(y) = sum_{t=1}^{T} [log pi_theta(a_t | x_t) - log pi_ref(a_t | x_t)]

and folded into the sequence reward, which becomes every token's return::

    R = (1 - beta) * r(x, y) - beta * KL(y)               (kl_penalized_reward)
    Z_t = R                                                (all tokens of the completion)

``KL(y)`` is a constant in the loss (stop-gradient). This is still an unbiased estimate of
``grad J``: ``grad E_pi[log pi/pi_ref] = E_pi[grad log pi(y) * log(pi(y)/pi_ref(y))]
+ E_pi[grad log pi(y)]`` and the second term is 0.

Losses (per sequence: SUM over its tokens; batch: MEAN over sequences)
----------------------------------------------------------------------
::

    L_PG = - sum_t log pi_theta(a_t | x_t) * stopgrad(Z_t - V_phi(x_t))
    L_V  =   sum_t (Z_t - V_phi(x_t))^2

Summing over tokens follows the paper's per-sequence formulas (the KL is also a per-sequence
sum, so every term of ``R`` and of the losses is on the same scale); the batch of B
sequences is then averaged, so the learning rate does not depend on B. The value baseline
``V_phi`` is stop-gradient inside ``L_PG``: the policy loss sends no gradient into the value
model (tested).

Temperature
-----------
Completions are sampled from ``softmax(logits / T)`` with T = 0.9 (paper). The log-probs in
``L_PG`` and in ``KL(y)`` are computed at the SAME temperature, for the policy and the
reference alike: the policy that acts (and is optimised, on-policy) is the tempered one, so
``log pi_theta`` here is exactly the log-prob of the sampling distribution, and the KL is
the KL between the tempered policy and the tempered reference.

Value model
-----------
A SEPARATE model, as in the paper: a copy of the initial policy's transformer backbone
(``policy.base_model``) with a fresh scalar head (zero-initialised, so ``V = 0`` at the
start). It has its own optimiser and learning rate. A value head on the policy would share
the backbone and save memory, but then ``L_V`` would move the policy's features (and need a
loss weight to balance against ``L_PG``); the separate model keeps the two objectives apart,
matching the paper. The cost is memory: policy, reference and value model (3 copies of the
weights) plus two AdamW states. Models run in eval mode during updates (no dropout): the recomputed
log-probs are then those of the policy that sampled.

Leave-one-out baseline (``baseline="loo"``, RLOO: Kool et al. 2019, Ahmadian et al. 2024)
-----------------------------------------------------------------------------------------
With k >= 2 completions of the same prompt (a group: ``k`` consecutive episodes of the
batch), each completion's baseline is the mean return of the OTHER k - 1 of its group::

    b_i = 1/(k-1) * sum_{j in group(i), j != i} R_j
    A_i = R_i - b_i = k/(k-1) * (R_i - mean_{j in group(i)} R_j)
    L_PG = - mean_i [ sum_t mask_it * logp_it * stopgrad(A_i) ]

``R`` is the same KL-penalized return as above. ``b_i`` does not depend on ``y_i`` (the other
samples are drawn independently given the prompt), so the gradient stays unbiased, and the
advantages of a group sum to 0. No value model is built, stepped or stored: one backbone
copy, its AdamW state and its forward/backward fewer than with ``baseline="value"``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "BASELINES",
    "PackedEpisodes",
    "StepStats",
    "ValueModel",
    "completion_logits",
    "kl_penalized_reward",
    "loo_baseline",
    "pack_episodes",
    "policy_gradient_loss",
    "reinforce_losses",
    "reinforce_step",
    "sequence_kl",
    "token_logprobs",
]


#: Accepted ``baseline`` values of :func:`reinforce_step` (and ``TrainConfig.baseline``).
BASELINES: tuple[str, ...] = ("value", "loo")

# --------------------------------------------------------------------------------------------
# the math


def _check_token_shapes(mask: torch.Tensor, **tensors: torch.Tensor) -> None:
    if mask.ndim != 2:
        raise ValueError(f"mask must be (B, T), got shape {tuple(mask.shape)}")
    for name, value in tensors.items():
        if value.shape != mask.shape:
            raise ValueError(
                f"{name} has shape {tuple(value.shape)}, expected the mask's {tuple(mask.shape)}"
            )


def sequence_kl(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence KL estimate ``KL(y) = sum_t mask_t * (logp_t - ref_logp_t)``.

    Args:
        logp: float ``(B, T)``, ``log pi_theta(a_t | x_t)`` of the sampled tokens.
        ref_logp: float ``(B, T)``, ``log pi_ref(a_t | x_t)`` of the same tokens.
        mask: ``(B, T)``, 1 for completion tokens, 0 for padding.

    Returns:
        float ``(B,)``. Each term is an unbiased single-sample estimate of the per-token KL,
        so a sequence's value can be negative; its expectation over ``y ~ pi_theta`` is
        ``KL(pi_theta || pi_ref) >= 0``.
    """
    _check_token_shapes(mask, logp=logp, ref_logp=ref_logp)
    mask = mask.to(logp.dtype)
    return ((logp - ref_logp) * mask).sum(dim=-1)


def kl_penalized_reward(r: Any, kl: Any, beta: float) -> Any:
    """The sequence return ``R = (1 - beta) * r - beta * KL(y)``.

    Args:
        r: raw rewards ``(B,)`` (tensor or array).
        kl: per-sequence KL estimates ``(B,)`` (:func:`sequence_kl`).
        beta: KL coefficient in ``[0, 1]`` (paper: 0.05).
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta (kl_coef) must be in [0, 1], got {beta}")
    if tuple(r.shape) != tuple(kl.shape):
        raise ValueError(f"r has shape {tuple(r.shape)} but kl has {tuple(kl.shape)}")
    return (1.0 - beta) * r - beta * kl


def reinforce_losses(
    logp: torch.Tensor, values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE-with-baseline losses, summed over tokens and averaged over sequences.

    ::

        L_PG = mean_b [ - sum_t mask_bt * logp_bt * stopgrad(Z_bt - V_bt) ]
        L_V  = mean_b [   sum_t mask_bt * (Z_bt - V_bt)^2 ]

    Args:
        logp: ``(B, T)`` log-probs of the sampled tokens (with grad to the policy).
        values: ``(B, T)`` ``V(x_t)``, the value of the state each token was sampled in
            (with grad to the value model).
        returns: ``(B,)`` sequence returns ``R`` (then ``Z_t = R`` for every token,
            gamma = 1) or ``(B, T)`` per-token returns. No gradient flows into them.
        mask: ``(B, T)``, 1 for completion tokens, 0 for padding.

    Returns:
        ``(pg_loss, v_loss)``, scalar tensors.
    """
    _check_token_shapes(mask, logp=logp, values=values)
    if returns.ndim == 1:
        if returns.shape[0] != mask.shape[0]:
            raise ValueError(f"returns has {returns.shape[0]} sequences, mask {mask.shape[0]}")
        returns = returns[:, None].expand_as(mask)  # Z_t = R for every token (gamma = 1)
    _check_token_shapes(mask, returns=returns)
    mask = mask.to(logp.dtype)
    returns = returns.detach().to(logp.dtype)
    advantage = (returns - values).detach()  # stopgrad(Z_t - V(x_t))
    pg_loss = -(logp * advantage * mask).sum(dim=-1).mean()
    v_loss = ((returns - values).pow(2) * mask).sum(dim=-1).mean()
    return pg_loss, v_loss


def loo_baseline(returns: torch.Tensor, group_size: int) -> torch.Tensor:
    """Leave-one-out baseline of each return within its group of ``group_size`` consecutive
    sequences (module doc)::

        b_i = 1/(k-1) * sum_{j in group(i), j != i} R_j  =  (sum_{j in group(i)} R_j - R_i) / (k-1)

    Args:
        returns: ``(B,)`` sequence returns ``R``, groups of ``k`` consecutive entries.
        group_size: k >= 2.

    Returns:
        ``(B,)`` baselines (no gradient flows through them).

    Raises:
        ValueError: ``k < 2`` (with one sample per prompt there is no other sample to
            average) or ``B`` not a multiple of ``k``.
    """
    k = int(group_size)
    if k < 2:
        raise ValueError(f"the leave-one-out baseline needs k >= 2 samples per prompt, got "
                         f"k={group_size}: with one sample there is no other to average")
    if returns.ndim != 1 or returns.shape[0] % k:
        raise ValueError(f"returns must be (B,) with B a multiple of k={k}, got shape "
                         f"{tuple(returns.shape)}")
    grouped = returns.detach().view(-1, k)  # (B/k, k)
    total = grouped.sum(dim=1, keepdim=True)  # sum_j R_j per group
    return ((total - grouped) / (k - 1)).reshape(-1)  # (sum_j R_j - R_i) / (k - 1)


def policy_gradient_loss(logp: torch.Tensor, advantages: torch.Tensor,
                         mask: torch.Tensor) -> torch.Tensor:
    """``L_PG = - mean_b [ sum_t mask_bt * logp_bt * stopgrad(A_b) ]`` with one advantage per
    sequence (the leave-one-out ``A_i = R_i - b_i``, the same for all its tokens).

    Args:
        logp: ``(B, T)`` log-probs of the sampled tokens (with grad to the policy).
        advantages: ``(B,)``; no gradient flows into them.
        mask: ``(B, T)``, 1 for completion tokens.
    """
    _check_token_shapes(mask, logp=logp)
    if advantages.shape != (mask.shape[0],):
        raise ValueError(f"advantages has shape {tuple(advantages.shape)}, expected "
                         f"({mask.shape[0]},)")
    mask = mask.to(logp.dtype)
    advantage = advantages.detach().to(logp.dtype)[:, None]  # A_b for every token
    return -(logp * advantage * mask).sum(dim=-1).mean()


def token_logprobs(
    logits: torch.Tensor, tokens: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs and entropies of the tempered distribution ``softmax(logits / T)``.

    Args:
        logits: ``(B, T, V)``, the logits each token was sampled from (already cut to the
            action space).
        tokens: int64 ``(B, T)`` sampled ids in ``[0, V)``.
        temperature: T > 0.

    Returns:
        ``logp`` float32 ``(B, T)`` with grad, and ``entropy`` float32 ``(B, T)`` without.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logprobs = torch.log_softmax(logits.float() / temperature, dim=-1)
    logp = logprobs.gather(-1, tokens[..., None]).squeeze(-1)
    with torch.no_grad():
        entropy = -(logprobs.exp() * logprobs).sum(dim=-1)
    return logp, entropy


# --------------------------------------------------------------------------------------------
# models


class ValueModel(nn.Module):
    """``V(x_t)``: a transformer backbone with a scalar head on every position.

    Built with :meth:`from_policy`: a deep copy of ``policy.base_model`` (so the value
    model starts from the initial policy's weights, as in the paper) and a zero-initialised
    ``Linear(hidden_size, 1)``.
    """

    def __init__(self, backbone: nn.Module, hidden_size: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @classmethod
    def from_policy(cls, policy: nn.Module) -> ValueModel:
        """A value model whose backbone is a copy of ``policy``'s (``policy.base_model``)."""
        backbone = getattr(policy, "base_model", None)
        if backbone is None or backbone is policy:
            raise TypeError(
                f"{type(policy).__name__} has no separate base_model to copy for the value model"
            )
        hidden = getattr(policy.config, "hidden_size", None)
        if not isinstance(hidden, int):
            raise TypeError("policy.config.hidden_size is needed to size the value head")
        value = cls(copy.deepcopy(backbone), hidden)
        param = next(policy.parameters())
        return value.to(device=param.device, dtype=param.dtype)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        positions: slice | None = None,
    ) -> torch.Tensor:
        """Values float32 ``(B, L)`` (or ``(B, len(positions))`` for a slice of positions)."""
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            use_cache=False,
        ).last_hidden_state
        if positions is not None:
            hidden = hidden[:, positions]
        return self.head(hidden).squeeze(-1).float()


def init_value_baseline(value_model: ValueModel, rewards: np.ndarray, kl_coef: float) -> float:
    """Data-dependent start of the baseline: ``V(x_t) = (1 - beta) * mean(r)`` for every state.

    The value head starts at zero weight, so setting its bias makes the value of every state
    the mean return of the first batch (``R = (1 - beta) r - beta KL`` with ``KL = 0``, since
    the policy still equals the reference). Without it the baseline starts at 0 while the
    rewards sit far from 0, and with an AdamW step of about ``value_lr`` per parameter it
    needs tens of updates to catch up; meanwhile every advantage has the sign of the mean
    reward, and REINFORCE reinforces whatever was sampled (reports/drlaif-cpu: mean
    advantage 0.26 -> 0.04 over the first 30 steps). Call it once, before the first update
    of a fresh run (not on resume: the bias is saved with the value model).

    Args:
        rewards: float ``(B,)`` raw rewards of the first batch (finite).
        kl_coef: beta in [0, 1].

    Returns:
        The value the baseline now starts from.
    """
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 1 or r.size == 0 or not np.all(np.isfinite(r)):
        raise ValueError(f"rewards must be a non-empty finite 1-D array, got {r!r}")
    start = (1.0 - kl_coef) * float(r.mean())
    with torch.no_grad():
        value_model.head.weight.zero_()
        value_model.head.bias.fill_(start)
    return start


# --------------------------------------------------------------------------------------------
# batching


@dataclass
class PackedEpisodes:
    """Episodes as one padded batch: ``[left pad | prompt | completion | right pad]``.

    Every completion starts at column ``prompt_width`` (prompts left-padded to the longest,
    as in the rollout), so the logits that predict the completion tokens are the last
    ``T + 1`` positions minus the final one, for every row at once.

    Attributes:
        input_ids, attention_mask, position_ids: int64 ``(B, prompt_width + T)``.
        tokens: int64 ``(B, T)``, completion ids (pad where ``mask`` is 0).
        mask: float32 ``(B, T)``, 1 for real completion tokens.
        prompt_width: columns taken by the (left-padded) prompts.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    tokens: torch.Tensor
    mask: torch.Tensor
    prompt_width: int

    @property
    def completion_width(self) -> int:
        """T, the longest completion."""
        return int(self.tokens.shape[1])

    @property
    def predicting_positions(self) -> slice:
        """Columns whose outputs predict the completion tokens (states ``x_1 .. x_T``)."""
        return slice(self.prompt_width - 1, self.prompt_width - 1 + self.completion_width)


def pack_episodes(
    prompt_ids: list[np.ndarray], completion_ids: list[np.ndarray], pad_id: int,
    device: torch.device | str = "cpu",
) -> PackedEpisodes:
    """Pack B (prompt, completion) id arrays into a :class:`PackedEpisodes`.

    Raises:
        ValueError: mismatched counts, an empty prompt or an empty completion.
    """
    if len(prompt_ids) != len(completion_ids) or not prompt_ids:
        raise ValueError(
            f"need the same positive number of prompts and completions, got "
            f"{len(prompt_ids)} and {len(completion_ids)}"
        )
    if min(len(p) for p in prompt_ids) == 0 or min(len(c) for c in completion_ids) == 0:
        raise ValueError("every episode needs a non-empty prompt and completion")
    n = len(prompt_ids)
    width = max(len(p) for p in prompt_ids)
    steps = max(len(c) for c in completion_ids)
    ids = torch.full((n, width + steps), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width + steps), dtype=torch.long)
    mask = torch.zeros((n, steps), dtype=torch.float32)
    for i, (p, c) in enumerate(zip(prompt_ids, completion_ids, strict=True)):
        ids[i, width - len(p) : width] = torch.tensor(np.asarray(p), dtype=torch.long)
        ids[i, width : width + len(c)] = torch.tensor(np.asarray(c), dtype=torch.long)
        attention[i, width - len(p) : width + len(c)] = 1
        mask[i, : len(c)] = 1.0
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
    device = torch.device(device)
    return PackedEpisodes(
        input_ids=ids.to(device), attention_mask=attention.to(device),
        position_ids=position_ids.to(device), tokens=ids[:, width:].to(device),
        mask=mask.to(device), prompt_width=width,
    )


def completion_logits(policy: nn.Module, packed: PackedEpisodes, n_actions: int) -> torch.Tensor:
    """Logits ``(B, T, n_actions)`` that predicted each completion token (one forward pass,
    only the last ``T + 1`` positions go through the LM head)."""
    steps = packed.completion_width
    out = policy(
        input_ids=packed.input_ids, attention_mask=packed.attention_mask,
        position_ids=packed.position_ids, use_cache=False, logits_to_keep=steps + 1,
    )
    return out.logits[:, :-1, :n_actions]


# --------------------------------------------------------------------------------------------
# the training step


@dataclass
class StepStats:
    """Metrics of one update (means over the batch's sequences unless stated).

    ``reward``: raw reward r (before KL); ``reward_std``; ``kl``: mean ``KL(y)``;
    ``penalized_reward``: mean ``R``; ``completion_length``: tokens per completion;
    ``entropy``: mean per-token entropy of the tempered policy; ``pg_loss``, ``value_loss``;
    ``value_mean``: mean ``V(x_t)`` over tokens; ``policy_grad_norm``, ``value_grad_norm``
    (before clipping). With ``baseline="loo"`` there is no value model: ``value_mean`` is the
    mean leave-one-out baseline ``b_i`` over sequences, ``value_loss`` and
    ``value_grad_norm`` are 0.
    """

    reward: float
    reward_std: float
    kl: float
    penalized_reward: float
    completion_length: float
    entropy: float
    pg_loss: float
    value_loss: float
    value_mean: float
    policy_grad_norm: float
    value_grad_norm: float


def _grad_norm(params: list[nn.Parameter], max_norm: float | None) -> float:
    if max_norm is not None:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g)
                                                       for g in grads])))


def reinforce_step(
    policy: nn.Module,
    value_model: ValueModel | None,
    ref_policy: nn.Module,
    policy_optimizer: torch.optim.Optimizer,
    value_optimizer: torch.optim.Optimizer | None,
    prompt_ids: list[np.ndarray],
    completion_ids: list[np.ndarray],
    rewards: np.ndarray,
    *,
    kl_coef: float,
    temperature: float,
    n_actions: int,
    pad_id: int,
    micro_batch_size: int | None = None,
    max_grad_norm: float | None = None,
    baseline: str = "value",
    group_size: int = 1,
) -> StepStats:
    """One REINFORCE update of ``policy`` (and ``value_model``) from B sampled episodes.

    For each micro-batch (gradients accumulate; each is weighted by its share of B so the
    sum equals the full-batch mean)::

        logp     = log pi_theta(a_t | x_t)   at ``temperature``  (one forward, with grad)
        ref_logp = log pi_ref(a_t | x_t)     at ``temperature``  (no grad)
        KL(y)    = sum_t (logp - ref_logp)                       (detached)
        R        = (1 - kl_coef) * r - kl_coef * KL(y);  Z_t = R
        value:  L_PG, L_V = reinforce_losses(logp, V(x_t), R, mask)
        loo:    b = loo_baseline(R, k);  L_PG = policy_gradient_loss(logp, R - b, mask)

    then one optimiser step each (after optional gradient-norm clipping).

    Args:
        value_model, value_optimizer: the value baseline (``None`` with ``"loo"``).
        prompt_ids, completion_ids: B int arrays (:class:`~agents.rollout.EpisodeBatch`).
        rewards: float ``(B,)`` raw rewards r.
        kl_coef: beta in [0, 1].
        n_actions: size of the action space (logits beyond it are ignored, as in sampling).
        pad_id: id used for padding (masked out, any valid id works).
        micro_batch_size: sequences per forward/backward (None: all B at once); with
            ``"loo"`` a multiple of ``group_size`` (a group's returns are needed together).
        max_grad_norm: clip each model's gradient norm to this (None: no clipping).
        baseline: ``"value"`` (learned value model, the paper's) or ``"loo"`` (leave-one-out
            mean of the group's other returns, module doc).
        group_size: k, completions per prompt, consecutive in the batch (``"loo"``: k >= 2).

    Raises:
        ValueError: an unknown baseline; ``"loo"`` with ``k < 2``, B or the micro-batch not
            a multiple of k; ``"value"`` without a value model.
    """
    n = len(prompt_ids)
    rewards_t = torch.as_tensor(np.asarray(rewards, dtype=np.float64), dtype=torch.float32)
    if rewards_t.shape != (n,):
        raise ValueError(f"rewards has shape {tuple(rewards_t.shape)}, expected ({n},)")
    chunk = n if micro_batch_size is None else int(micro_batch_size)
    if chunk < 1:
        raise ValueError(f"micro_batch_size must be >= 1, got {micro_batch_size}")
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    loo = baseline == "loo"
    if loo:
        if group_size < 2:
            raise ValueError(f"baseline='loo' needs group_size >= 2 samples per prompt, got "
                             f"{group_size}")
        if n % group_size or chunk % group_size:
            raise ValueError(f"baseline='loo': the batch ({n}) and the micro-batch ({chunk}) "
                             f"must be multiples of group_size={group_size}")
    elif value_model is None or value_optimizer is None:
        raise ValueError("baseline='value' needs a value model and its optimizer")
    device = next(policy.parameters()).device
    policy_optimizer.zero_grad(set_to_none=True)
    if value_optimizer is not None:
        value_optimizer.zero_grad(set_to_none=True)
    totals = {"kl": 0.0, "penalized": 0.0, "pg": 0.0, "v": 0.0}
    entropy_sum = value_sum = 0.0
    token_count = 0.0
    for start in range(0, n, chunk):
        rows = slice(start, min(start + chunk, n))
        weight = (rows.stop - rows.start) / n
        packed = pack_episodes(prompt_ids[rows], completion_ids[rows], pad_id, device)
        with torch.no_grad():
            ref_logp, _ = token_logprobs(
                completion_logits(ref_policy, packed, n_actions), packed.tokens, temperature
            )
        logp, entropy = token_logprobs(
            completion_logits(policy, packed, n_actions), packed.tokens, temperature
        )
        kl = sequence_kl(logp.detach(), ref_logp, packed.mask)  # KL(y), (b,)
        returns = kl_penalized_reward(rewards_t[rows].to(device), kl, kl_coef)  # R, (b,)
        if loo:
            base = loo_baseline(returns, group_size)  # b_i, (b,)
            pg_loss = policy_gradient_loss(logp, returns - base, packed.mask)  # A_i = R_i - b_i
            v_loss = torch.zeros((), device=device)
            value_sum += float(base.sum())
        else:
            values = value_model(packed.input_ids, packed.attention_mask,  # type: ignore[misc]
                                 packed.position_ids, positions=packed.predicting_positions)
            pg_loss, v_loss = reinforce_losses(logp, values, returns, packed.mask)
            value_sum += float((values.detach() * packed.mask).sum())
        (weight * (pg_loss + v_loss)).backward()  # disjoint parameters: one backward
        totals["kl"] += kl.sum().item()
        totals["penalized"] += returns.sum().item()
        totals["pg"] += weight * pg_loss.item()
        totals["v"] += weight * v_loss.item()
        entropy_sum += float((entropy * packed.mask).sum())
        token_count += float(packed.mask.sum())
    policy_params = [p for p in policy.parameters() if p.requires_grad]
    policy_norm = _grad_norm(policy_params, max_grad_norm)
    value_norm = 0.0
    if value_model is not None and not loo:
        value_params = [p for p in value_model.parameters() if p.requires_grad]
        value_norm = _grad_norm(value_params, max_grad_norm)
    if not (math.isfinite(policy_norm) and math.isfinite(value_norm)):
        raise FloatingPointError(
            f"non-finite gradient norm (policy {policy_norm}, value {value_norm}); "
            "lower the learning rate or set max_grad_norm"
        )
    policy_optimizer.step()
    if value_optimizer is not None and not loo:
        value_optimizer.step()
    lengths = np.array([len(c) for c in completion_ids], dtype=np.float64)
    return StepStats(
        reward=float(rewards_t.mean()),
        reward_std=float(rewards_t.std(unbiased=False)),
        kl=totals["kl"] / n,
        penalized_reward=totals["penalized"] / n,
        completion_length=float(lengths.mean()),
        entropy=entropy_sum / token_count,
        pg_loss=totals["pg"],
        value_loss=totals["v"],
        value_mean=value_sum / (n if loo else token_count),
        policy_grad_norm=policy_norm,
        value_grad_norm=value_norm,
    )
