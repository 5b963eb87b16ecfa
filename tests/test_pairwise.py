"""The "pairwise" reward: both orders, mean win probability in [-1, 1], its properties
(hypothesis), the pair schedule, the reference anchor, group prefix sharing and the env."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rlaif_gym  # noqa: F401  (registers the env ids)
from rewards.judges.base import Judge, Prompt, as_segments
from rewards.judges.transformers_judge import TransformersJudge
from rewards.pairwise import PairwiseReward, judge_pairs, pair_schedule, win_scores
from rewards.prompts import render_plain
from rlaif_gym.data.records import PromptRecord
from rlaif_gym.reward_registry import make_reward
from rlaif_gym.testing import make_tiny_tokenizer

SUMMARIES = re.compile(r"Summary 1 - (.*)\nSummary 2 - (.*)\n", re.S)


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


class FakeJudge(Judge):
    """P(label "1") from the prompt text: ``mode="hash"`` a pseudo-random function of the
    whole prompt (an arbitrary, position-biased judge); ``mode="length"`` prefers the longer
    summary, plus ``bias`` in favour of the first position. Counts its calls."""

    name = "fake-judge"

    def __init__(self, mode: str = "hash", bias: float = 0.0) -> None:
        self.mode, self.bias = mode, bias
        self.prompts: list[str] = []
        self.shared_calls: list[int] = []
        self.generated = 0

    def render(self, messages: Sequence[Mapping[str, str]], assistant_prefix: str = "") -> str:
        return render_plain(messages, assistant_prefix)

    def logit(self, text: str) -> float:
        if self.mode == "hash":
            h = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64
            return 8.0 * (h - 0.5)
        a, b = SUMMARIES.findall(text)[-1]
        return (len(a) - len(b)) / 2.0 + self.bias

    def next_token_logprobs(self, prompts: Sequence[Prompt], candidates: Sequence[str]):
        rows = []
        for prompt in prompts:
            text = "".join(as_segments(prompt))
            self.prompts.append(text)
            x = self.logit(text)
            logp = {"1": _log_sigmoid(x), "2": _log_sigmoid(-x)}
            rows.append([logp[c] for c in candidates])
        return np.array(rows)

    def next_token_logprobs_shared_prefix(self, prefix, suffixes, candidates):
        self.shared_calls.append(len(suffixes))
        return super().next_token_logprobs_shared_prefix(prefix, suffixes, candidates)

    def generate(self, prompts, max_new_tokens):
        self.generated += len(prompts)
        return ["Both are fine."] * len(prompts)

    def is_single_token(self, text: str) -> bool:
        return len(text) == 1


def pairwise(judge=None, **options) -> PairwiseReward:
    return PairwiseReward(judge=judge or FakeJudge(), task="tldr", **options)


TEXTS = ["a", "bb", "ccc", "", "dddd x", "e e e e e", "ff"]
completion_lists = st.lists(st.sampled_from(TEXTS), min_size=1, max_size=8)


# -- properties ----------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:pairwise reward")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(completions=completion_lists, data=st.data())
def test_scores_lie_in_range_and_permute_with_the_completions(completions, data):
    reward = pairwise()
    perm = data.draw(st.permutations(range(len(completions))))
    scores = reward(["post"] * len(completions), completions).scores
    permuted = reward(["post"] * len(completions), [completions[i] for i in perm]).scores
    assert np.all(scores >= -1.0) and np.all(scores <= 1.0)
    np.testing.assert_array_equal(permuted, scores[list(perm)])


@pytest.mark.filterwarnings("ignore:pairwise reward")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(completions=completion_lists)
def test_identical_completions_get_equal_scores(completions):
    scores = pairwise()(["post"] * len(completions), completions).scores
    for text in set(completions):
        same = [scores[i] for i, c in enumerate(completions) if c == text]
        assert max(same) == min(same)


@settings(max_examples=60, deadline=None)
@given(completions=st.lists(st.sampled_from(TEXTS), min_size=2, max_size=4))
def test_a_complete_group_scores_sum_to_zero(completions):
    scores = pairwise()(["post"] * len(completions), completions).scores
    assert abs(scores.sum()) < 1e-12


@settings(max_examples=100, deadline=None)
@given(data=st.data(), n=st.integers(2, 6))
def test_swapping_the_two_orders_leaves_the_scores_unchanged(data, n):
    pairs = data.draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)).filter(
        lambda p: p[0] != p[1]), min_size=1, max_size=10))
    probability = st.floats(0.0, 1.0, allow_nan=False)
    p_ab = np.array([data.draw(probability) for _ in pairs])
    p_ba = np.array([data.draw(probability) for _ in pairs])
    scores = win_scores(n, pairs, (p_ab + p_ba) / 2)
    # the other orientation: (j, i) with P(j first-listed preferred | shown first) = 1 - p_ba
    swapped = win_scores(n, [(j, i) for i, j in pairs], ((1 - p_ba) + (1 - p_ab)) / 2)
    np.testing.assert_allclose(swapped, scores, atol=1e-12)
    assert np.all(np.abs(scores) <= 1.0)


def test_pair_schedule_is_all_pairs_up_to_four_then_a_round_robin():
    assert pair_schedule(4) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert len(pair_schedule(5)) == 10  # offsets 1, 2 of 5 items: every pair
    rr = pair_schedule(16)
    assert len(rr) == 32
    meets = np.bincount(np.array(rr).ravel(), minlength=16)
    assert (meets == 4).all()  # each item in 2 * offsets pairs
    assert len(pair_schedule(8, all_pairs_up_to=8)) == 28
    with pytest.raises(ValueError):
        pair_schedule(3, offsets=0)


# -- what it computes ----------------------------------------------------------------------------


def test_both_orders_are_asked_and_averaged_with_a_position_biased_judge():
    judge = FakeJudge(mode="length", bias=3.0)  # strong first-position bias
    out = pairwise(judge)(["post", "post"], ["short", "a longer summary"])
    assert len(judge.prompts) == 2  # one pair, two orders
    x = (len("short") - len("a longer summary")) / 2.0  # the length term, first = "short"
    p_short_first = 1 / (1 + math.exp(-(x + 3.0)))  # P("short" wins | shown first)
    p_short_second = 1 - 1 / (1 + math.exp(-(-x + 3.0)))  # P("short" wins | shown second)
    expected = 2 * (p_short_first + p_short_second) / 2 - 1
    assert out.scores[0] == pytest.approx(expected, abs=1e-12)
    assert out.scores[1] == pytest.approx(-expected, abs=1e-12)
    assert out.details["pairwise_p_shown_first"][0, 0] == pytest.approx(p_short_first)
    assert out.details["pairwise_p_shown_second"][0, 0] == pytest.approx(p_short_second)
    assert out.details["pairwise_opponents"].tolist() == [[1], [0]]
    # the bias (3) is smaller than the length gap (5.5): both orders prefer the longer one
    assert out.details["pairwise_consistency"].tolist() == [1.0, 1.0]


def test_position_consistency_counts_pairs_whose_orders_disagree():
    judge = FakeJudge(mode="length", bias=10.0)  # always picks the first shown
    reward = pairwise(judge)
    out = reward(["post"] * 3, ["a", "bb", "ccc"])
    assert out.details["pairwise_consistency"].tolist() == [0.0, 0.0, 0.0]
    assert reward.totals == {"judge_prompts": 6, "pairs": 3, "consistent_pairs": 0}
    assert reward.position_consistency == 0.0


def test_a_group_of_four_is_six_pairs_and_twelve_prompts_in_one_prefix_call():
    judge = FakeJudge(mode="length")
    reward = pairwise(judge)
    out = reward(["post"] * 4 + ["other post"] * 4, ["a", "bb", "ccc", "dddd"] * 2)
    assert judge.shared_calls == [12, 12]  # one shared-prefix call per group
    assert out.details["pairwise_judge_prompts"].tolist() == [12] * 8
    assert out.details["pairwise_group_size"].tolist() == [4] * 8
    assert np.argsort(out.scores[:4]).tolist() == [0, 1, 2, 3]  # longer wins
    assert reward.totals["judge_prompts"] == 24


def test_duplicates_are_judged_once_and_tie_with_each_other():
    judge = FakeJudge(mode="length")
    out = pairwise(judge)(["post"] * 4, ["aa", "aa", "aa", "b"])
    assert len(judge.prompts) == 2  # one distinct pair
    p = 1 / (1 + math.exp(-0.5))  # P("aa" beats "b") in each order
    np.testing.assert_allclose(out.scores[:3], 2 * ((0.5 + 0.5 + p) / 3) - 1)
    assert out.scores[3] == pytest.approx(2 * (1 - p) - 1)
    assert out.details["pairwise_p_shown_first"][0].tolist()[:2] == [0.5, 0.5]


def test_large_groups_use_the_round_robin_over_distinct_texts():
    judge = FakeJudge(mode="length")
    texts = ["x" * i for i in range(1, 9)]  # 8 distinct
    out = pairwise(judge)(["post"] * 8, texts)
    assert len(judge.prompts) == 2 * 16  # 8 texts * 2 offsets pairs, both orders
    assert (out.details["pairwise_opponents"] >= 0).sum(axis=1).tolist() == [4] * 8
    assert np.all(np.abs(out.scores) <= 1.0)


def test_a_single_completion_scores_zero_with_a_warning():
    judge = FakeJudge()
    reward = pairwise(judge)
    with pytest.warns(UserWarning, match="no peer"):
        out = reward(["post", "other"], ["a", "b"])
    assert out.scores.tolist() == [0.0, 0.0] and judge.prompts == []
    assert np.isnan(out.details["pairwise_consistency"]).all()


def test_chain_of_thought_generates_a_rationale_per_order_then_scores():
    judge = FakeJudge(mode="length")
    out = pairwise(judge, cot=True, cot_max_tokens=8)(["post"] * 3, ["a", "bb", "ccc"])
    assert judge.generated == 6 and len(judge.prompts) == 6
    assert all(p.endswith("Preferred Summary=") for p in judge.prompts)
    assert np.argsort(out.scores).tolist() == [0, 1, 2]


def test_detailed_preamble_and_shots_reach_the_prompt():
    judge = FakeJudge()
    pairwise(judge, prompt="detailed", shots=1)(["post"] * 2, ["a", "b"])
    assert all("Coherence" in p and "Example" in p for p in judge.prompts)
    with pytest.raises(ValueError, match="variant"):
        pairwise(judge, prompt="nope")


# -- reference anchor ----------------------------------------------------------------------------


def test_reference_anchor_compares_each_completion_with_the_reference_in_both_orders():
    judge = FakeJudge(mode="length", bias=1.0)
    reward = pairwise(judge, anchor="reference")
    assert reward.needs_references
    out = reward(["post"], ["a long completion"], references=["ref"])
    assert len(judge.prompts) == 2
    x = (len("a long completion") - len("ref")) / 2.0
    p1 = 1 / (1 + math.exp(-(x + 1.0)))
    p2 = 1 - 1 / (1 + math.exp(-(-x + 1.0)))
    assert out.scores[0] == pytest.approx(p1 + p2 - 1)
    assert out.details["pairwise_opponents"].tolist() == [[-1]]
    with pytest.raises(ValueError, match="reference"):
        reward(["post"], ["a"])  # no references passed


def test_a_completion_equal_to_the_reference_ties_without_a_judge_call():
    judge = FakeJudge()
    out = pairwise(judge, anchor="reference")(["p", "p"], ["same", "other"],
                                              references=["same", "same"])
    assert out.scores[0] == 0.0 and len(judge.prompts) == 2


# -- registry and envs ---------------------------------------------------------------------------


def test_registered_name_builds_lazily_with_the_env_task():
    reward = make_reward("pairwise", context={"task": "helpful"})
    assert isinstance(reward, PairwiseReward) and reward._judge is None
    assert reward.template.name == "helpful"


TOKENIZER = make_tiny_tokenizer()
PROMPTS = [PromptRecord(f"p{i}", "tldr", f"TITLE: t{i}\nPOST: words {i}", reference=f"ref {i}")
           for i in range(4)]


def test_gym_make_with_the_pairwise_reward_runs_an_episode():
    env = gym.make("RLAIF-TLDR-v0", reward="pairwise",
                   reward_options={"anchor": "reference", "judge": FakeJudge(mode="length")},
                   tokenizer=TOKENIZER, prompts=PROMPTS, max_prompt_tokens=128,
                   max_new_tokens=3)
    env.reset(seed=0)
    reward, terminated = 0.0, False
    while not terminated:
        _, reward, terminated, _, info = env.step(65)
    assert -1.0 <= reward <= 1.0 and info["pairwise_opponents"].tolist() == [-1]
    with pytest.warns(UserWarning, match="no peer"):  # one completion per call: no group
        env = gym.make("RLAIF-TLDR-v0", reward="pairwise",
                       reward_options={"judge": FakeJudge()}, tokenizer=TOKENIZER,
                       prompts=PROMPTS, max_prompt_tokens=128, max_new_tokens=1)
        env.reset(seed=0)
        assert env.step(65)[1] == 0.0


def test_vector_env_groups_reach_the_pairwise_reward_in_one_call():
    judge = FakeJudge(mode="length")
    envs = gym.make_vec("RLAIF-TLDR-v0", num_envs=4, vectorization_mode="vector_entry_point",
                        group_size=2, autoreset_mode=AutoresetMode.DISABLED,
                        reward="pairwise", reward_options={"judge": judge},
                        tokenizer=TOKENIZER, prompts=PROMPTS, max_prompt_tokens=128,
                        max_new_tokens=4)
    envs.reset(options={"index": [0, 0, 1, 1]})
    eos = 258
    envs.step(np.array([65, eos, 65, 65]))  # sub-env 1 ends early: held
    _, _, terminated, _, _ = envs.step(np.array([eos, 65, 65, eos]))  # 0 ends -> group 0
    assert terminated.tolist() == [True, True, False, False]
    assert judge.shared_calls == [2]
    _, rewards, terminated, _, info = envs.step(np.array([65, 65, eos, 65]))
    assert terminated.tolist() == [False, False, True, True] and judge.shared_calls == [2, 2]
    assert rewards[2] == pytest.approx(-rewards[3])


# -- group prefix sharing on a real (tiny) model -------------------------------------------------


def test_shared_prefix_labels_match_full_prompts_on_a_tiny_model(tiny_model, tiny_tokenizer):
    judge = TransformersJudge(tiny_model, tiny_tokenizer, batch_size=5)
    items = ["short one", "a second summary", "third", "the fourth summary, longer"]
    pairs = pair_schedule(4)
    post = "SUBREDDIT: r/test\nTITLE: a title\nPOST: " + "some words here " * 10
    shared = judge_pairs(judge, "tldr", post, items, pairs, share_prefix=True)
    full = judge_pairs(judge, "tldr", post, items, pairs, share_prefix=False)
    assert shared.judge_prompts == full.judge_prompts == 12
    np.testing.assert_allclose(shared.p_ab, full.p_ab, atol=1e-5)
    np.testing.assert_allclose(shared.p_ba, full.p_ba, atol=1e-5)
    reward = PairwiseReward(judge=judge, task="tldr")
    out = reward([post] * 4, items)
    assert np.all(np.abs(out.scores) <= 1.0) and abs(out.scores.sum()) < 1e-9
