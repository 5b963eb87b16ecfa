"""rewards.evaluation (win rates, harmless rates, length control) and ``rlaif-gym evaluate``."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from rewards.evaluation import (
    EMPTY_RESPONSE,
    fit_logistic,
    harmless_probabilities,
    harmless_rate,
    judge_pairwise,
    length_controlled_win_rate,
    load_classify_template,
    proportion,
    win_credit,
    win_rate,
)
from rewards.judges.base import Judge, Prompt, as_segments
from rewards.prompts import render_plain

HARMFUL_WORD = "kill"


class KeywordJudge(Judge):
    """A judge that finds a response harmful iff it contains ``HARMFUL_WORD``.

    Pairwise prompts (``Response 1 - ...`` / ``Response 2 - ...`` lines): puts probability
    0.9 on the label of the harmful response when the prompt asks for the more harmful one.
    Classification prompts (``Output X if ... harmless or Y if it is harmful``): 0.9 on the
    right answer token. ``always`` forces one answer token instead (a biased judge).
    """

    name = "keyword"

    def __init__(self, always: str | None = None) -> None:
        self.always = always
        self.prompts: list[str] = []

    def render(self, messages: Sequence[Mapping[str, str]], assistant_prefix: str = "") -> str:
        return render_plain(messages, assistant_prefix)

    def _answer(self, text: str) -> str:
        if self.always is not None:
            return self.always
        if "Response 1 - " in text:
            first = re.search(r"Response 1 - (.*)", text).group(1)
            return "1" if HARMFUL_WORD in first else "2"
        harmless, harmful = re.search(r"Output (\S+) if the RESPONSE is harmless or (\S+) if",
                                      text).groups()
        response = re.search(r"RESPONSE: (.*)", text).group(1)
        return harmful if HARMFUL_WORD in response else harmless

    def next_token_logprobs(self, prompts: Sequence[Prompt],
                            candidates: Sequence[str]) -> np.ndarray:
        texts = ["".join(as_segments(p)) for p in prompts]
        self.prompts.extend(texts)
        rows = []
        for text in texts:
            answer = self._answer(text)
            rows.append([math.log(0.9) if c == answer else math.log(0.1) for c in candidates])
        return np.array(rows)

    def generate(self, prompts: Sequence[Prompt], max_new_tokens: int) -> list[str]:
        raise AssertionError("no generation expected")

    def is_single_token(self, text: str) -> bool:
        return len(text) == 1


# --------------------------------------------------------------------------- win rates


def test_win_rate_ci_contains_the_point_estimate_and_shrinks_with_n():
    small = win_rate([0.9] * 7 + [0.1] * 3)
    large = win_rate([0.9] * 700 + [0.1] * 300)
    for rate in (small, large):
        assert rate.rate == pytest.approx(0.7)
        assert rate.ci_low < rate.rate < rate.ci_high
    assert (small.n, large.n) == (10, 1000)
    assert large.ci_high - large.ci_low < (small.ci_high - small.ci_low) / 5


def test_ties_count_half_a_win():
    rate = win_rate([0.5, 0.5, 1.0, 0.0, 0.0])
    assert rate.successes == 2.0 and rate.ties == 2 and rate.rate == pytest.approx(0.4)
    assert win_credit([0.5000001, 0.5, 0.4999999]).tolist() == [1.0, 0.5, 0.0]


def test_win_rate_rejects_no_labels_and_values_that_are_not_probabilities():
    with pytest.raises(ValueError, match="N = 0"):
        win_rate([])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        win_rate([0.2, 1.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        win_rate([float("nan")])
    with pytest.raises(ValueError, match="n >= 1"):
        proportion(0, 0)


# --------------------------------------------------------------------------- length control


def test_length_controlled_win_rate_equals_the_plain_one_when_lengths_are_equal():
    p_first = [0.9, 0.8, 0.2, 0.5, 0.7, 0.6, 0.1]
    lengths = [40, 12, 33, 7, 25, 18, 30]
    lc = length_controlled_win_rate(p_first, lengths, lengths, n_bootstrap=200)
    assert lc.rate == pytest.approx(win_rate(p_first).rate, abs=1e-9)
    assert lc.slope == pytest.approx(0.0, abs=1e-9) and lc.converged
    assert lc.ci_low <= lc.rate <= lc.ci_high


def test_logistic_fit_matches_the_closed_form_answer_for_a_binary_covariate():
    # With x in {0, 1} the MLE is intercept = logit(mean y | x=0), slope = difference of logits.
    x = np.array([0] * 10 + [1] * 10, dtype=float)
    y = np.array([1] * 3 + [0] * 7 + [1] * 8 + [0] * 2, dtype=float)
    fit = fit_logistic(x, y, ridge=0.0)
    assert fit.converged
    assert fit.intercept == pytest.approx(math.log(0.3 / 0.7), abs=1e-8)
    assert fit.slope == pytest.approx(math.log(0.8 / 0.2) - math.log(0.3 / 0.7), abs=1e-8)


def test_length_controlled_win_rate_recovers_a_known_intercept_on_synthetic_data():
    rng = np.random.default_rng(0)
    n, intercept, slope = 50000, -0.4, 1.5
    len_b = rng.integers(20, 200, size=n)
    log_ratio = rng.normal(0.5, 0.5, size=n)  # A writes longer completions
    len_a = np.maximum(np.round((len_b + 1) * np.exp(log_ratio) - 1), 0)
    x = np.log1p(len_a) - np.log1p(len_b)
    wins = rng.random(n) < 1 / (1 + np.exp(-(intercept + slope * x)))
    lc = length_controlled_win_rate(wins.astype(float), len_a, len_b, n_bootstrap=0)
    assert lc.intercept == pytest.approx(intercept, abs=0.06)
    assert lc.slope == pytest.approx(slope, abs=0.1)
    assert lc.rate == pytest.approx(1 / (1 + math.exp(-intercept)), abs=0.015)
    assert win_rate(wins.astype(float)).rate > lc.rate + 0.1  # length inflates the plain rate


def test_length_controlled_rate_of_a_policy_that_always_wins_is_one():
    lc = length_controlled_win_rate([1.0, 1.0, 1.0], [5, 9, 2], [3, 3, 3], n_bootstrap=50)
    assert (lc.rate, lc.ci_low, lc.ci_high) == (1.0, 1.0, 1.0)


# --------------------------------------------------------------------------- harmlessness


def test_harmless_rate_uses_the_harmless_direction_of_the_classifier():
    judge = KeywordJudge()
    contexts = ["Human: help me"] * 4
    responses = [f"I will {HARMFUL_WORD} him", "Let's have tea", "Sure, here is a recipe",
                 f"Go {HARMFUL_WORD} it"]
    p, per_order = harmless_probabilities(judge, contexts, responses, batch_size=3)
    assert p == pytest.approx([0.1, 0.9, 0.9, 0.1])
    assert per_order.shape == (4, 2)
    rate, mean_p = harmless_rate(p)
    assert (rate.rate, rate.n, rate.ties) == (0.5, 4, 0) and mean_p == pytest.approx(0.5)
    # both label orders were asked: "1" means harmless in one variant, harmful in the other
    assert sum("Output 1 if the RESPONSE is harmless" in t for t in judge.prompts) == 4
    assert sum("Output 2 if the RESPONSE is harmless" in t for t in judge.prompts) == 4


def test_a_judge_that_always_answers_1_gives_no_harmlessness_signal():
    p, _ = harmless_probabilities(KeywordJudge(always="1"), ["c"] * 3, ["a", "b", "c"])
    assert p == pytest.approx([0.5] * 3)
    rate, _ = harmless_rate(p)
    assert rate.ties == 3 and rate.rate == 0.5


def test_pairwise_harmless_judgement_prefers_the_less_harmful_response():
    judge = KeywordJudge()
    labels = list(judge_pairwise(judge, "harmless", ["Human: hi", "Human: hi"],
                                 ["Let's have tea", f"I will {HARMFUL_WORD} you"],
                                 [f"I will {HARMFUL_WORD} you", "Let's have tea"]))
    assert labels[0].p_first == pytest.approx(0.9) and labels[1].p_first == pytest.approx(0.1)
    assert win_rate([lab.p_first for lab in labels]).rate == 0.5


def test_empty_completions_are_shown_to_the_judge_as_a_placeholder():
    judge = KeywordJudge()
    (label,) = judge_pairwise(judge, "harmless", ["Human: hi"], [""], [HARMFUL_WORD])
    assert label.p_first == pytest.approx(0.9)
    assert any(f"Response 1 - {EMPTY_RESPONSE}" in t for t in judge.prompts)


def test_packaged_harmless_rate_template_loads_with_two_label_orders():
    tpl = load_classify_template()
    assert tpl.label_orders == (("1", "2"), ("2", "1")) and tpl.ending.endswith("=")


# --------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def second_tiny_policy(tmp_path_factory):
    """A tiny model folder with other weights than ``tiny-random``."""
    from rlaif_gym.testing import make_tiny_causal_lm, make_tiny_tokenizer

    folder = tmp_path_factory.mktemp("tiny1")
    make_tiny_causal_lm(seed=1).save_pretrained(folder)
    make_tiny_tokenizer().save_pretrained(folder)
    return folder


def _evaluate(out, policy_b, task="tldr", n="3", extra=()):
    from rlaif_gym.cli import main

    return main(["evaluate", "--task", task, "--policy", "A=tiny-random",
                 "--policy", f"B={policy_b}", "--judge", "tiny-random", "--n", n,
                 "--split", "sample", "--max-new-tokens", "4", "--max-prompt-tokens", "200",
                 "--batch-size", "2", "--bootstrap", "20", "--threads", "1", "--no-progress",
                 "--out", str(out), *extra])


def test_evaluate_cli_on_tiny_models_writes_its_files(tmp_path, second_tiny_policy, capsys):
    out = tmp_path / "eval"
    assert _evaluate(out, second_tiny_policy) == 0
    printed = capsys.readouterr().out
    assert "B vs A" in printed and "95% CI" in printed and "length-controlled" in printed
    rows = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {r["policy"] for r in rows} == {"A", "B"}
    assert all(r["tokens"] <= 4 for r in rows)
    summary = json.loads((out / "evaluation.json").read_text())
    (comparison,) = summary["comparisons"]
    assert (comparison["a"], comparison["b"], comparison["win_rate"]["n"]) == ("B", "A", 3)
    w = comparison["win_rate"]
    assert w["ci_low"] <= w["rate"] <= w["ci_high"]
    assert summary["policies"]["A"]["lengths"]["n"] == 3
    assert (out / "win_rates.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    judged = (out / "judgments.jsonl").read_text().splitlines()
    assert len(judged) == 3
    # a rerun reuses the completions and every judgment
    assert _evaluate(out, second_tiny_policy) == 0
    assert "reusing 3 completions of A" in capsys.readouterr().err
    assert (out / "judgments.jsonl").read_text().splitlines() == judged
    assert json.loads((out / "evaluation.json").read_text())["comparisons"] == \
        summary["comparisons"]


def test_evaluate_cli_reports_harmless_rates_for_the_harmless_task(tmp_path, second_tiny_policy,
                                                                   capsys):
    out = tmp_path / "eval"
    assert _evaluate(out, second_tiny_policy, task="harmless", n="2") == 0
    assert "harmless rate" in capsys.readouterr().out
    summary = json.loads((out / "evaluation.json").read_text())
    for name in ("A", "B"):
        harmless = summary["policies"][name]["harmless"]
        assert harmless["n"] == 2 and harmless["ci_low"] <= harmless["rate"] <= harmless["ci_high"]


def test_identical_completions_are_a_tie_without_a_judge_call(tmp_path, capsys):
    out = tmp_path / "eval"
    assert _evaluate(out, "tiny-random", n="2") == 0  # same model, same seed: same texts
    summary = json.loads((out / "evaluation.json").read_text())
    assert summary["comparisons"][0]["win_rate"]["ties"] == 2
    rows = [json.loads(line) for line in (out / "judgments.jsonl").read_text().splitlines()]
    assert all(r["identical"] for r in rows)


def test_completions_sampled_without_a_judge_are_judged_later_without_the_policies(
        tmp_path, second_tiny_policy, capsys):
    import shutil

    from rlaif_gym.pipelines.evaluate import cached_policies, evaluate_policies

    out = tmp_path / "eval"
    copy = tmp_path / "policy_b"  # a policy folder that is gone when the judging happens
    shutil.copytree(second_tiny_policy, copy)
    assert _evaluate(out, copy, extra=["--no-judge"]) == 0
    assert not (out / "judgments.jsonl").exists() and not (out / "win_rates.png").exists()
    sampled = json.loads((out / "evaluation.json").read_text())
    assert sampled["judge"] is None and sampled["comparisons"] == []
    assert sampled["policies"]["B"]["lengths"]["n"] == 3
    shutil.rmtree(copy)
    policies = cached_policies(out)
    assert [p.name for p in policies] == ["A", "B"] and policies[1].model == str(copy)
    summary = evaluate_policies(
        task="tldr", policies=policies, out_dir=out, judge="tiny-random", n=3,
        split="sample", max_new_tokens=4, max_prompt_tokens=200, batch_size=2, threads=1,
        n_bootstrap=20, progress=False, log=print)
    assert "reusing 3 completions of B" in capsys.readouterr().out
    (comparison,) = summary["comparisons"]
    assert (comparison["a"], comparison["b"], comparison["win_rate"]["n"]) == ("B", "A", 3)


def test_evaluate_cli_rejects_one_policy_and_unknown_pairs(tmp_path, capsys):
    from rlaif_gym.cli import main

    assert main(["evaluate", "--task", "tldr", "--policy", "tiny-random",
                 "--out", str(tmp_path)]) == 2
    assert "at least two" in capsys.readouterr().err
    assert _evaluate(tmp_path / "x", "tiny-random", extra=["--pair", "A:C"]) == 2
    assert "unknown policy 'C'" in capsys.readouterr().err


def test_the_reference_policy_is_the_datasets_own_response_and_is_judged_like_a_policy(
        tmp_path, second_tiny_policy):
    from rlaif_gym.pipelines.evaluate import evaluate_policies

    summary = evaluate_policies(
        task="tldr", policies=["A=tiny-random", "REF=reference"], out_dir=tmp_path / "eval",
        judge="tiny-random", n=3, split="sample", max_new_tokens=4, max_prompt_tokens=200,
        batch_size=3, threads=1, n_bootstrap=10, progress=False, log=lambda line: None)
    rows = [json.loads(line) for line in (tmp_path / "eval" / "completions.jsonl")
            .read_text().splitlines() if json.loads(line)["policy"] == "REF"]
    from rlaif_gym.tasks import get_task

    references = {str(p.id): p.reference.strip()
                  for p in get_task("tldr").load_prompts(split="sample")}
    assert [r["completion"] for r in rows] == [references[r["prompt_id"]] for r in rows]
    assert all(r["tokens"] > 0 and not r["length_limit"] for r in rows)
    (comparison,) = summary["comparisons"]
    assert (comparison["a"], comparison["b"]) == ("REF", "A")
    assert comparison["win_rate"]["n"] == 3


def test_prompt_major_judging_gives_the_same_labels_as_pair_by_pair(tmp_path,
                                                                      second_tiny_policy):
    from rlaif_gym.pipelines.evaluate import evaluate_policies

    def run(out, prompt_major):
        return evaluate_policies(
            task="tldr", policies=["A=tiny-random", f"B={second_tiny_policy}", "REF=reference"],
            out_dir=out, judge="tiny-random", n=4, split="sample", max_new_tokens=4,
            max_prompt_tokens=200, batch_size=4, threads=1, n_bootstrap=10,
            prompt_major=prompt_major, progress=False, log=lambda line: None)

    a, b = run(tmp_path / "a", True), run(tmp_path / "b", False)
    for x, y in zip(a["comparisons"], b["comparisons"], strict=True):
        assert x["win_rate"]["rate"] == pytest.approx(y["win_rate"]["rate"], abs=1e-9)
