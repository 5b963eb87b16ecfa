"""Direct RLAIF (d-RLAIF, Lee et al. 2023, section 2.2.2 and Appendix D): the judge rates
each response from 1 to 10 and the probability-weighted score is the reward.

The judge's assistant turn is prefilled with the template's score ending (``"SCORE: "``),
so the next token is the first digit. Scores 1..9 are one token each; "10" is two tokens
("1", "0") in tokenizers that split digits (Qwen, Llama 2), so one forward pass over
``prompt + "1"`` gives both log P("1".."9" | prompt) and log P("0" | prompt + "1"), and
:func:`rewards.normalization.score_distribution` splits the mass of "1" into scores 1 and
10. If "10" is a single token of the judge's vocabulary, its probability is added to
score 10 (and to the "1" mass it is split from), so both spellings of "10" count exactly:
``P(10) = P("10") + P("1") P("0"|"1")``, ``P(1) = P("1") (1 - P("0"|"1"))``.

All score math (distribution, expected score, reward in [-1, 1]) is in
:mod:`rewards.normalization`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rewards.judges import Judge, LazyJudge, check_judge
from rewards.judges.stats import counter_details
from rewards.normalization import expected_score, score_distribution, score_to_reward
from rewards.prompts import PromptTemplate, load_template, render_score_messages
from rlaif_gym.defaults import DEFAULT_JUDGE
from rlaif_gym.reward_protocol import RewardFunction, RewardOutput

__all__ = ["DEFAULT_JUDGE", "DirectReward", "DirectScores", "direct_scores"]

#: Judge used by ``make_reward("direct")`` when none is given.
#: First-token candidates "1".."9".
DIGITS: tuple[str, ...] = tuple(str(i) for i in range(1, 10))


@dataclass(frozen=True)
class DirectScores:
    """d-RLAIF scores of ``n`` responses.

    Attributes:
        rewards: float64 ``(n,)`` in [-1, 1], ``(expected - 5.5) / 4.5``.
        expected: float64 ``(n,)`` in [1, 10], ``sum_i i * P(i)``.
        distribution: float64 ``(n, 10)``, P(score = 1..10), rows sum to 1.
    """

    rewards: np.ndarray
    expected: np.ndarray
    distribution: np.ndarray


def _score_inputs(judge: Judge, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(first_digit_logprobs (n, 9), zero_after_one_logprob (n,))`` for
    :func:`score_distribution`, folding a single-token "10" into them exactly."""
    ten_is_token = judge.is_single_token("10")
    candidates = DIGITS + ("10",) if ten_is_token else DIGITS
    first, second = judge.next_token_logprobs_two_step(prompts, candidates, "1", ("0",))
    zero_after_one = second[:, 0]
    if not ten_is_token:
        return first, zero_after_one
    lp_one, lp_ten_token = first[:, 0], first[:, 9]
    # Mass that starts a "1..." answer: "1" (then "0" or not) plus the token "10".
    lp_one_total = np.logaddexp(lp_one, lp_ten_token)
    lp_score_ten = np.logaddexp(lp_ten_token, lp_one + zero_after_one)
    with np.errstate(invalid="ignore"):
        share_of_ten = np.where(np.isneginf(lp_one_total), 0.0, lp_score_ten - lp_one_total)
    folded = first[:, :9].copy()
    folded[:, 0] = lp_one_total
    return folded, np.minimum(share_of_ten, 0.0)


def direct_scores(
    judge: Judge,
    task: str | Path | PromptTemplate,
    contexts: Sequence[str],
    responses: Sequence[str],
    batch_size: int = 8,
) -> DirectScores:
    """Score each ``(context, response)`` with the judge's 1-10 rating distribution.

    Args:
        judge: any :class:`~rewards.judges.base.Judge`.
        task: template name (``"tldr"``, ``"helpful"``, ``"harmless"``), path or object; its
            ``score`` section is used.
        contexts: task inputs (``PromptRecord.text``), length n.
        responses: responses to rate, length n (an empty response is rated like any other).
        batch_size: prompts per judge call.

    Raises:
        ValueError: different lengths, bad ``batch_size``. TemplateError: no score section.
    """
    if len(contexts) != len(responses):
        raise ValueError(f"{len(contexts)} contexts but {len(responses)} responses")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    template = load_template(task)
    template.require_score()
    n = len(contexts)
    if n == 0:
        return DirectScores(np.zeros(0), np.zeros(0), np.zeros((0, 10)))
    prompts = [
        judge.render_chat(render_score_messages(template, c, r))
        for c, r in zip(contexts, responses, strict=True)
    ]
    firsts, seconds = [], []
    for start in range(0, n, batch_size):
        first, second = _score_inputs(judge, prompts[start:start + batch_size])
        firsts.append(first)
        seconds.append(second)
    distribution = score_distribution(np.concatenate(firsts), np.concatenate(seconds))
    expected = expected_score(distribution)
    return DirectScores(score_to_reward(expected), expected, distribution)


class DirectReward(LazyJudge, RewardFunction):
    """The ``"direct"`` reward: d-RLAIF score in [-1, 1] from an LLM judge.

    Args:
        judge: a :class:`~rewards.judges.base.Judge` or a model spec for
            :func:`rewards.judges.load_judge` (loaded lazily on the first call).
        task: template with a ``score`` section (``"tldr"``, ``"helpful"``, ``"harmless"``,
            a path or a :class:`~rewards.prompts.PromptTemplate`).

    The judge spec and options are checked when the reward is made
    (:func:`rewards.judges.check_judge`), so a typo fails before anything slow starts.
        batch_size: prompts per judge call (also the judge's batch size when loaded here).
        **judge_kwargs: passed to :func:`~rewards.judges.load_judge` (``backend``, ``dtype``,
            ``device``, ``num_threads``...).

    Details of :class:`~rlaif_gym.reward_protocol.RewardOutput`: ``direct_expected_score``
    ``(n,)`` in [1, 10], ``direct_distribution`` ``(n, 10)``, and what the call cost the
    judge: ``judge_calls``, ``judge_prompt_tokens``, ``judge_cache_hits``,
    ``judge_cache_misses``, ``judge_retries``, ``judge_failures``, ``judge_limit_wait_s``,
    ``judge_backoff_wait_s``, each ``(n,)`` holding an equal share of the batch's total (sum
    them over episodes; see :func:`rewards.judges.stats.counter_details`). A judge shared
    with other threads at the same time lends them its counts too.
    """

    name = "direct"

    def __init__(
        self,
        judge: str | Path | Judge = DEFAULT_JUDGE,
        task: str | Path | PromptTemplate = "tldr",
        batch_size: int = 8,
        **judge_kwargs: Any,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        check_judge(judge, **judge_kwargs)  # a typo fails now, not after the first episode
        self.template = load_template(task)
        self.template.require_score()  # fail now, not at the first episode
        self.batch_size = batch_size
        self._judge_spec = judge
        self._judge_kwargs = dict(judge_kwargs)
        self._judge: Judge | None = judge if isinstance(judge, Judge) else None

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> RewardOutput:
        judge = self.judge
        before = judge.stats.snapshot()
        scores = direct_scores(judge, self.template, prompts, completions, self.batch_size)
        spent = judge.stats.snapshot() - before
        return RewardOutput(
            scores=scores.rewards,
            details={
                "direct_expected_score": scores.expected,
                "direct_distribution": scores.distribution,
                **counter_details(spent, len(prompts)),
            },
        )

    def __repr__(self) -> str:
        judge = self._judge.name if self._judge is not None else self._judge_spec
        return f"DirectReward(judge={judge!r}, task={self.template.name!r})"
