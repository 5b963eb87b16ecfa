"""Direct (d-RLAIF) scores: two-token and one-token "10", DirectReward shapes and errors."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from rewards.direct import DirectReward, direct_scores
from rewards.judges.base import Judge, Prompt, as_segments
from rewards.judges.transformers_judge import TransformersJudge
from rewards.prompts import TemplateError, render_plain
from rlaif_gym.reward_registry import make_reward

# Probabilities of the first token after "SCORE: " (the rest of the vocabulary has the rest).
P_FIRST = {"1": 0.2, "2": 0.05, "3": 0.05, "4": 0.05, "5": 0.3, "6": 0.05, "7": 0.05,
           "8": 0.05, "9": 0.1}
P_ZERO_AFTER_ONE = 0.25


class FakeScoreJudge(Judge):
    """Known digit probabilities; ``ten_token`` makes "10" a single token with P = 0.05."""

    name = "fake-scorer"

    def __init__(self, ten_token: bool) -> None:
        self.ten_token = ten_token
        self.prompts: list[str] = []

    def render(self, messages: Sequence[Mapping[str, str]], assistant_prefix: str = "") -> str:
        return render_plain(messages, assistant_prefix)

    def next_token_logprobs(self, prompts: Sequence[Prompt],
                            candidates: Sequence[str]) -> np.ndarray:
        rows = []
        for prompt in prompts:
            segments = as_segments(prompt)
            if segments[-1] == "1":  # second step: P(next | prompt + "1")
                probs = {"0": P_ZERO_AFTER_ONE}
            else:
                self.prompts.append("".join(segments))
                probs = dict(P_FIRST, **({"10": 0.05} if self.ten_token else {}))
            rows.append([math.log(probs[c]) for c in candidates])
        return np.array(rows)

    def generate(self, prompts, max_new_tokens):  # pragma: no cover - unused
        raise NotImplementedError

    def is_single_token(self, text: str) -> bool:
        return len(text) == 1 or (self.ten_token and text == "10")


def test_two_token_ten_gives_the_exact_distribution():
    scores = direct_scores(FakeScoreJudge(ten_token=False), "tldr", ["post"], ["summary"])
    raw = np.array([0.2 * 0.75, 0.05, 0.05, 0.05, 0.3, 0.05, 0.05, 0.05, 0.1, 0.2 * 0.25])
    np.testing.assert_allclose(scores.distribution[0], raw / 0.9, atol=1e-12)
    expected = float(raw @ np.arange(1, 11) / 0.9)
    assert scores.expected[0] == pytest.approx(expected, abs=1e-12)
    assert scores.rewards[0] == pytest.approx((expected - 5.5) / 4.5, abs=1e-12)


def test_single_token_ten_counts_both_spellings_of_ten():
    scores = direct_scores(FakeScoreJudge(ten_token=True), "tldr", ["post"], ["summary"])
    # P(10) = P("10") + P("1") P("0"|"1"), P(1) = P("1") (1 - P("0"|"1")), then renormalised.
    raw = np.array([0.15, 0.05, 0.05, 0.05, 0.3, 0.05, 0.05, 0.05, 0.1, 0.05 + 0.05])
    np.testing.assert_allclose(scores.distribution[0], raw / raw.sum(), atol=1e-12)


def test_score_prompt_ends_with_the_prefilled_score_ending():
    judge = FakeScoreJudge(ten_token=False)
    direct_scores(judge, "helpful", ["Human: hi"], [" Hello!"])
    (prompt,) = judge.prompts
    assert prompt.endswith("CONTEXT: Human: hi\nRESPONSE: Hello!\nSCORE: ")


def test_direct_reward_with_tiny_model_returns_rewards_in_range(tiny_model, tiny_tokenizer):
    judge = TransformersJudge(tiny_model, tiny_tokenizer, batch_size=2)
    reward = DirectReward(judge=judge, task="tldr", batch_size=2)
    out = reward(["post one", "post two", "post three"], [" a", "", " a longer summary"])
    assert out.scores.shape == (3,)
    assert np.all(np.isfinite(out.scores)) and np.all(np.abs(out.scores) <= 1.0)
    assert out.details["direct_expected_score"].shape == (3,)
    assert out.details["direct_distribution"].shape == (3, 10)
    np.testing.assert_allclose(out.details["direct_distribution"].sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(out.scores, (out.details["direct_expected_score"] - 5.5) / 4.5)


def test_direct_reward_loads_its_judge_lazily_from_a_spec():
    reward = make_reward("direct", judge="tiny-random", task="harmless", batch_size=2)
    assert isinstance(reward, DirectReward) and reward.name == "direct"
    assert reward._judge is None  # nothing loaded yet
    out = reward(["Human: hi"], ["Hello"])
    assert reward.judge.name == "tiny-random" and out.scores.shape == (1,)


def test_errors():
    judge = FakeScoreJudge(ten_token=False)
    with pytest.raises(ValueError, match="2 contexts but 1 responses"):
        direct_scores(judge, "tldr", ["a", "b"], ["x"])
    with pytest.raises(TemplateError, match="unknown template"):
        DirectReward(judge=judge, task="poetry")
    with pytest.raises(TypeError, match="judge options"):
        DirectReward(judge=judge, dtype="float32")
    assert direct_scores(judge, "tldr", [], []).distribution.shape == (0, 10)


@pytest.mark.slow
def test_real_judge_direct_reward_is_finite():
    try:
        reward = DirectReward(judge="qwen2.5-coder-0.5b-instruct", task="tldr", num_threads=1)
        judge = reward.judge
    except (FileNotFoundError, ImportError, ValueError) as exc:
        pytest.skip(f"packaged judge not available: {exc}")
    assert not judge.is_single_token("10")  # Qwen splits digits: the two-step path
    post = "SUBREDDIT: r/cats\nTITLE: My cat ate my homework\nPOST: What do I tell my teacher?"
    out = reward([post, post], [" My cat ate my homework, how do I explain it?", " I like pie."])
    assert np.all(np.isfinite(out.scores)) and np.all(np.abs(out.scores) <= 1)
    assert out.details["direct_distribution"].shape == (2, 10)


def test_direct_reward_details_carry_the_judges_spending(tiny_model, tiny_tokenizer, tmp_path):
    from rewards.judges import load_judge

    judge = load_judge(TransformersJudge(tiny_model, tiny_tokenizer),
                       verdict_cache=tmp_path / "verdicts.sqlite")
    reward = DirectReward(judge=judge, task="tldr")
    prompts, completions = ["post one", "post two"], ["a summary", "another"]
    first = reward(prompts, completions)
    second = reward(prompts, completions)
    assert first.details["judge_cache_misses"].tolist() == [1.0, 1.0]  # 2 misses, 1 per row
    assert first.details["judge_cache_hits"].sum() == 0
    assert second.details["judge_cache_hits"].sum() == 2
    assert second.details["judge_calls"].shape == (2,)
    np.testing.assert_array_equal(first.scores, second.scores)
