"""Train a transformers causal LM on the RLAIF envs with tianshou 2.x algorithms.

Optional extra: ``pip install "rlaif-gym[tianshou]"``. Nothing else in the project imports
this module.

Pieces (tianshou 2.x separates the *policy*, which maps observations to actions, from the
*algorithm*, which updates it):

* :class:`CausalLMActor`: a tianshou actor (``obs -> logits``) for the env's
  ``Dict(tokens, length)`` observations. It returns the LM's logits at position
  ``length - 1``, i.e. the next-token distribution, over the env's action space.
* :class:`CausalLMCritic`: ``obs -> V(obs)``, a scalar head on the hidden state at position
  ``length - 1`` of a copy of the LM's backbone (or of the actor's own backbone).
* :class:`NumericInfoWrapper`: strips string infos (``prompt``, ``completion``, ...) that
  tianshou's replay buffer cannot hold (see the class docstring).
* :func:`make_tianshou_reinforce` / :func:`make_tianshou_a2c`: wire the actor (and critic)
  into a :class:`~tianshou.algorithm.modelfree.reinforce.DiscreteActorPolicy`, the
  ``Reinforce`` / ``A2C`` algorithm (gamma 1 by default), a ``DummyVectorEnv`` and a training
  ``Collector``, returned as a :class:`TianshouSetup`.
* :func:`train_tianshou`: the documented tianshou 2.x way,
  ``algorithm.run_training(OnPolicyTrainerParams(...))``, with whole-episode collection.
* :func:`evaluate_tianshou`: mean-able episode returns of a policy (sampled or greedy).

This path is for algorithm experiments, not speed: tianshou's policy interface is stateless
per step, so every env step recomputes the full forward pass over prompt + completion (no KV
cache), and the collector steps sub-envs in lockstep through Python. The native rollout in
:mod:`agents.rollout` (KV cache, one prefill per batch) is the fast path for real training.

Example::

    import gymnasium as gym, rlaif_gym
    from agents.tianshou_adapter import make_tianshou_reinforce, train_tianshou

    env_fns = [lambda: gym.make("RLAIF-TLDR-v0", reward=my_reward, max_new_tokens=16)
               for _ in range(8)]
    setup = make_tianshou_reinforce(model, env_fns, lr=1e-5, seed=0)
    train_tianshou(setup, epochs=10, episodes_per_collect=16)
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

_INSTALL_HINT = 'pip install "rlaif-gym[tianshou]"'

try:
    from tianshou.algorithm import A2C, Reinforce
    from tianshou.algorithm.modelfree.reinforce import DiscreteActorPolicy
    from tianshou.algorithm.optim import AdamOptimizerFactory
    from tianshou.data import Collector, CollectStats, InfoStats, VectorReplayBuffer
    from tianshou.env import DummyVectorEnv
    from tianshou.trainer import OnPolicyTrainerParams
    from tianshou.utils.net.common import ActionReprNet
except ImportError as exc:  # tianshou missing, or a 1.x release without tianshou.algorithm
    raise ImportError(
        f"agents.tianshou_adapter needs tianshou >= 2.0 ({exc}); install it with: {_INSTALL_HINT}"
    ) from exc

__all__ = [
    "CausalLMActor",
    "CausalLMCritic",
    "NumericInfoWrapper",
    "TianshouSetup",
    "evaluate_tianshou",
    "last_final_infos",
    "left_align",
    "make_tianshou_a2c",
    "make_tianshou_envs",
    "make_tianshou_reinforce",
    "train_tianshou",
]

EnvFn = Callable[[], gym.Env]

#: Transitions each sub-env's part of the training buffer holds by default.
DEFAULT_BUFFER_PER_ENV = 2048


# -- observations -> model inputs --------------------------------------------------------------


def _field(obs: Any, key: str) -> Any:
    try:
        return obs[key]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(
            f"observation batch has no {key!r} field: expected the env's Dict(tokens, length) "
            f"observations batched by tianshou (a Batch or dict), got {type(obs).__name__}"
        ) from exc


def _as_tensor(value: Any) -> torch.Tensor:
    return value.detach().cpu() if isinstance(value, torch.Tensor) else torch.as_tensor(
        np.asarray(value))


def left_align(
    obs: Any, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Turn a batch of right-padded env observations into left-padded model inputs.

    Args:
        obs: a tianshou ``Batch`` (or dict) with ``tokens`` int ``(B, max_len)`` (right-padded)
            and ``length`` int ``(B,)`` in ``[1, max_len]``.
        device: where the returned tensors live.

    Returns:
        ``input_ids`` int64 ``(B, W)`` with ``W = max(length)``, each row's ``length`` tokens
        flush right (left positions hold 0 and are masked), ``attention_mask`` int64
        ``(B, W)`` and ``position_ids`` int64 ``(B, W)`` (0 at the first real token). The
        last column is therefore each row's position ``length - 1``.

    Raises:
        ValueError: missing fields, wrong shapes, or lengths outside ``[1, max_len]``.
    """
    tokens, lengths = _as_tensor(_field(obs, "tokens")), _as_tensor(_field(obs, "length"))
    if tokens.ndim != 2 or lengths.ndim != 1 or lengths.shape[0] != tokens.shape[0]:
        raise ValueError(
            f"expected tokens (B, max_len) and length (B,), got {tuple(tokens.shape)} and "
            f"{tuple(lengths.shape)}"
        )
    if tokens.is_floating_point() or lengths.is_floating_point():
        raise ValueError("tokens and length must be integer arrays")
    if tokens.shape[0] == 0:
        raise ValueError("empty observation batch")
    lengths = lengths.long()
    max_len = tokens.shape[1]
    if int(lengths.min()) < 1 or int(lengths.max()) > max_len:
        raise ValueError(
            f"observation lengths must lie in [1, {max_len}], got {lengths.tolist()}"
        )
    width = int(lengths.max())
    source = torch.arange(width)[None, :] - (width - lengths)[:, None]  # (B, W)
    mask = source >= 0
    ids = tokens[:, :width].long().gather(1, source.clamp(min=0))
    ids = torch.where(mask, ids, torch.zeros_like(ids))
    attention_mask = mask.long()
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), attention_mask.to(device), position_ids.to(device)


