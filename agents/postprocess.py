"""Completion post-processing applied before the reward sees a completion.

Lee et al. (2023), Appendix E ("Post-RL response formatting"): summaries of the RL policies
often ended in superfluous periods or spaces (possibly reward hacking), so trailing symbols
were stripped programmatically before evaluation. Here the same cleanup is a hook that can
also be applied during training:

* :class:`PostprocessedReward` wraps any reward (``PostprocessedReward(inner, fn)`` is itself
  a :class:`~rlaif_gym.reward_protocol.RewardFunction`), so the env needs no change: the env
  still decodes
  and reports the raw completion (``info["completion"]``), the wrapped reward scores
  ``fn(completion)``. During training this removes the incentive to pad summaries with
  punctuation the judge might like; ``rlaif-gym sample`` prints completions through the
  same function.
* :data:`POSTPROCESSORS` names the built-in functions (``"none"``,
  ``"strip-trailing-punctuation"``) so a run config stays JSON.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence

from rlaif_gym.reward_protocol import RewardFunction, RewardOutput, call_reward

__all__ = [
    "POSTPROCESSORS",
    "TRAILING_CHARACTERS",
    "PostprocessedReward",
    "get_postprocessor",
    "strip_trailing_punctuation",
]

#: Characters removed from the end of a completion: ASCII punctuation and whitespace.
TRAILING_CHARACTERS = string.punctuation + string.whitespace


def strip_trailing_punctuation(text: str) -> str:
    """``text`` without trailing ASCII punctuation and whitespace (``"Hi there. ."`` ->
    ``"Hi there"``). Leading text and inner punctuation are kept."""
    return text.rstrip(TRAILING_CHARACTERS)


def _identity(text: str) -> str:
    return text


#: name -> completion post-processing function.
POSTPROCESSORS: dict[str, Callable[[str], str]] = {
    "none": _identity,
    "strip-trailing-punctuation": strip_trailing_punctuation,
}


def get_postprocessor(spec: str | Callable[[str], str] | None) -> Callable[[str], str]:
    """A registered name (:data:`POSTPROCESSORS`), a callable ``str -> str``, or None
    (identity)."""
    if spec is None:
        return _identity
    if callable(spec):
        return spec
    if isinstance(spec, str) and spec in POSTPROCESSORS:
        return POSTPROCESSORS[spec]
    valid = ", ".join(sorted(POSTPROCESSORS))
    raise ValueError(f"unknown postprocess {spec!r}; valid names: {valid}, or a callable")


class PostprocessedReward(RewardFunction):
    """Score ``fn(completion)`` with ``inner`` instead of the raw completion.

    Args:
        inner: the reward to wrap (a :class:`RewardFunction`).
        fn: ``str -> str``, applied to every completion; prompts pass unchanged.

    The inner reward's scores and details are returned as they are.
    """

    def __init__(self, inner: RewardFunction, fn: Callable[[str], str]) -> None:
        if not isinstance(inner, RewardFunction):
            raise TypeError(f"inner must be a RewardFunction, got {type(inner).__name__}")
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self.inner = inner
        self.fn = fn
        self.name = f"{inner.name}+{getattr(fn, '__name__', 'postprocess')}"

    @property
    def needs_references(self) -> bool:  # type: ignore[override]
        """The inner reward's: references are passed through to it."""
        return bool(getattr(self.inner, "needs_references", False))

    def score(self, prompts: Sequence[str], completions: Sequence[str],
              references: Sequence[str | None] | None = None) -> RewardOutput:
        cleaned = []
        for text in completions:
            out = self.fn(text)
            if not isinstance(out, str):
                raise TypeError(f"postprocess {self.fn!r} returned {type(out).__name__}, "
                                "expected str")
            cleaned.append(out)
        return call_reward(self.inner, prompts, cleaned, references)
