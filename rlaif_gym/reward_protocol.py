"""The reward protocol: the interface every reward source implements (core layer).

A reward function scores a batch of finished episodes in one call::

    out = reward_fn(prompts, completions)   # len(prompts) == len(completions) == n
    out.scores        # np.ndarray, float64, shape (n,), all finite
    out.details       # dict[str, np.ndarray], each with leading dimension n

``prompts`` are the task inputs as plain text (a TL;DR post, an HH dialogue context), not
the chat-templated policy prompt; ``completions`` are the decoded policy outputs.

References (optional side channel). A reward that compares a completion with the dataset's
reference response (``PromptRecord.reference``) sets the class attribute
``needs_references = True`` and implements ``score(prompts, completions, references)``;
callers that know the references pass them by keyword::

    out = reward_fn(prompts, completions, references=refs)   # refs: n str-or-None

The envs pass them only to a reward whose ``needs_references`` is true, so rewards (and
``__call__`` overrides) written against the two-argument protocol keep working unchanged;
a reward that needs them gets ``[None] * n`` when the caller has none.

Anything else a user hands to ``gym.make(..., reward=...)`` is adapted to this
interface by :func:`rlaif_gym.reward_registry.make_reward`: a plain callable
``(prompts, completions) -> Sequence[float]`` is wrapped in :class:`CallableReward`.

This module and :mod:`rlaif_gym.reward_registry` belong to the core of ``rlaif_gym``: they
import nothing from ``rewards`` or ``agents``, which build on them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["CallableReward", "RewardError", "RewardFunction", "RewardOutput", "ZeroReward",
           "call_reward", "check_scores"]


class RewardError(ValueError):
    """A reward function returned something that is not one finite score per episode."""


@dataclass
class RewardOutput:
    """Scores for ``n`` episodes and optional per-episode details.

    Attributes:
        scores: float64 array of shape ``(n,)``, finite.
        details: name -> array with leading dimension ``n`` (for example the judge's
            score distribution, shape ``(n, 10)``).
    """

    scores: np.ndarray
    details: dict[str, np.ndarray] = field(default_factory=dict)


def check_scores(name: str, scores: object, n: int) -> np.ndarray:
    """Return ``scores`` as a finite float64 array of shape ``(n,)`` or raise RewardError
    naming the reward ``name``."""
    try:
        arr = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise RewardError(f"reward {name!r} returned non-numeric scores: {exc}") from exc
    if arr.ndim != 1 or arr.shape[0] != n:
        raise RewardError(
            f"reward {name!r} returned {arr.shape} scores for {n} episodes; "
            f"expected one score per episode, shape ({n},)"
        )
    if not np.all(np.isfinite(arr)):
        bad = np.flatnonzero(~np.isfinite(arr)).tolist()
        raise RewardError(f"reward {name!r} returned non-finite scores at positions {bad}: "
                          f"{arr[bad].tolist()}")
    return arr


class RewardFunction(ABC):
    """Base class for reward sources. Subclasses implement :meth:`score`.

    Calling the object validates the batch (equal lengths, strings) and the result
    (one finite score per episode) so a bad reward fails loudly, naming itself.
    """

    name: str = "reward"
    #: True: :meth:`score` takes a third argument ``references`` (``n`` reference responses,
    #: ``None`` where unknown) and callers that know them pass them (module doc).
    needs_references: bool = False

    @abstractmethod
    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> RewardOutput:
        """Score ``n`` (prompt, completion) pairs. Return ``RewardOutput`` with shape ``(n,)``.

        A reward with :attr:`needs_references` implements
        ``score(prompts, completions, references)`` instead."""

    def __call__(self, prompts: Sequence[str], completions: Sequence[str],
                 references: Sequence[str | None] | None = None) -> RewardOutput:
        """Validate the batch, call :meth:`score` (with ``references`` when
        :attr:`needs_references`; ignored otherwise) and validate its output."""
        if len(prompts) != len(completions):
            raise ValueError(
                f"reward {self.name!r}: {len(prompts)} prompts but {len(completions)} completions"
            )
        n = len(prompts)
        if references is not None and len(references) != n:
            raise ValueError(f"reward {self.name!r}: {len(references)} references for {n} "
                             "completions")
        if n == 0:
            return RewardOutput(scores=np.zeros(0, dtype=np.float64))
        if self.needs_references:
            refs = [None] * n if references is None else list(references)
            out = self.score(list(prompts), list(completions), refs)  # type: ignore[call-arg]
        else:
            out = self.score(list(prompts), list(completions))
        if not isinstance(out, RewardOutput):
            out = RewardOutput(scores=out)  # type: ignore[arg-type]
        out.scores = check_scores(self.name, out.scores, n)
        for key, value in out.details.items():
            value = np.asarray(value)
            if value.shape[:1] != (n,):
                raise RewardError(
                    f"reward {self.name!r}: detail {key!r} has shape {value.shape}, "
                    f"expected leading dimension {n}"
                )
            out.details[key] = value
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def call_reward(reward: Callable[..., RewardOutput], prompts: Sequence[str],
                completions: Sequence[str],
                references: Sequence[str | None] | None = None) -> RewardOutput:
    """``reward(prompts, completions)``, with ``references=`` added only when ``reward``
    declares :attr:`RewardFunction.needs_references` (so two-argument rewards keep working)."""
    if references is not None and getattr(reward, "needs_references", False):
        return reward(prompts, completions, references=references)
    return reward(prompts, completions)


class ZeroReward(RewardFunction):
    """``reward="none"``: every episode scores 0.0."""

    name = "none"

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> RewardOutput:
        return RewardOutput(scores=np.zeros(len(prompts), dtype=np.float64))


class CallableReward(RewardFunction):
    """Adapts a user callable ``(prompts, completions) -> Sequence[float]``."""

    def __init__(
        self, fn: Callable[[Sequence[str], Sequence[str]], Sequence[float]], name: str | None = None
    ) -> None:
        if not callable(fn):
            raise TypeError(f"reward must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> RewardOutput:
        return RewardOutput(scores=self.fn(prompts, completions))
