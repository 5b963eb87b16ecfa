"""Turn whatever a user passes as ``reward=`` into a :class:`~rewards.base.RewardFunction`.

Accepted specs:
    * ``None`` or ``"none"``: always 0.
    * a registered name (see :data:`REWARD_FACTORIES`), built with ``**options``.
    * a :class:`~rewards.base.RewardFunction` instance: used as is.
    * any callable ``(prompts, completions) -> Sequence[float]``.
    * ``"ai-rm"`` / ``"human-rm"`` with ``path=DIR``, or a bare reward-model directory
      (``reward="runs/rm-ai"``): a trained reward model (:mod:`rewards.reward_model`).

Every spec also takes ``normalize=``: ``True`` or a dict such as
``{"whiten": True, "clip": [-5, 5]}`` wraps the reward in
:class:`rewards.wrappers.NormalizedReward` (running whitening, clipping; see there).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from rewards.base import CallableReward, RewardFunction, ZeroReward


def _direct(**options: Any) -> RewardFunction:
    from rewards.direct import DirectReward  # lazy: loads a judge model

    return DirectReward(**options)


def _reward_model(name: str, source: str) -> Callable[..., RewardFunction]:
    """Factory of a trained-RM reward: ``path=DIR`` (required) and RM options."""

    def factory(**options: Any) -> RewardFunction:
        from rewards.reward_model import RewardModelReward  # lazy: loads torch and the RM

        return RewardModelReward(name=name, expected_source=source, **options)

    return factory


#: name -> factory(**options). Factories import their heavy dependencies lazily.
REWARD_FACTORIES: dict[str, Callable[..., RewardFunction]] = {
    "none": lambda **options: ZeroReward(),
    "direct": _direct,
    "ai-rm": _reward_model("ai-rm", "ai"),
    "human-rm": _reward_model("human-rm", "human"),
}
#: Registered names that need ``path=`` to a trained reward model.
REWARD_MODEL_NAMES: tuple[str, ...] = ("ai-rm", "human-rm")


def make_reward(spec: object = None, **options: Any) -> RewardFunction:
    """Build a reward function from a name, an instance or a callable.

    ``normalize`` (any spec): see the module docstring.

    Raises:
        ValueError: an unknown name (the message lists the valid ones).
        TypeError: options given with an instance or callable, or a spec of another type.
    """
    normalize = options.pop("normalize", None)
    if normalize is not None and normalize is not False:
        from rewards.wrappers import normalize_reward

        return normalize_reward(make_reward(spec, **options), normalize)
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if spec is None:
        spec = "none"
    if isinstance(spec, RewardFunction):
        if options:
            raise TypeError(f"reward options {sorted(options)} given with a reward instance")
        return spec
    if isinstance(spec, str):
        if spec not in REWARD_FACTORIES and os.path.isdir(os.path.expanduser(spec)):
            from rewards.reward_model import RewardModelReward  # a trained RM directory

            return RewardModelReward(spec, name=f"rm:{spec}", **options)
        if spec not in REWARD_FACTORIES:
            valid = ", ".join(sorted(set(REWARD_FACTORIES) - set(REWARD_MODEL_NAMES)))
            raise ValueError(
                f"unknown reward {spec!r}; valid names: {valid}; trained reward models: "
                f"{', '.join(REWARD_MODEL_NAMES)} (with path=DIR) or the directory itself; "
                "or pass a callable (prompts, completions) -> scores"
            )
        return REWARD_FACTORIES[spec](**options)
    if callable(spec):
        if options:
            raise TypeError(f"reward options {sorted(options)} given with a callable reward")
        return CallableReward(spec)
    raise TypeError(
        f"reward must be a name, a RewardFunction or a callable, got {type(spec).__name__}"
    )
