"""Judge-free evaluation signals: ROUGE-L against references, copy overlap with the post."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from rewards.evaluation import bootstrap_mean_ci, copy_overlap, overlap_words, rouge_l

# ----------------------------------------------------------------------------- bootstrap


def test_bootstrap_mean_ci_contains_the_mean_and_is_seeded():
    values = np.linspace(0.0, 1.0, 41)
    a = bootstrap_mean_ci(values, n_bootstrap=500, seed=3)
    b = bootstrap_mean_ci(values, n_bootstrap=500, seed=3)
    assert a == b
    assert a.mean == pytest.approx(0.5)
    assert a.ci_low < a.mean < a.ci_high
    assert a.n == 41 and a.level == 0.95


def test_bootstrap_mean_ci_without_resamples_is_the_mean():
    ci = bootstrap_mean_ci([1.0, 2.0, 6.0], n_bootstrap=0)
    assert ci.mean == ci.ci_low == ci.ci_high == 3.0


@pytest.mark.parametrize("values, kwargs", [([], {}), ([1.0, math.nan], {}),
                                            ([1.0], {"n_bootstrap": -1}),
                                            ([1.0], {"level": 1.0})])
def test_bootstrap_mean_ci_rejects_bad_input(values, kwargs):
    with pytest.raises(ValueError):
        bootstrap_mean_ci(values, **kwargs)


# ----------------------------------------------------------------------------- ROUGE-L

pytest.importorskip("rouge_score")


def test_rouge_l_of_identical_texts_is_one_and_of_disjoint_texts_zero():
    result = rouge_l(["The cat sat.", "dogs bark"], ["the cat sat", "a quiet evening"],
                     n_bootstrap=0)
    np.testing.assert_allclose(result.fmeasure, [1.0, 0.0])
    assert result.mean.mean == pytest.approx(0.5)


def test_rouge_l_precision_is_over_the_completion_and_recall_over_the_reference():
    # LCS("the cat sat", "the cat sat on the mat") = 3 words
    result = rouge_l(["the cat sat"], ["the cat sat on the mat"], n_bootstrap=0)
    assert result.precision[0] == pytest.approx(1.0)
    assert result.recall[0] == pytest.approx(0.5)
    assert result.fmeasure[0] == pytest.approx(2 / 3)


def test_rouge_l_stems_words_by_default():
    assert rouge_l(["cats running"], ["cat runs"], n_bootstrap=0).fmeasure[0] == 1.0
    plain = rouge_l(["cats running"], ["cat runs"], use_stemmer=False, n_bootstrap=0)
    assert plain.fmeasure[0] == 0.0


def test_rouge_l_of_an_empty_completion_is_zero():
    assert rouge_l([""], ["a reference"], n_bootstrap=0).fmeasure[0] == 0.0


def test_rouge_l_mean_has_a_bootstrap_interval_and_json_summary():
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "eps"]
    comps = [" ".join(rng.choice(words, 5)) for _ in range(30)]
    refs = [" ".join(rng.choice(words, 5)) for _ in range(30)]
    result = rouge_l(comps, refs, n_bootstrap=300, seed=1)
    assert result.mean.ci_low <= result.mean.mean <= result.mean.ci_high
    assert result.mean.ci_low < result.mean.ci_high
    summary = result.to_dict(per_item=True)
    assert summary["n"] == 30 and len(summary["per_item_fmeasure"]) == 30


def test_rouge_l_rejects_mismatched_or_empty_input():
    with pytest.raises(ValueError, match="references"):
        rouge_l(["a", "b"], ["a"])
    with pytest.raises(ValueError):
        rouge_l([], [])
    with pytest.raises(TypeError):
        rouge_l([None], ["a"])  # type: ignore[list-item]


def test_rouge_l_without_rouge_score_names_the_eval_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "rouge_score", None)
    with pytest.raises(ImportError, match=r"rlaif-gym\[eval\]"):
        rouge_l(["a"], ["a"])


# ----------------------------------------------------------------------------- copy overlap

POST = ("SUBREDDIT: r/relationships\nTITLE: My girlfriend forgot my birthday\n"
        "POST: We have been dating for two years and she forgot my birthday again.")


def test_overlap_words_lowercase_and_split_on_non_alphanumerics():
    assert overlap_words("She forgot MY b-day, again!") == ["she", "forgot", "my", "b", "day",
                                                            "again"]


def test_a_verbatim_copy_has_full_overlap():
    result = copy_overlap(["She forgot my birthday again."], [POST])
    assert result.ngram_share[0] == 1.0
    assert result.lcs_ratio[0] == 1.0
    assert result.lcs_words[0] == 5
    assert result.verbatim_rate == 1.0


def test_a_novel_summary_has_no_overlap():
    result = copy_overlap(["partner neglected an anniversary"], [POST])
    assert result.ngram_share[0] == 0.0
    assert result.lcs_ratio[0] == 0.0
    assert result.verbatim_rate == 0.0


def test_partial_copy_counts_copied_trigrams_and_the_longest_common_run():
    # words: girlfriend forgot my birthday what do i do (8 words, 6 trigrams)
    # trigrams in the post: "girlfriend forgot my", "forgot my birthday" -> 2 of 6
    # longest common run: "girlfriend forgot my birthday" = 4 words -> 4/8
    result = copy_overlap(["Girlfriend forgot my birthday, what do I do?"], [POST])
    assert result.ngram_share[0] == pytest.approx(2 / 6)
    assert result.lcs_words[0] == 4
    assert result.lcs_ratio[0] == pytest.approx(4 / 8)


def test_short_or_empty_completions_are_undefined_and_left_out_of_means():
    result = copy_overlap(["forgot", "", "she forgot my birthday"], [POST, POST, POST])
    assert np.isnan(result.ngram_share[0]) and np.isnan(result.ngram_share[1])
    assert np.isnan(result.lcs_ratio[1])
    assert result.n_defined_ngram == 1 and result.n_defined_lcs == 2
    assert result.mean_ngram_share == 1.0
    assert result.mean_lcs_ratio == 1.0
    assert result.verbatim_rate == pytest.approx(2 / 3)
    summary = result.to_dict()
    assert summary["n"] == 3 and summary["ngram_n"] == 3


def test_copy_overlap_with_no_defined_items_reports_none():
    summary = copy_overlap([""], [POST]).to_dict()
    assert summary["mean_ngram_share"] is None and summary["mean_lcs_ratio"] is None


def test_copy_overlap_unigram_order():
    result = copy_overlap(["forgot zebra"], [POST], n=1)
    assert result.ngram_share[0] == 0.5


def test_copy_overlap_rejects_bad_input():
    with pytest.raises(ValueError):
        copy_overlap(["a"], [POST], n=0)
    with pytest.raises(ValueError, match="posts"):
        copy_overlap(["a", "b"], [POST])
