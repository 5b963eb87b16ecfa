"""Reward wrappers that compose with ANY reward: normalization (whitening and clipping).

RLHF libraries usually normalize the reward before the policy update (TRL's
``whiten_rewards``/``reward_clip``, Stable-Baselines3's ``VecNormalize``)::

    reward = NormalizedReward(DirectReward(), whiten=True, clip=(-5, 5))   # any reward instance
    env = gym.make("RLAIF-TLDR-v0", reward="ai-rm", path="runs/rm-ai",
                   normalize={"whiten": True, "clip": [-5, 5]})       # the same through the env

The math lives in :mod:`rewards.normalization` (``RunningMeanStd``, ``whiten``,
``clip_rewards``); this module only wires it around a reward function. Every output keeps
the inner reward's details and adds ``raw_score``, the score before normalization.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rewards import normalization as norm
from rlaif_gym.reward_protocol import CallableReward, RewardFunction, RewardOutput, call_reward

__all__ = ["NORMALIZE_KEYS", "NormalizedReward", "normalize_reward"]

#: Keys accepted in a ``normalize={...}`` option (the arguments of :class:`NormalizedReward`).
NORMALIZE_KEYS = ("whiten", "clip", "running", "eps", "shift_mean")


def _check_clip(clip: object) -> tuple[float, float] | None:
    if clip is None:
        return None
    try:
        low, high = (float(v) for v in clip)  # type: ignore[union-attr]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"clip must be None or a pair (low, high), got {clip!r}") from exc
    if np.isnan(low) or np.isnan(high) or not low < high:
        raise ValueError(f"clip needs low < high, got {clip!r}")
    return low, high


class NormalizedReward(RewardFunction):
    """Whiten and/or clip the scores of ``inner``.

    Per call with raw scores ``x`` (shape ``(n,)``):

    1. ``whiten=True, running=True``: fold ``x`` into a :class:`~rewards.normalization.
       RunningMeanStd` of everything seen so far, then ``(x - mean) / sqrt(var + eps)`` with
       those statistics (the first batch is whitened by its own statistics; a first batch
       of one score gives 0). ``running=False``: whiten with the statistics of this batch
       alone (a batch of one score gives 0).
       ``shift_mean=False`` adds the mean back (only the spread changes, as in TRL).
    2. ``clip=(low, high)``: clip into ``[low, high]``.

    Args:
        inner: a :class:`~rlaif_gym.reward_protocol.RewardFunction` or a callable
            ``(prompts, completions) -> scores`` (build a named reward with
            :func:`rlaif_gym.reward_registry.make_reward` first, or pass ``normalize=`` to it).
        whiten, clip, running, eps, shift_mean: see above.

    Details: the inner reward's details plus ``raw_score`` ``(n,)`` (an inner ``raw_score``,
    from a nested wrapper, is kept as ``inner_raw_score``).

    The running statistics are the wrapper's state: :meth:`state_dict` /
    :meth:`load_state_dict` save and restore them with an agent checkpoint.
    """

    def __init__(self, inner: object, whiten: bool = True,
                 clip: Sequence[float] | None = None, running: bool = True,
                 eps: float = 1e-8, shift_mean: bool = True) -> None:
        if isinstance(inner, RewardFunction):
            self.inner = inner
        elif callable(inner) and not isinstance(inner, str):
            self.inner = CallableReward(inner)
        else:
            raise TypeError(f"NormalizedReward wraps a RewardFunction or a callable, got "
                            f"{inner!r}; build a named reward with make_reward(name, "
                            "normalize=...) instead")
        self.whiten = bool(whiten)
        self.clip = _check_clip(clip)
        self.running = bool(running)
        if not (np.isfinite(eps) and eps > 0):
            raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
        self.eps = float(eps)
        self.shift_mean = bool(shift_mean)
        self.rms = norm.RunningMeanStd()
        self.name = f"normalized({self.inner.name})"

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        """Apply whitening (updating the running statistics) and clipping to ``raw``."""
        x = np.asarray(raw, dtype=np.float64)
        if self.whiten and x.size:
            if self.running:
                self.rms.update(x)
                x = norm.whiten(x, self.rms, eps=self.eps, shift_mean=self.shift_mean)
            else:
                x = norm.whiten(x, None, eps=self.eps, shift_mean=self.shift_mean)
        if self.clip is not None:
            x = norm.clip_rewards(x, *self.clip)
        return x

    @property
    def needs_references(self) -> bool:  # type: ignore[override]
        """The inner reward's: references are passed through to it."""
        return bool(getattr(self.inner, "needs_references", False))

    def score(self, prompts: Sequence[str], completions: Sequence[str],
              references: Sequence[str | None] | None = None) -> RewardOutput:
        out = call_reward(self.inner, prompts, completions, references)  # validated
        details = dict(out.details)
        if "raw_score" in details:
            details["inner_raw_score"] = details.pop("raw_score")
        details["raw_score"] = out.scores.copy()
        return RewardOutput(scores=self.normalize(out.scores), details=details)

    def state_dict(self) -> dict[str, Any]:
        """The running statistics (JSON-serialisable)."""
        return {"rms": self.rms.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.rms.load_state_dict(dict(state["rms"]))

    def __repr__(self) -> str:
        return (f"NormalizedReward({self.inner!r}, whiten={self.whiten}, clip={self.clip}, "
                f"running={self.running})")


def normalize_reward(reward: RewardFunction, normalize: object) -> RewardFunction:
    """Apply the ``normalize=`` option of :func:`rlaif_gym.reward_registry.make_reward`.

    ``None``/``False``: ``reward`` unchanged. ``True``: ``NormalizedReward(reward)`` (running
    whitening, no clipping). A mapping: ``NormalizedReward(reward, **mapping)`` with keys
    from :data:`NORMALIZE_KEYS` (``clip`` may be a list, as in JSON).

    Raises:
        ValueError: unknown keys. TypeError: another type.
    """
    if normalize is None or normalize is False:
        return reward
    if normalize is True:
        return NormalizedReward(reward)
    if isinstance(normalize, Mapping):
        unknown = sorted(set(normalize) - set(NORMALIZE_KEYS))
        if unknown:
            raise ValueError(f"unknown normalize options {unknown}; valid: {list(NORMALIZE_KEYS)}")
        return NormalizedReward(reward, **dict(normalize))
    raise TypeError(f"normalize must be None, a bool or a dict of {list(NORMALIZE_KEYS)}, "
                    f"got {type(normalize).__name__}")
