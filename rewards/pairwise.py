"""The ``"pairwise"`` reward: AI preferences in both orders among a prompt's samples (or
against the dataset's reference), turned into one score per completion in [-1, 1].

Groups
------
The completions of one reward call that share their prompt text (``prompts[i]``, the task
input) form a group: the vector env's ``group_size=k`` and TRL's ``num_generations`` both put
a prompt's k samples into one call. Within a group the judge compares completions in pairs,
with the labeling prompts of :mod:`rewards.preference` (Base or Detailed preamble, optional
few-shot exemplars, optional two-step chain of thought), in BOTH orders (position
debiasing, Lee et al. 2023, section 2.1.1). For the pair ``(i, j)``::

    p_ab = P(i preferred | i shown first)          = P_label(first  | prompt(i, j))
    p_ba = P(i preferred | i shown second)         = P_label(second | prompt(j, i))
    p_ij = (p_ab + p_ba) / 2,     p_ji = 1 - p_ij

(``P_label`` is the soft label: the softmax over the two label tokens; a template whose label
names the worse response, harmlessness, is mirrored.) A pair is *position consistent* when
both orders prefer the same completion: ``(p_ab > 1/2) == (p_ba > 1/2)``.

Which pairs (``anchor="group"``, the default):

* ``u <= all_pairs_up_to`` distinct texts in the group (default 4, so k <= 4 always): every
  pair of distinct texts, ``u (u - 1) / 2`` pairs, ``u (u - 1)`` judge prompts.
* more: a round robin over the distinct texts in a canonical order (sorted by the SHA-256
  of the text, so the schedule does not depend on the order of the completions): text ``a``
  meets ``a +- 1, ..., a +- offsets`` (cyclically), ``u * offsets`` pairs instead of
  ``u (u - 1) / 2`` (k = 16: 32 pairs instead of 120), each text in ``2 offsets`` of them.

Identical completions are judged once (their pair with each other is exactly 1/2, no call).

From preferences to a score: mean win probability, mapped linearly
-----------------------------------------------------------------
::

    score_i = 2 * mean_{j in opponents(i)} p_ij - 1          in [-1, 1]

With all pairs, ``opponents(i)`` are the group's other k - 1 completions (a duplicate of
``i`` counts with ``p = 1/2``); in a round robin, the texts ``i`` met. Why this and not a
Bradley-Terry fit:

* it is bounded by construction; a Bradley-Terry strength is not (soft labels of 0.99 put
  strengths 4.6 apart, and the scale to [-1, 1] would be a free choice);
* with all pairs it gives the same ranking as the Bradley-Terry maximum-likelihood fit
  (the BT likelihood equations are ``sum_j p_ij = sum_j sigmoid(b_i - b_j)``, and the right
  side increases with ``b_i``), in closed form, with no iterations or regularizer;
* it is the expected outcome against another sample of the same prompt, and it is
  relative: over a complete group the scores sum to 0 (``sum_i sum_{j != i} p_ij = k (k - 1)
  / 2``), so a group's mean is 0 whatever the judge thinks of the prompt's samples.
  Group baselines (leave-one-out, GRPO) subtract a mean anyway; what reaches the policy is
  the spread within the group;
* it is exactly equivariant to permutations of the group, invariant to the order swap
  (``p_ij`` averages both orders), and equal for identical completions (property tests).

The price: in a round robin a text's score depends on which texts it met (BT would correct
for opponent strength); with all pairs (k <= 4) there is no such effect.

``anchor="reference"`` (the paper's alternative to the direct score, section 2.2): each
completion is compared with the dataset's reference response (``PromptRecord.reference``,
passed through the reward protocol's ``references`` side channel) in both orders,
``score_i = 2 P(i preferred over the reference) - 1``; no group is needed, k = 1 works.

A group of one completion with ``anchor="group"`` has no peer: its score is 0 (a warning
says so once); use ``group_size >= 2`` / ``samples_per_prompt >= 2`` or
``anchor="reference"``.

Judge cost: one group's prompts all start with the same chat header, preamble, exemplars and
post (:attr:`rewards.prompts.ChatPrompt.shared_user_head`): that shared prefix runs ONCE
per group (:meth:`~rewards.judges.base.Judge.next_token_logprobs_shared_prefix`, the
transformers judge's KV cache, which also keeps the template part for the next group) and
only the pairs' own tails run per prompt (``benchmarks/bench_group_judge.py``). With CoT, the
group's prompts go to :meth:`~rewards.judges.base.Judge.generate_and_score` together, one
group after the other, so the transformers judge runs their shared prefix once too.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rewards.direct import DEFAULT_JUDGE
from rewards.judges import Judge, LazyJudge
from rewards.normalization import preference_from_logprobs
from rewards.preference import _clean_rationale, shared_rendered_prefix
from rewards.prompts import (
    PreferenceTemplate,
    PromptTemplate,
    load_template,
    render_preference_messages,
)
from rlaif_gym.reward_protocol import RewardFunction, RewardOutput

__all__ = [
    "ANCHORS",
    "GroupPreferences",
    "PairwiseReward",
    "judge_pairs",
    "pair_schedule",
    "position_consistent",
    "win_scores",
]

#: Values of ``PairwiseReward(anchor=...)``.
ANCHORS: tuple[str, ...] = ("group", "reference")
#: ``pairwise_opponents`` value of the reference response.
REFERENCE = -1
#: ``pairwise_opponents`` value of an unused column (NaN probabilities).
NO_OPPONENT = -2


# --------------------------------------------------------------------------- the math


def pair_schedule(u: int, all_pairs_up_to: int = 4, offsets: int = 2) -> list[tuple[int, int]]:
    """The pairs ``(a, b)``, ``a < b``, of ``u`` distinct items (in canonical order) that get
    judged: all ``u (u - 1) / 2`` pairs when ``u <= all_pairs_up_to``, else the cyclic round
    robin ``{(a, (a + d) mod u) : d = 1..offsets}`` (module doc), sorted.

    Raises:
        ValueError: ``u < 0``, ``all_pairs_up_to < 2`` or ``offsets < 1``.
    """
    if u < 0 or all_pairs_up_to < 2 or offsets < 1:
        raise ValueError(f"need u >= 0, all_pairs_up_to >= 2, offsets >= 1; got {u}, "
                         f"{all_pairs_up_to}, {offsets}")
    if u <= all_pairs_up_to:
        return [(a, b) for a in range(u) for b in range(a + 1, u)]
    pairs = {tuple(sorted((a, (a + d) % u))) for a in range(u) for d in range(1, offsets + 1)}
    return sorted(pairs)  # type: ignore[arg-type]


def position_consistent(p_ab: np.ndarray, p_ba: np.ndarray) -> np.ndarray:
    """bool: whether both orders prefer the same response, ``(p_ab > 1/2) == (p_ba > 1/2)``
    (``p_ab``, ``p_ba``: P(first-listed response preferred) shown first / second)."""
    return (np.asarray(p_ab) > 0.5) == (np.asarray(p_ba) > 0.5)


def win_scores(n: int, pairs: Sequence[tuple[int, int]], p_first: np.ndarray,
               ties: Sequence[tuple[int, int]] = ()) -> np.ndarray:
    """Mean win probability mapped to [-1, 1]: ``score_i = 2 mean_{j ~ i} p_ij - 1``.

    Args:
        n: number of items.
        pairs: the judged pairs ``(i, j)``; ``p_first[m] = P(pairs[m][0] preferred)``, so
            ``p_ij = p_first[m]`` and ``p_ji = 1 - p_first[m]``.
        p_first: float ``(len(pairs),)`` in [0, 1].
        ties: pairs that count as ``p = 1/2`` without a judgment (identical texts).

    Returns:
        float64 ``(n,)`` in [-1, 1]; 0 for an item in no pair.
    """
    wins = np.zeros(n, dtype=np.float64)
    games = np.zeros(n, dtype=np.float64)
    for (i, j), p in zip(pairs, np.asarray(p_first, dtype=np.float64), strict=True):
        wins[i] += p
        wins[j] += 1.0 - p
        games[i] += 1
        games[j] += 1
    for i, j in ties:
        wins[i] += 0.5
        wins[j] += 0.5
        games[i] += 1
        games[j] += 1
    mean = np.divide(wins, games, out=np.full(n, 0.5), where=games > 0)
    return np.clip(2.0 * mean - 1.0, -1.0, 1.0)  # clip: float rounding only


def _p_shown_first(tpl: PreferenceTemplate, logprobs: np.ndarray) -> np.ndarray:
    """P(the response shown first is preferred) from ``(n, 2)`` log P(labels)."""
    p_label_1 = preference_from_logprobs(logprobs[:, 0], logprobs[:, 1])
    return p_label_1 if tpl.label_selects == "better" else 1.0 - p_label_1


@dataclass(frozen=True)
class GroupPreferences:
    """Preferences among ``items`` for one context, both orders.

    Attributes:
        pairs: ``(m, 2)`` int, indices into the items.
        p_ab: float ``(m,)``, P(pairs[:, 0] preferred | shown first).
        p_ba: float ``(m,)``, P(pairs[:, 0] preferred | shown second).
        judge_prompts: prompts the judge scored (``2 m``).
    """

    pairs: np.ndarray
    p_ab: np.ndarray
    p_ba: np.ndarray
    judge_prompts: int

    @property
    def p_first(self) -> np.ndarray:
        """``(p_ab + p_ba) / 2``: P(pairs[:, 0] preferred), both orders averaged."""
        return (self.p_ab + self.p_ba) / 2.0


def _chats(template: PromptTemplate, context: str, items: Sequence[str],
           pairs: Sequence[tuple[int, int]], prompt: str, cot: bool, shots: int) -> list:
    """The chat prompts of every pair in both orders: ``[ab_0, ba_0, ab_1, ba_1, ...]``."""
    chats = []
    for i, j in pairs:
        for first, second in ((i, j), (j, i)):
            chats.append(render_preference_messages(template, context, items[first],
                                                    items[second], prompt=prompt, cot=cot,
                                                    shots=shots))
    return chats


def judge_pairs(judge: Judge, template: str | Path | PromptTemplate, context: str,
                items: Sequence[str], pairs: Sequence[tuple[int, int]], *,
                prompt: str = "base", shots: int = 0, share_prefix: bool = True
                ) -> GroupPreferences:
    """Judge ``pairs`` of ``items`` for one ``context`` in both orders, without CoT.

    All ``2 len(pairs)`` prompts share the rendered text up to the context (chat header,
    preamble, exemplars, the post): with ``share_prefix`` that prefix runs once
    (:meth:`Judge.next_token_logprobs_shared_prefix`) and only each prompt's tail (the two
    responses and the ending) runs per prompt; ``share_prefix=False`` scores the full
    prompts (:meth:`Judge.next_token_logprobs`, the reference for the benchmark). Same token
    ids either way.
    """
    loaded = load_template(template)
    tpl = loaded.require_preference()
    if not pairs:
        empty = np.zeros(0)
        return GroupPreferences(np.zeros((0, 2), dtype=np.int64), empty, empty.copy(), 0)
    chats = _chats(loaded, context, items, pairs, prompt, False, shots)
    full = [judge.render_chat(c) for c in chats]
    prefix = shared_rendered_prefix(judge, chats, full) if share_prefix else None
    if prefix is None:
        logprobs = judge.next_token_logprobs(full, tpl.labels)
    else:
        logprobs = judge.next_token_logprobs_shared_prefix(
            prefix, [text[len(prefix):] for text in full], tpl.labels)
    shown_first = _p_shown_first(tpl, logprobs)
    return GroupPreferences(np.asarray(pairs, dtype=np.int64).reshape(-1, 2),
                            shown_first[0::2], 1.0 - shown_first[1::2], len(full))


def _judge_pairs_cot(judge: Judge, template: PromptTemplate,
                     jobs: Sequence[tuple[str, Sequence[str], Sequence[tuple[int, int]]]],
                     prompt: str, shots: int, max_tokens: int) -> list[GroupPreferences]:
    """CoT preferences of several ``(context, items, pairs)`` jobs in one
    :meth:`Judge.generate_and_score` call (each job's prompts consecutive)."""
    tpl = template.require_preference()
    prompts, sizes = [], []
    for context, items, pairs in jobs:
        chats = _chats(template, context, items, pairs, prompt, True, shots)
        prompts.extend(judge.render_chat(c) for c in chats)
        sizes.append(len(chats))
    out: list[GroupPreferences] = []
    if prompts:
        def then_ending(_i: int, generated: str) -> str:
            return f"{_clean_rationale(generated, tpl.ending)}\n{tpl.ending}"

        _, logprobs = judge.generate_and_score(prompts, max_tokens, then_ending, tpl.labels)
        shown_first = _p_shown_first(tpl, logprobs)
    start = 0
    for (_, _, pairs), size in zip(jobs, sizes, strict=True):
        part = shown_first[start:start + size] if size else np.zeros(0)
        start += size
        out.append(GroupPreferences(np.asarray(pairs, dtype=np.int64).reshape(-1, 2),
                                    part[0::2], 1.0 - part[1::2], size))
    return out


def _canonical(texts: Sequence[str]) -> list[str]:
    """Distinct texts in an order that depends only on the set: by SHA-256, then text."""
    return sorted(set(texts), key=lambda t: (hashlib.sha256(t.encode("utf-8")).digest(), t))


# --------------------------------------------------------------------------- the reward


@dataclass
class _Plan:
    """One group's (or one reference comparison's) judging job and how to read it back."""

    members: list[int]  # positions in the call
    context: str
    items: list[str]  # distinct texts (the reference last with anchor="reference")
    pairs: list[tuple[int, int]]
    item_of: list[int]  # per member: its index in items
    prefs: GroupPreferences | None = None


class PairwiseReward(LazyJudge, RewardFunction):
    """The ``"pairwise"`` reward (module doc): preferences in both orders within a prompt's
    samples (``anchor="group"``) or against the reference (``anchor="reference"``).

    Args:
        judge: a :class:`~rewards.judges.base.Judge` or a model spec for
            :func:`rewards.judges.load_judge` (loaded lazily on the first call).
        task: template with a ``preference`` section (``"tldr"``, ``"helpful"``,
            ``"harmless"``, a path or a :class:`~rewards.prompts.PromptTemplate`).
        anchor: ``"group"`` or ``"reference"``.
        prompt: preamble variant (``"base"``, ``"detailed"``).
        cot: two-step chain-of-thought labels (section 2.1.2).
        shots: few-shot exemplars.
        cot_max_tokens: rationale length limit (greedy).
        all_pairs_up_to, offsets: the pair schedule (:func:`pair_schedule`).
        batch_size: the judge's sequences per forward when it is loaded here (default 12:
            the 12 prompts of a group of 4 in one batch).
        **judge_kwargs: passed to :func:`~rewards.judges.load_judge` (``backend``, ``dtype``,
            ``device``, ``num_threads``...).

    Details of :class:`~rlaif_gym.reward_protocol.RewardOutput` (``n`` completions, ``m``
    the most comparisons of one completion in the call):

    * ``pairwise_win_prob`` ``(n,)``: mean P(this completion preferred) over its opponents
      (0.5 with none); the score is ``2 win_prob - 1``.
    * ``pairwise_opponents`` ``(n, m)`` int: the opponent's position in the call,
      ``-1`` the reference, ``-2`` an unused column.
    * ``pairwise_p_shown_first`` / ``pairwise_p_shown_second`` ``(n, m)``: P(this completion
      preferred) when it is shown first / second (NaN: unused column; a duplicate of this
      completion: 0.5).
    * ``pairwise_consistency`` ``(n,)``: fraction of this completion's judged comparisons
      that are position consistent (NaN with none).
    * ``pairwise_judge_prompts`` ``(n,)`` int: prompts the judge scored for this
      completion's group (the same for all its members).
    * ``pairwise_group_size`` ``(n,)`` int: completions in its group.

    :attr:`totals` adds up ``judge_prompts``, ``pairs`` and ``consistent_pairs`` over the
    reward's lifetime; :attr:`position_consistency` is their ratio.
    """

    name = "pairwise"

    def __init__(
        self,
        judge: str | Path | Judge = DEFAULT_JUDGE,
        task: str | Path | PromptTemplate = "tldr",
        anchor: str = "group",
        prompt: str = "base",
        cot: bool = False,
        shots: int = 0,
        cot_max_tokens: int = 256,
        all_pairs_up_to: int = 4,
        offsets: int = 2,
        batch_size: int = 12,
        **judge_kwargs: Any,
    ) -> None:
        if anchor not in ANCHORS:
            raise ValueError(f"anchor must be one of {ANCHORS}, got {anchor!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if cot and (not isinstance(cot_max_tokens, int) or cot_max_tokens < 1):
            raise ValueError(f"cot_max_tokens must be a positive int, got {cot_max_tokens!r}")
        pair_schedule(0, all_pairs_up_to, offsets)  # validates the schedule options
        if isinstance(judge, Judge) and judge_kwargs:
            raise TypeError(f"judge options {sorted(judge_kwargs)} given with a Judge instance")
        self.template = load_template(task)
        # fail now (unknown variant, bad shots), not at the first episode
        render_preference_messages(self.template, "c", "a", "b", prompt=prompt, cot=cot,
                                   shots=shots)
        self.anchor = anchor
        self.needs_references = anchor == "reference"
        self.prompt, self.cot, self.shots = prompt, bool(cot), shots
        self.cot_max_tokens = cot_max_tokens
        self.all_pairs_up_to, self.offsets = all_pairs_up_to, offsets
        self.batch_size = batch_size
        self._judge_spec = judge
        self._judge_kwargs = dict(judge_kwargs)
        self._judge: Judge | None = judge if isinstance(judge, Judge) else None
        self.totals = {"judge_prompts": 0, "pairs": 0, "consistent_pairs": 0}
        self._warned_singleton = False

    @property
    def position_consistency(self) -> float:
        """Fraction of all judged pairs so far whose two orders agree (NaN before any)."""
        pairs = self.totals["pairs"]
        return self.totals["consistent_pairs"] / pairs if pairs else float("nan")

    # ----------------------------------------------------------------- planning

    def _plan_groups(self, prompts: Sequence[str], completions: Sequence[str]) -> list[_Plan]:
        groups: dict[str, list[int]] = {}
        for pos, prompt in enumerate(prompts):
            groups.setdefault(prompt, []).append(pos)
        plans = []
        for context, members in groups.items():
            texts = [completions[m] for m in members]
            items = _canonical(texts)
            index = {t: a for a, t in enumerate(items)}
            pairs = pair_schedule(len(items), self.all_pairs_up_to, self.offsets)
            plans.append(_Plan(members, context, items, pairs, [index[t] for t in texts]))
        return plans

    def _plan_reference(self, prompts: Sequence[str], completions: Sequence[str],
                        references: Sequence[str | None]) -> list[_Plan]:
        missing = [i for i, r in enumerate(references) if not isinstance(r, str) or not r.strip()]
        if missing:
            raise ValueError(
                f"pairwise reward with anchor='reference': no reference response for "
                f"completion(s) {missing} (prompt {prompts[missing[0]][:60]!r}...); the "
                "dataset's PromptRecord.reference (TRL: a 'reference' column) is needed")
        groups: dict[tuple[str, str], list[int]] = {}
        for pos, (prompt, ref) in enumerate(zip(prompts, references, strict=True)):
            groups.setdefault((prompt, ref), []).append(pos)  # type: ignore[arg-type]
        plans = []
        for (context, ref), members in groups.items():
            texts = [completions[m] for m in members]
            items = [t for t in _canonical(texts) if t != ref] + [ref]
            index = {t: a for a, t in enumerate(items)}
            r = len(items) - 1
            pairs = [(a, r) for a in range(r)]  # each distinct completion vs the reference
            plans.append(_Plan(members, context, items, pairs, [index[t] for t in texts]))
        return plans

    # ----------------------------------------------------------------- scoring

    def score(self, prompts: Sequence[str], completions: Sequence[str],
              references: Sequence[str | None] | None = None) -> RewardOutput:
        if self.anchor == "reference":
            plans = self._plan_reference(prompts, completions,
                                         references if references is not None
                                         else [None] * len(prompts))
        else:
            plans = self._plan_groups(prompts, completions)
            if any(len(p.members) == 1 for p in plans) and not self._warned_singleton:
                self._warned_singleton = True
                warnings.warn("pairwise reward: a prompt with a single completion in the call "
                              "has no peer to compare with and scores 0; sample k >= 2 per "
                              "prompt (vector env group_size, train samples_per_prompt, TRL "
                              "num_generations) or use anchor='reference'", stacklevel=3)
        self._judge_plans(plans)
        return self._output(len(prompts), plans)

    def _judge_plans(self, plans: list[_Plan]) -> None:
        todo = [p for p in plans if p.pairs]
        if self.cot:
            found = _judge_pairs_cot(self.judge, self.template,
                                     [(p.context, p.items, p.pairs) for p in todo],
                                     self.prompt, self.shots, self.cot_max_tokens)
        else:
            found = [judge_pairs(self.judge, self.template, p.context, p.items, p.pairs,
                                 prompt=self.prompt, shots=self.shots) for p in todo]
        for plan, prefs in zip(todo, found, strict=True):
            plan.prefs = prefs
            consistent = position_consistent(prefs.p_ab, prefs.p_ba)
            self.totals["judge_prompts"] += prefs.judge_prompts
            self.totals["pairs"] += len(prefs.p_ab)
            self.totals["consistent_pairs"] += int(consistent.sum())

    def _output(self, n: int, plans: list[_Plan]) -> RewardOutput:
        rows: list[list[tuple[int, float, float, bool]]] = [[] for _ in range(n)]
        scores = np.zeros(n, dtype=np.float64)
        win = np.full(n, 0.5)
        consistency = np.full(n, np.nan)
        prompts_per = np.zeros(n, dtype=np.int64)
        group_size = np.zeros(n, dtype=np.int64)
        for plan in plans:
            item_scores, by_item = self._plan_scores(plan)
            judged = plan.prefs.judge_prompts if plan.prefs is not None else 0
            for member, item in zip(plan.members, plan.item_of, strict=True):
                scores[member] = item_scores[item]
                win[member] = (item_scores[item] + 1.0) / 2.0
                prompts_per[member] = judged
                group_size[member] = len(plan.members)
                rows[member] = self._member_rows(plan, member, item, by_item)
                judged_rows = [r for r in rows[member] if r[3]]
                if judged_rows:
                    consistency[member] = float(np.mean(position_consistent(
                        [r[1] for r in judged_rows], [r[2] for r in judged_rows])))
        m = max((len(r) for r in rows), default=0)
        opponents = np.full((n, m), NO_OPPONENT, dtype=np.int64)
        p_first = np.full((n, m), np.nan)
        p_second = np.full((n, m), np.nan)
        for pos, entries in enumerate(rows):
            for c, (opponent, first, second, _) in enumerate(entries):
                opponents[pos, c], p_first[pos, c], p_second[pos, c] = opponent, first, second
        return RewardOutput(scores=scores, details={
            "pairwise_win_prob": win,
            "pairwise_opponents": opponents,
            "pairwise_p_shown_first": p_first,
            "pairwise_p_shown_second": p_second,
            "pairwise_consistency": consistency,
            "pairwise_judge_prompts": prompts_per,
            "pairwise_group_size": group_size,
        })

    def _plan_scores(self, plan: _Plan) -> tuple[np.ndarray, dict[int, list]]:
        """Scores per item of ``plan`` and, per item, its judged comparisons
        ``[(other item, p this preferred shown first, p shown second)]``."""
        by_item: dict[int, list[tuple[int, float, float]]] = {a: [] for a in
                                                               range(len(plan.items))}
        prefs = plan.prefs
        p_first = np.zeros(0) if prefs is None else prefs.p_first
        if prefs is not None:
            for (a, b), p_ab, p_ba in zip(plan.pairs, prefs.p_ab, prefs.p_ba, strict=True):
                by_item[a].append((b, float(p_ab), float(p_ba)))
                by_item[b].append((a, 1.0 - float(p_ba), 1.0 - float(p_ab)))
        if self.anchor == "reference":
            r = len(plan.items) - 1
            item_scores = win_scores(len(plan.items), plan.pairs, p_first)
            item_scores[r] = 0.0  # a completion equal to the reference: a tie, score 0
            return item_scores, by_item
        u = len(plan.items)
        if u > self.all_pairs_up_to:  # round robin over distinct texts
            return win_scores(u, plan.pairs, p_first), by_item
        # all pairs: the mean over the k - 1 other completions, duplicates at 1/2
        counts = np.bincount(plan.item_of, minlength=u).astype(np.float64)
        wins = np.zeros(u)
        for (a, b), p in zip(plan.pairs, p_first, strict=True):
            wins[a] += counts[b] * p
            wins[b] += counts[a] * (1.0 - p)
        wins += 0.5 * (counts - 1.0)  # each duplicate of itself: a tie
        others = counts.sum() - 1.0
        mean = wins / others if others > 0 else np.full(u, 0.5)
        return np.clip(2.0 * mean - 1.0, -1.0, 1.0), by_item

    def _member_rows(self, plan: _Plan, member: int, item: int,
                     by_item: Mapping[int, list[tuple[int, float, float]]]
                     ) -> list[tuple[int, float, float, bool]]:
        """This completion's comparisons: ``(opponent position, p first, p second,
        judged)``; opponents are other positions of the call or the reference (-1)."""
        out: list[tuple[int, float, float, bool]] = []
        if self.anchor == "reference":
            r = len(plan.items) - 1
            if item == r:  # equal to the reference: a tie, no judgment
                return [(REFERENCE, 0.5, 0.5, False)]
            return [(REFERENCE, p1, p2, True) for other, p1, p2 in by_item[item] if other == r]
        judged = {other: (p1, p2) for other, p1, p2 in by_item[item]}
        round_robin = len(plan.items) > self.all_pairs_up_to
        for other_pos, other_item in zip(plan.members, plan.item_of, strict=True):
            if other_pos == member:
                continue
            if other_item == item:
                if not round_robin:
                    out.append((other_pos, 0.5, 0.5, False))
            elif other_item in judged:
                p1, p2 = judged[other_item]
                out.append((other_pos, p1, p2, True))
        return out

    def __repr__(self) -> str:
        judge = self._judge.name if self._judge is not None else self._judge_spec
        return (f"PairwiseReward(judge={judge!r}, task={self.template.name!r}, "
                f"anchor={self.anchor!r}, prompt={self.prompt!r}, cot={self.cot})")
