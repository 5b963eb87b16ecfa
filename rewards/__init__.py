"""Reward sources built on the core reward protocol: AI judges, preference labels, the
d-RLAIF score, reward models, wrappers and evaluation.

The protocol itself (:class:`RewardFunction`, :class:`RewardOutput`) and the name registry
(:func:`make_reward`) live in the core, :mod:`rlaif_gym.reward_protocol` and
:mod:`rlaif_gym.reward_registry`; they are re-exported here.
"""

from rlaif_gym.reward_protocol import (
    CallableReward,
    RewardError,
    RewardFunction,
    RewardOutput,
    ZeroReward,
    check_scores,
)
from rlaif_gym.reward_registry import make_reward, register_reward

__all__ = ["CallableReward", "RewardError", "RewardFunction", "RewardOutput", "ZeroReward",
           "check_scores", "make_reward", "register_reward"]
