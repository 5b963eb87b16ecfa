"""Turn whatever a user passes as ``reward=`` into a :class:`~rewards.base.RewardFunction`.

Accepted specs:
    * ``None`` or ``"none"``: always 0.
    * a registered name (see :data:`REWARD_FACTORIES`), built with ``**options``.
    * a :class:`~rewards.base.RewardFunction` instance: used as is.
    * any callable ``(prompts, completions) -> Sequence[float]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rewards.base import CallableReward, RewardFunction, ZeroReward


def _direct(**options: Any) -> RewardFunction:
    from rewards.direct import DirectReward  # lazy: loads a judge model

    return DirectReward(**options)


#: name -> factory(**options). Factories import their heavy dependencies lazily.
REWARD_FACTORIES: dict[str, Callable[..., RewardFunction]] = {
    "none": lambda **options: ZeroReward(),
    "direct": _direct,
}


def make_reward(spec: object = None, **options: Any) -> RewardFunction:
    """Build a reward function from a name, an instance or a callable.

    Raises:
        ValueError: an unknown name (the message lists the valid ones).
        TypeError: options given with an instance or callable, or a spec of another type.
    """
    if spec is None:
        spec = "none"
    if isinstance(spec, RewardFunction):
        if options:
            raise TypeError(f"reward options {sorted(options)} given with a reward instance")
        return spec
    if isinstance(spec, str):
        if spec not in REWARD_FACTORIES:
            valid = ", ".join(sorted(REWARD_FACTORIES))
            raise ValueError(
                f"unknown reward {spec!r}; valid names: {valid}, or pass a callable "
                "(prompts, completions) -> scores"
            )
        return REWARD_FACTORIES[spec](**options)
    if callable(spec):
        if options:
            raise TypeError(f"reward options {sorted(options)} given with a callable reward")
        return CallableReward(spec)
    raise TypeError(
        f"reward must be a name, a RewardFunction or a callable, got {type(spec).__name__}"
    )