def _device_of(module: nn.Module) -> torch.device:
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params


def _action_count(action_space: gym.Space | int) -> int:
    if isinstance(action_space, gym.spaces.Discrete):
        if int(action_space.start) != 0:
            raise ValueError(f"action space must start at 0, got {action_space}")
        return int(action_space.n)
    if isinstance(action_space, (int, np.integer)) and not isinstance(action_space, bool):
        if int(action_space) < 1:
            raise ValueError(f"number of actions must be positive, got {action_space}")
        return int(action_space)
    raise TypeError(f"action_space must be a Discrete space or an int, got {action_space!r}")


# -- actor and critic --------------------------------------------------------------------------


class CausalLMActor(ActionReprNet):
    """tianshou actor: env observations -> next-token logits of a causal LM.

    Args:
        model: a transformers causal LM (``model(input_ids, attention_mask, position_ids)``
            returns ``.logits`` ``(B, T, V_model)``). Its parameters are trained in place.
        action_space: the env's ``Discrete(n)`` action space (or ``n``). Model ids ``>= n``
            are dropped; if ``V_model < n``, the missing actions get logit ``-inf``.
        temperature: logits are divided by it (> 0); the policy gradient is then that of
            the tempered distribution, the one actions are sampled from.

    ``forward(obs)`` returns ``(logits, state)``: float32 ``(B, n)`` and ``state`` unchanged.
    Every call runs the full forward pass over ``tokens[:length]`` (no KV cache).

    Gradients are only built in train mode: tianshou's collectors put the policy in eval
    mode but do not disable autograd, while its updates run in train mode. In eval mode the
    forward runs under ``torch.no_grad()`` (set ``grad_in_eval = True`` to change that).
    Note that dropout, if the model has any, is thus active during updates only.
    """

    def __init__(
        self, model: nn.Module, action_space: gym.Space | int, *, temperature: float = 1.0
    ) -> None:
        super().__init__()
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)
                and temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        self.model = model
        self.n_actions = _action_count(action_space)
        self.temperature = float(temperature)
        self.grad_in_eval = False
        self._keep_last = _accepts(model.forward, "logits_to_keep")

    def next_token_logits(self, obs: Any) -> torch.Tensor:
        """Untempered logits float32 ``(B, n)`` at each observation's position ``length - 1``."""
        input_ids, attention_mask, position_ids = left_align(obs, _device_of(self.model))
        kwargs: dict[str, Any] = {"logits_to_keep": 1} if self._keep_last else {}
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
            **kwargs,
        )
        logits = out.logits[:, -1, :].float()
        vocab = logits.shape[-1]
        if vocab >= self.n_actions:
            return logits[:, : self.n_actions]
        missing = logits.new_full((logits.shape[0], self.n_actions - vocab), float("-inf"))
        return torch.cat([logits, missing], dim=-1)

    def forward(
        self, obs: Any, state: Any = None, info: Mapping[str, Any] | None = None
    ) -> tuple[torch.Tensor, Any]:
        """``obs`` (Batch/dict of ``tokens`` ``(B, max_len)``, ``length`` ``(B,)``) ->
        (tempered logits float32 ``(B, n)``, ``state``)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and (self.training
                                                                  or self.grad_in_eval)):
            logits = self.next_token_logits(obs)
        return logits / self.temperature, state


def _backbone(model: nn.Module) -> nn.Module:
    """The transformer body of a causal LM (``model.model`` for Llama/Qwen/SmolLM2)."""
    base = getattr(model, "base_model", None)
    if isinstance(base, nn.Module) and base is not model:
        return base
    raise ValueError(
        f"cannot find the backbone of {type(model).__name__}: expected a transformers causal "
        "LM whose .base_model is the transformer body"
    )


class CausalLMCritic(nn.Module):
    """State-value function ``V(obs)`` for A2C: a linear head on the LM's last hidden state.

    Args:
        model: the policy's causal LM.
        share_backbone: False (default): the critic owns a deep copy of the LM's backbone
            (``model.base_model``, without the LM head), so value-loss gradients never
            touch the policy; costs one more copy of the weights. True: it reads the
            policy's own backbone, so the value loss also trains the policy's body (and a
            critic forward is still a separate full pass: nothing is cached between the
            actor and the critic).

    ``forward(obs)`` returns float32 ``(B,)``: ``head(h)`` with ``h`` the final hidden state
    (after the model's last norm) at position ``length - 1``. The head starts at zero, so
    ``V = 0`` before training.
    """

    def __init__(self, model: nn.Module, *, share_backbone: bool = False) -> None:
        super().__init__()
        body = _backbone(model)
        self.share_backbone = bool(share_backbone)
        self.backbone = body if share_backbone else copy.deepcopy(body)
        hidden = getattr(getattr(model, "config", None), "hidden_size", None)
        if not isinstance(hidden, int):
            raise ValueError(f"{type(model).__name__}.config has no integer hidden_size")
        self.head = nn.Linear(hidden, 1, device=_device_of(body))
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(
        self, obs: Any, state: Any = None, info: Mapping[str, Any] | None = None
    ) -> torch.Tensor:
        """``obs`` (Batch/dict of ``tokens``, ``length``) -> values float32 ``(B,)``."""
        input_ids, attention_mask, position_ids = left_align(obs, _device_of(self.head))
        out = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
        )
        hidden = out.last_hidden_state[:, -1, :].float()
        return self.head(hidden).squeeze(-1)


# -- envs --------------------------------------------------------------------------------------


def _is_numeric(value: Any) -> bool:
    if isinstance(value, (bool, int, float, np.bool_, np.number)):
        return True
    return isinstance(value, np.ndarray) and value.dtype.kind in "biuf"


class NumericInfoWrapper(gym.Wrapper):
    """Drop info entries that are not numbers (or numeric arrays); keep the full final info.

    tianshou's replay buffer stores every info key as an array over all transitions; a
    string entry such as the env's ``prompt`` / ``completion`` / ``data_source`` leaves
    ``None`` in every other transition, ``buffer.hasnull()`` becomes True and the
    ``OnPolicyTrainer`` aborts with ``MalformedBufferError``. This wrapper keeps numeric
    entries only and stores the unfiltered final info of the last finished episode in
    :attr:`last_final_info`; read them with :func:`last_final_infos` (tianshou's
    ``get_env_attr`` reads the *unwrapped* env, so it cannot see wrapper attributes).
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.last_final_info: dict[str, Any] = {}

    @staticmethod
    def numeric(info: Mapping[str, Any]) -> dict[str, Any]:
        """The entries of ``info`` whose values are numbers or numeric arrays."""
        return {k: v for k, v in info.items() if _is_numeric(v)}

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        return obs, self.numeric(info)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated or truncated:
            self.last_final_info = dict(info)
        return obs, reward, terminated, truncated, self.numeric(info)


def _wrapped(fn: EnvFn) -> EnvFn:
    def make() -> gym.Env:
        env = fn()
        if not isinstance(env, gym.Env):
            raise TypeError(f"env_fns must return gymnasium envs, got {type(env).__name__}")
        return NumericInfoWrapper(env)

    return make


def make_tianshou_envs(env_fns: Sequence[EnvFn], *, seed: int | None = None) -> DummyVectorEnv:
    """A tianshou ``DummyVectorEnv`` of the envs ``env_fns`` build, each wrapped in
    :class:`NumericInfoWrapper`, seeded ``seed, seed + 1, ...`` (prompt choice) if given.

    Raises:
        ValueError: no env, or envs whose spaces are not ``Discrete`` actions and
            ``Dict(tokens, length)`` observations, or differ between envs.
    """
    fns = list(env_fns)
    if not fns or not all(callable(f) for f in fns):
        raise ValueError("env_fns must be a non-empty sequence of callables returning envs")
    envs = DummyVectorEnv([_wrapped(f) for f in fns])
    actions = envs.get_env_attr("action_space")
    observations = envs.get_env_attr("observation_space")
    first = observations[0]
    if not isinstance(actions[0], gym.spaces.Discrete) or not (
        isinstance(first, gym.spaces.Dict) and {"tokens", "length"} <= set(first.spaces)
    ):
        envs.close()
        raise ValueError(
            "expected Discrete actions and Dict(tokens, length) observations (the RLAIF "
            f"envs), got {actions[0]} and {first}"
        )
    if any(a != actions[0] for a in actions) or any(o != first for o in observations):
        envs.close()
        raise ValueError("all envs must have the same action and observation spaces")
    if seed is not None:
        envs.seed(seed)
    return envs


def last_final_infos(envs: DummyVectorEnv) -> list[dict[str, Any]]:
    """Per sub-env of ``envs`` (built by :func:`make_tianshou_envs`), the full final info
    (``prompt``, ``completion``, reward details ...) of its last finished episode, ``{}``
    if none finished yet."""
    infos = []
    for worker in envs.workers:
        env = getattr(worker, "env", None)
        if not isinstance(env, NumericInfoWrapper):
            raise TypeError("envs must be a DummyVectorEnv built by make_tianshou_envs")
        infos.append(dict(env.last_final_info))
    return infos


def _episode_collector(policy: DiscreteActorPolicy, envs: DummyVectorEnv,
                       n_episodes: int) -> Collector:
    """A collector whose buffer holds ``n_episodes`` whole episodes (tianshou's default
    buffer preallocates 10,000 transitions per sub-env)."""
    steps = _max_episode_steps(envs)
    per_env = (DEFAULT_BUFFER_PER_ENV if steps is None
               else (max(n_episodes - envs.env_num, 0) + 1) * steps)
    buffer = VectorReplayBuffer(per_env * envs.env_num, envs.env_num)
    return Collector[CollectStats](policy, envs, buffer)


def _max_episode_steps(envs: DummyVectorEnv) -> int | None:
    """Largest ``max_new_tokens`` of the sub-envs when they are RLAIF envs, else None."""
    try:
        cores = [getattr(e, "core", None) for e in envs.get_env_attr("unwrapped")]
    except Exception:  # noqa: BLE001 - not an RLAIF env: no bound is known
        return None
    if any(c is None for c in cores):
        return None
    return max(int(c.max_new_tokens) for c in cores)


# -- setups ------------------------------------------------------------------------------------


@dataclass
class TianshouSetup:
    """Everything :func:`train_tianshou` needs; built by ``make_tianshou_*``.

    Attributes:
        algorithm: the tianshou ``Reinforce`` or ``A2C`` instance (owns the optimizer).
        policy: the ``DiscreteActorPolicy`` (``algorithm.policy``).
        actor: the :class:`CausalLMActor` inside the policy.
        critic: the :class:`CausalLMCritic` (A2C) or None (Reinforce).
        train_envs: the ``DummyVectorEnv`` of training envs.
        train_collector: a ``Collector`` over ``train_envs`` with a ``VectorReplayBuffer``.
    """

    algorithm: Reinforce | A2C
    policy: DiscreteActorPolicy
    actor: CausalLMActor
    critic: CausalLMCritic | None
    train_envs: DummyVectorEnv
    train_collector: Collector

    def close(self) -> None:
        """Close the training envs."""
        self.train_collector.close()


def _check_positive(name: str, value: object) -> None:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _policy_and_envs(
    model: nn.Module,
    env_fns: Sequence[EnvFn],
    temperature: float,
    deterministic_eval: bool,
    seed: int | None,
) -> tuple[DiscreteActorPolicy, CausalLMActor, DummyVectorEnv]:
    envs = make_tianshou_envs(env_fns, seed=seed)
    action_space = envs.get_env_attr("action_space")[0]
    observation_space = envs.get_env_attr("observation_space")[0]
    actor = CausalLMActor(model, action_space, temperature=temperature)
    policy = DiscreteActorPolicy(
        actor=actor,
        deterministic_eval=deterministic_eval,
        action_space=action_space,
        observation_space=observation_space,
    )
    return policy, actor, envs


def _collector(algorithm: Reinforce | A2C, envs: DummyVectorEnv,
               buffer_per_env: int) -> Collector:
    if not isinstance(buffer_per_env, int) or buffer_per_env < 1:
        raise ValueError(f"buffer_per_env must be a positive int, got {buffer_per_env!r}")
    buffer = VectorReplayBuffer(buffer_per_env * envs.env_num, envs.env_num)
    return Collector[CollectStats](algorithm, envs, buffer)


def make_tianshou_reinforce(
    model: nn.Module,
    env_fns: Sequence[EnvFn],
    *,
    lr: float = 1e-5,
    temperature: float = 1.0,
    gamma: float = 1.0,
    return_standardization: bool = False,
    deterministic_eval: bool = False,
    buffer_per_env: int = DEFAULT_BUFFER_PER_ENV,
    seed: int | None = None,
) -> TianshouSetup:
    """tianshou ``Reinforce`` on ``model`` over ``DummyVectorEnv(env_fns)``.

    Args:
        model: a transformers causal LM; trained in place (Adam, ``lr``).
        env_fns: callables returning RLAIF envs (``gym.make("RLAIF-TLDR-v0", ...)``), one
            per parallel sub-env.
        lr: Adam learning rate.
        temperature: sampling temperature of the policy (see :class:`CausalLMActor`).
        gamma: discount; 1 (default) makes every step's return the episode's final reward.
        return_standardization: tianshou's running mean/std standardization of returns.
            Off by default: with sparse 0/positive rewards the first batches can have zero
            variance, and tianshou divides by ``sqrt(var + 1e-8)`` without clipping.
        deterministic_eval: the policy takes the argmax token outside training steps.
        buffer_per_env: transitions each sub-env's buffer part holds; must fit what one
            collection gathers from that env (checked by :func:`train_tianshou`).
        seed: seeds the sub-envs' prompt choice (``seed + i`` for env ``i``). Seed torch
            yourself (``torch.manual_seed``) for reproducible sampling.

    Returns:
        a :class:`TianshouSetup` ready for :func:`train_tianshou`.
    """
    _check_positive("lr", lr)
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
    policy, actor, envs = _policy_and_envs(model, env_fns, temperature, deterministic_eval, seed)
    algorithm = Reinforce(
        policy=policy,
        optim=AdamOptimizerFactory(lr=lr),
        gamma=gamma,
        return_standardization=return_standardization,
    )
    collector = _collector(algorithm, envs, buffer_per_env)
    return TianshouSetup(algorithm, policy, actor, None, envs, collector)


def make_tianshou_a2c(
    model: nn.Module,
    env_fns: Sequence[EnvFn],
    *,
    lr: float = 1e-5,
    temperature: float = 1.0,
    gamma: float = 1.0,
    gae_lambda: float = 1.0,
    vf_coef: float = 0.5,
    ent_coef: float = 0.0,
    max_grad_norm: float | None = 1.0,
    share_backbone: bool = False,
    critic_batch_size: int = 64,
    deterministic_eval: bool = False,
    buffer_per_env: int = DEFAULT_BUFFER_PER_ENV,
    seed: int | None = None,
) -> TianshouSetup:
    """tianshou ``A2C`` on ``model`` with a :class:`CausalLMCritic`.

    Args:
        model, env_fns, lr, temperature, deterministic_eval, buffer_per_env, seed: as in
            :func:`make_tianshou_reinforce` (one Adam over actor and critic parameters).
        gamma: discount (default 1: sparse terminal reward, as in RLAIF).
        gae_lambda: GAE lambda; 1 (default) gives Monte-Carlo returns minus ``V(s)``, i.e.
            REINFORCE with a learned baseline; smaller values bootstrap from the critic.
        vf_coef, ent_coef: weights of the value loss and of the entropy bonus.
        max_grad_norm: global gradient-norm clip (None: no clipping).
        share_backbone: the critic reads the policy's backbone instead of a copy (see
            :class:`CausalLMCritic`).
        critic_batch_size: observations per critic forward when tianshou computes values
            for the advantages (memory bound, not a hyper-parameter).
    """
    _check_positive("lr", lr)
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
    policy, actor, envs = _policy_and_envs(model, env_fns, temperature, deterministic_eval, seed)
    critic = CausalLMCritic(model, share_backbone=share_backbone)
    algorithm = A2C(
        policy=policy,
        critic=critic,
        optim=AdamOptimizerFactory(lr=lr),
        vf_coef=vf_coef,
        ent_coef=ent_coef,
        max_grad_norm=max_grad_norm,
        gae_lambda=gae_lambda,
        max_batchsize=critic_batch_size,
        gamma=gamma,
    )
    collector = _collector(algorithm, envs, buffer_per_env)
    return TianshouSetup(algorithm, policy, actor, critic, envs, collector)


# -- training and evaluation -------------------------------------------------------------------


def _check_buffer_fits(setup: TianshouSetup, episodes_per_collect: int) -> None:
    """Raise if one collection could overwrite its own data in a sub-env's ring buffer."""
    steps = _max_episode_steps(setup.train_envs)
    if steps is None:
        return
    buffer = setup.train_collector.buffer
    per_env = buffer.maxsize // max(buffer.buffer_num, 1)
    worst = (max(episodes_per_collect - setup.train_envs.env_num, 0) + 1) * steps
    if worst > per_env:
        raise ValueError(
            f"one collection of {episodes_per_collect} episodes may put up to {worst} "
            f"transitions into one sub-env's buffer, which holds {per_env}: raise "
            "buffer_per_env or lower episodes_per_collect"
        )


def train_tianshou(
    setup: TianshouSetup,
    *,
    epochs: int,
    episodes_per_collect: int,
    epoch_num_steps: int = 1,
    batch_size: int | None = None,
    update_repeats: int = 1,
    test_env_fns: Sequence[EnvFn] | None = None,
    test_episodes: int = 16,
    test_seed: int | None = None,
    logger: Any = None,
    show_progress: bool = False,
) -> InfoStats:
    """Train with tianshou's ``OnPolicyTrainer`` (``algorithm.run_training(params)``).

    Each training step collects ``episodes_per_collect`` whole episodes (so every return is
    a real final reward, never a cut-off episode), runs one on-policy update on them and
    clears the buffer.

    Args:
        setup: from :func:`make_tianshou_reinforce` / :func:`make_tianshou_a2c`.
        epochs: tianshou epochs (each ends with a test step when ``test_env_fns`` is given).
        episodes_per_collect: episodes collected per training step.
        epoch_num_steps: env steps (tokens) per epoch; the default 1 makes an epoch exactly
            one collect + one update.
        batch_size: transitions per gradient step; None (default) uses the whole collection
            in one step (an exact policy gradient of the batch). Each minibatch is one
            optimizer step: tianshou does not accumulate gradients.
        update_repeats: passes over the collected data per update.
        test_env_fns: envs for tianshou's test steps (None: no test steps).
        test_episodes: episodes per test step.
        test_seed: seeds the test envs.
        logger: a tianshou logger (None: nothing logged).
        show_progress: tianshou's tqdm bars.

    Returns:
        tianshou's ``InfoStats`` (``best_reward`` from test steps, timings, step counts).
    """
    for name, value in (("epochs", epochs), ("episodes_per_collect", episodes_per_collect),
                        ("epoch_num_steps", epoch_num_steps),
                        ("update_repeats", update_repeats)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    _check_buffer_fits(setup, episodes_per_collect)
    test_collector = None
    if test_env_fns is not None:
        test_envs = make_tianshou_envs(test_env_fns, seed=test_seed)
        test_collector = _episode_collector(setup.policy, test_envs, test_episodes)
    params = OnPolicyTrainerParams(
        training_collector=setup.train_collector,
        test_collector=test_collector,
        max_epochs=epochs,
        epoch_num_steps=epoch_num_steps,
        collection_step_num_env_steps=None,
        collection_step_num_episodes=episodes_per_collect,
        test_step_num_episodes=test_episodes,
        batch_size=batch_size,
        update_step_num_repetitions=update_repeats,
        logger=logger,
        verbose=False,
        show_progress=show_progress,
    )
    try:
        return setup.algorithm.run_training(params)
    finally:
        if test_collector is not None:
            test_collector.close()


def evaluate_tianshou(
    policy: DiscreteActorPolicy,
    env_fns: Sequence[EnvFn],
    n_episodes: int,
    *,
    deterministic: bool = False,
    seed: int | None = None,
) -> np.ndarray:
    """Run ``n_episodes`` episodes of ``policy`` on fresh envs; no training.

    Args:
        policy: e.g. ``setup.policy``.
        env_fns: env builders (as for training; new envs are made and closed here).
        n_episodes: episodes to run (>= 1).
        deterministic: take the argmax token instead of sampling.
        seed: seeds the envs' prompt choice. Sampling uses torch's global RNG.

    Returns:
        float64 ``(n_episodes,)``: each episode's return (its final reward when gamma = 1).
    """
    if not isinstance(n_episodes, int) or n_episodes < 1:
        raise ValueError(f"n_episodes must be a positive int, got {n_episodes!r}")
    collector = _episode_collector(policy, make_tianshou_envs(env_fns, seed=seed), n_episodes)
    previous = policy.deterministic_eval
    policy.deterministic_eval = deterministic
    try:
        stats = collector.collect(n_episode=n_episodes, reset_before_collect=True)
    finally:
        policy.deterministic_eval = previous
        collector.close()
    return np.asarray(stats.returns, dtype=np.float64)
