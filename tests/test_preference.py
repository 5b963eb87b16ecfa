"""AI preference labels: order averaging, harmless flipping, CoT, shared prefix, errors."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest

from rewards.judges.base import Judge, JudgeError, Prompt, as_segments
from rewards.judges.transformers_judge import TransformersJudge
from rewards.preference import PreferenceLabel, label_pairs
from rewards.prompts import TemplateError, load_template, render_plain
from rlaif_gym.data.records import PreferencePair

ALPHA, BETA = "ALPHA response", "BETA response"


class FakeJudge(Judge):
    """Returns programmed log P("1"), log P("2") depending on which response is shown first
    (found by position in the rendered text); records every call."""

    name = "fake"

    def __init__(self, logp_alpha_first: Sequence[float], logp_beta_first: Sequence[float],
                 rationale: str = " Because reasons.") -> None:
        self.table = {"alpha": np.array(logp_alpha_first), "beta": np.array(logp_beta_first)}
        self.rationale = rationale
        self.calls: list[tuple[str, object]] = []

    def render(self, messages: Sequence[Mapping[str, str]], assistant_prefix: str = "") -> str:
        return "[chat]" + render_plain(messages, assistant_prefix)

    def _order(self, text: str) -> str:
        return "alpha" if text.rindex(ALPHA) < text.rindex(BETA) else "beta"

    def next_token_logprobs(self, prompts: Sequence[Prompt],
                            candidates: Sequence[str]) -> np.ndarray:
        assert list(candidates) == ["1", "2"]
        texts = ["".join(as_segments(p)) for p in prompts]
        self.calls.append(("plain", texts))
        return np.stack([self.table[self._order(t)] for t in texts])

    def next_token_logprobs_shared_prefix(self, prefix, suffixes, candidates):
        self.calls.append(("shared", (prefix, list(suffixes))))
        return np.stack([self.table[self._order(prefix + s)] for s in suffixes])

    def generate(self, prompts: Sequence[Prompt], max_new_tokens: int) -> list[str]:
        self.calls.append(("generate", list(prompts)))
        return [self.rationale + "\nPreferred Summary=2 and more"] * len(prompts)

    def is_single_token(self, text: str) -> bool:
        return len(text) == 1


def _pair(task: str = "tldr", pid: str = "p1", context: str = "SUBREDDIT: r/x\nPOST: post",
          responses: tuple[str, str] = (ALPHA, BETA)) -> PreferencePair:
    return PreferencePair(id=pid, task=task, context=context, responses=responses,
                          human_choice=0, confidence=8)


# P("1") = 0.8 / 0.9 when ALPHA is shown first, P("1") = 0.3 / 0.9 when BETA is shown first.
LOGP_ALPHA_FIRST = [math.log(0.8), math.log(0.1)]
LOGP_BETA_FIRST = [math.log(0.3), math.log(0.6)]


def test_both_orders_are_scored_and_averaged():
    judge = FakeJudge(LOGP_ALPHA_FIRST, LOGP_BETA_FIRST)
    (label,) = label_pairs(judge, [_pair()], progress=False)
    assert label.p_order_ab == pytest.approx(8 / 9, abs=1e-12)
    assert label.p_order_ba == pytest.approx(2 / 3, abs=1e-12)  # 1 - P("1") with BETA first
    assert label.p_first == pytest.approx((8 / 9 + 2 / 3) / 2, abs=1e-12)
    assert (label.id, label.task, label.human_choice, label.confidence) == ("p1", "tldr", 0, 8)
    assert (label.prompt, label.cot, label.shots, label.judge) == ("base", False, 0, "fake")
    assert label.rationales is None and label.ai_choice == 0


def test_harmless_label_is_flipped_into_a_harmlessness_preference():
    judge = FakeJudge(LOGP_ALPHA_FIRST, LOGP_BETA_FIRST)
    (label,) = label_pairs(judge, [_pair("harmless", context="Human: hi")], progress=False)
    # ALPHA first: P(ALPHA more harmful) = 8/9 -> P(ALPHA preferred) = 1/9.
    assert label.p_order_ab == pytest.approx(1 / 9, abs=1e-12)
    # BETA first: P(BETA more harmful) = 1/3 -> P(ALPHA more harmful) = 2/3 -> preferred 1/3.
    assert label.p_order_ba == pytest.approx(1 / 3, abs=1e-12)
    assert label.p_first == pytest.approx(2 / 9, abs=1e-12)
    assert label.ai_choice == 1


def test_non_cot_uses_shared_prefix_holding_the_context_but_no_response():
    judge = FakeJudge(LOGP_ALPHA_FIRST, LOGP_BETA_FIRST)
    list(label_pairs(judge, [_pair()], progress=False))
    ((kind, (prefix, suffixes)),) = judge.calls
    assert kind == "shared"
    assert prefix.startswith("[chat]You are an expert summary rater.")
    assert prefix.endswith("Text - SUBREDDIT: r/x\nPOST: post\n")
    assert suffixes[0] == f"Summary 1 - {ALPHA}\nSummary 2 - {BETA}\nPreferred Summary="
    assert suffixes[1] == f"Summary 1 - {BETA}\nSummary 2 - {ALPHA}\nPreferred Summary="


def test_cot_generates_rationales_then_scores_them_with_the_ending():
    judge = FakeJudge(LOGP_ALPHA_FIRST, LOGP_BETA_FIRST)
    labels = list(label_pairs(judge, [_pair(), _pair(pid="p2")], cot=True, prompt="detailed",
                              cot_max_tokens=7, batch_size=2, progress=False))
    assert [lab.id for lab in labels] == ["p1", "p2"]
    (gen_kind, step1), (score_kind, step2) = judge.calls
    assert gen_kind == "generate" and len(step1) == 4
    assert step1[0].endswith("explain which one is better.\nRationale:")
    assert score_kind == "plain"
    # the rationale is cut where the model starts writing the ending itself
    assert labels[0].rationales == (" Because reasons.", " Because reasons.")
    assert step2[0] == step1[0] + " Because reasons.\nPreferred Summary="
    assert labels[0].p_first == pytest.approx((8 / 9 + 2 / 3) / 2, abs=1e-12)
    assert labels[0].cot and labels[0].prompt == "detailed"


def test_empty_response_or_context_raises_naming_the_pair_before_any_call():
    judge = FakeJudge(LOGP_ALPHA_FIRST, LOGP_BETA_FIRST)
    bad = [_pair(pid="ok"), _pair(pid="bad-42", responses=(ALPHA, "   "))]
    with pytest.raises(ValueError, match="bad-42"):
        list(label_pairs(judge, bad, progress=False))
    with pytest.raises(ValueError, match="empty context"):
        list(label_pairs(judge, [_pair(pid="c", context="\n")], progress=False))
    assert judge.calls == []


def test_unknown_variant_raises():
    judge = FakeJudge(LOGP_ALPHA_FIRST, LOGP_BETA_FIRST)
    with pytest.raises(ValueError, match="prompt variant"):
        list(label_pairs(judge, [_pair("helpful")], prompt="verbose", progress=False))


def test_labels_are_yielded_one_by_one():
    judge = FakeJudge(LOGP_ALPHA_FIRST, LOGP_BETA_FIRST)
    it = label_pairs(judge, [_pair(pid=str(i)) for i in range(3)], progress=False)
    assert next(it).id == "0"
    assert len(judge.calls) == 1  # only the first pair has been scored


def test_label_json_round_trip():
    label = PreferenceLabel("x", "tldr", 0.7, 0.8, 0.6, 1, None, "base", True, 1, "j",
                            ("r ab", "r ba"))
    assert PreferenceLabel.from_json(label.to_json()) == label
    assert PreferenceLabel.from_json(label.to_dict()) == label
    with pytest.raises(ValueError, match="unknown"):
        PreferenceLabel.from_json({**label.to_dict(), "extra": 1})


def test_label_records_the_judge_dtype_and_reads_labels_written_without_it(
    tiny_model, tiny_tokenizer
):
    judge = TransformersJudge(tiny_model, tiny_tokenizer, dtype="float32")
    (label,) = label_pairs(judge, [_pair()], progress=False)
    assert label.dtype == "float32" == judge.weights_dtype
    assert json.loads(label.to_json())["dtype"] == "float32"
    old = {k: v for k, v in label.to_dict().items() if k != "dtype"}
    assert PreferenceLabel.from_json(old).dtype is None
    assert FakeJudge(LOGP_ALPHA_FIRST, LOGP_BETA_FIRST).weights_dtype is None


def test_tiny_model_label_matches_plain_scoring(tiny_model, tiny_tokenizer):
    judge = TransformersJudge(tiny_model, tiny_tokenizer)
    pair = _pair(responses=(" A short summary.", " Another, longer summary of the post."))
    (label,) = label_pairs(judge, [pair], progress=False, shots=1)
    from rewards.normalization import preference_from_logprobs
    from rewards.prompts import render_preference_messages

    texts = [
        judge.render_chat(render_preference_messages("tldr", pair.context, a, b, shots=1))
        for a, b in (pair.responses, pair.responses[::-1])
    ]
    lp = judge.next_token_logprobs(texts, ["1", "2"])
    p1 = preference_from_logprobs(lp[:, 0], lp[:, 1])
    assert label.p_order_ab == pytest.approx(p1[0], abs=1e-5)
    assert label.p_order_ba == pytest.approx(1 - p1[1], abs=1e-5)
    assert 0.0 <= label.p_first <= 1.0


def test_cot_runs_with_the_tiny_model(tiny_model, tiny_tokenizer):
    judge = TransformersJudge(tiny_model, tiny_tokenizer, batch_size=4)
    pairs = [_pair(pid="a"), _pair("helpful", pid="b", context="Human: hello?")]
    labels = list(label_pairs(judge, pairs, cot=True, cot_max_tokens=4, progress=False))
    assert [lab.id for lab in labels] == ["a", "b"]
    for lab in labels:
        assert 0.0 <= lab.p_first <= 1.0 and np.isfinite(lab.p_first)
        assert lab.cot and isinstance(lab.rationales, tuple) and len(lab.rationales) == 2


@pytest.mark.slow
def test_real_judge_prefix_reuse_matches_plain_labels(shared_data_dir):
    """The packaged 0.5B judge in float32: both paths give the same soft labels."""
    from rewards.judges import load_judge
    from rewards.normalization import preference_from_logprobs
    from rewards.prompts import render_preference_messages
    from rlaif_gym.data import load_preference_pairs

    try:
        judge = load_judge("qwen2.5-coder-0.5b-instruct", dtype="float32", num_threads=1)
    except (FileNotFoundError, ImportError, ValueError) as exc:
        pytest.skip(f"packaged judge not available: {exc}")
    pairs = load_preference_pairs("tldr", data_dir=shared_data_dir, high_confidence=True,
                                  source="local", limit=2)
    for label, pair in zip(label_pairs(judge, pairs, progress=False), pairs, strict=True):
        texts = [
            judge.render_chat(render_preference_messages("tldr", pair.context, a, b))
            for a, b in (pair.responses, pair.responses[::-1])
        ]
        lp = judge.next_token_logprobs(texts, ["1", "2"])
        p1 = preference_from_logprobs(lp[:, 0], lp[:, 1])
        assert label.p_order_ab == pytest.approx(p1[0], abs=1e-4)
        assert label.p_order_ba == pytest.approx(1 - p1[1], abs=1e-4)


def test_pointwise_label_is_the_sigmoid_of_the_expected_score_difference(tiny_model,
                                                                        tiny_tokenizer):
    from rewards.direct import direct_scores

    judge = TransformersJudge(tiny_model, tiny_tokenizer)
    pairs = [_pair(pid="a", responses=(" A short summary.", " Another, longer one.")),
             _pair(pid="b", responses=(" Another, longer one.", " A short summary."))]
    labels = list(label_pairs(judge, pairs, prompt="pointwise", progress=False))
    scores = direct_scores(judge, "tldr", [pairs[0].context] * 2, list(pairs[0].responses))
    p = 1.0 / (1.0 + math.exp(-(scores.expected[0] - scores.expected[1])))
    assert labels[0].p_first == pytest.approx(p, abs=1e-5)
    assert labels[0].p_order_ab == labels[0].p_order_ba == labels[0].p_first
    assert labels[1].p_first == pytest.approx(1.0 - p, abs=1e-5)  # same responses swapped
    assert (labels[0].prompt, labels[0].cot, labels[0].shots) == ("pointwise", False, 0)


class CountingScoreJudge(FakeJudge):
    """Rates ALPHA 9 and BETA 2 with certainty; counts score prompts."""

    def __init__(self) -> None:
        super().__init__(LOGP_ALPHA_FIRST, LOGP_BETA_FIRST)
        self.scored: list[str] = []

    def next_token_logprobs(self, prompts, candidates):
        rows = []
        for prompt in prompts:
            segments = as_segments(prompt)
            if segments[-1] == "1":  # P("0" | "1") for the score 10
                rows.append([math.log(0.5)] * len(candidates))
                continue
            text = "".join(segments)
            self.scored.append(text)
            best = "9" if ALPHA in text else "2"
            rows.append([0.0 if c == best else -1e9 for c in candidates])
        return np.array(rows)


def test_pointwise_scores_each_distinct_response_once_and_prefers_the_higher_score():
    judge = CountingScoreJudge()
    pairs = [_pair(pid=str(k), responses=(ALPHA, BETA) if k % 2 else (BETA, ALPHA))
             for k in range(5)]
    labels = list(label_pairs(judge, pairs, prompt="pointwise", batch_size=2, progress=False))
    assert len(judge.scored) == 2  # one context, two distinct responses, cached across chunks
    for k, lab in enumerate(labels):
        expected = 1.0 / (1.0 + math.exp(-7.0))
        assert lab.p_first == pytest.approx(expected if k % 2 else 1.0 - expected, abs=1e-9)


def test_pointwise_refuses_cot_and_shots_before_any_call():
    judge = CountingScoreJudge()
    for kwargs in ({"cot": True}, {"shots": 1}):
        with pytest.raises(ValueError, match="pointwise"):
            list(label_pairs(judge, [_pair()], prompt="pointwise", progress=False, **kwargs))
    assert judge.scored == [] and judge.calls == []


# --------------------------------------------------------------------------- PMI labels


def test_pmi_label_is_the_sigmoid_of_the_mutual_information_difference(tiny_model,
                                                                       tiny_tokenizer):
    judge = TransformersJudge(tiny_model, tiny_tokenizer)
    tpl = load_template("tldr").require_pmi()
    pairs = [_pair(pid="a", responses=(" A short summary.", " Another, longer one.")),
             _pair(pid="b", responses=(" Another, longer one.", " A short summary."))]
    labels = list(label_pairs(judge, pairs, prompt="pmi", progress=False))
    conts = [tpl.response_format.format(response=r.strip()) for r in pairs[0].responses]
    cond = judge.continuation_logprobs(tpl.conditional.format(context=pairs[0].context), conts)
    uncond = judge.continuation_logprobs(tpl.unconditional, conts)
    pmi = cond - uncond
    p = 1.0 / (1.0 + math.exp(-(pmi[0] - pmi[1])))
    assert labels[0].p_first == pytest.approx(p, abs=1e-5)
    assert labels[0].p_order_ab == labels[0].p_order_ba == labels[0].p_first
    assert labels[1].p_first == pytest.approx(1.0 - p, abs=1e-5)
    assert (labels[0].prompt, labels[0].cot, labels[0].shots) == ("pmi", False, 0)


class LikelihoodJudge(FakeJudge):
    """log P(response | prompt): ALPHA is likely after a prompt holding the context "ctx-A",
    BETA after "ctx-B"; both are equally likely without context. Records every call."""

    def __init__(self) -> None:
        super().__init__(LOGP_ALPHA_FIRST, LOGP_BETA_FIRST)
        self.scored: list[tuple[str, list[str]]] = []

    def continuation_logprobs(self, prefix, continuations):
        self.scored.append((prefix, list(continuations)))
        out = []
        for cont in continuations:
            fits = ("ctx-A" in prefix and ALPHA in cont) or ("ctx-B" in prefix and BETA in cont)
            out.append(-1.0 if fits else (-5.0 if "ctx-" in prefix else -3.0))
        return np.array(out)


def test_pmi_prefers_the_response_the_context_explains_and_scores_each_prompt_once():
    judge = LikelihoodJudge()
    pairs = [_pair(pid=f"{ctx}{k}", context=f"POST: {ctx}",
                   responses=(ALPHA, BETA) if k % 2 else (BETA, ALPHA))
             for ctx in ("ctx-A", "ctx-B") for k in range(3)]
    labels = list(label_pairs(judge, pairs, prompt="pmi", batch_size=2, progress=False))
    expected = 1.0 / (1.0 + math.exp(-4.0))  # pmi difference (-1 + 3) - (-5 + 3) = 4 nats
    for pair, lab in zip(pairs, labels, strict=True):
        alpha_first = pair.responses[0] == ALPHA
        prefers_first = alpha_first == ("ctx-A" in pair.context)
        assert lab.p_first == pytest.approx(expected if prefers_first else 1 - expected)
    # each context with its two responses once, the context-free prompt once per response
    prompts = [prefix for prefix, _ in judge.scored]
    assert sum("ctx-A" in p for p in prompts) == 1 and sum("ctx-B" in p for p in prompts) == 1
    assert sum(len(conts) for _, conts in judge.scored) == 6
    assert "ctx-" not in judge.scored[0][0]  # context-free first: contexts stay in the memo
    assert "ctx-B" in judge.scored[-1][0]
    assert not any(c == "chat" for c, _ in judge.calls)


def test_pmi_chat_template_wraps_both_prompts_as_user_turns(tmp_path):
    raw = json.loads((Path(load_template("tldr").path)).read_text())
    raw["pmi"] = {"conditional": "Post: {context}", "unconditional": "A post.", "chat": True,
                  "response_format": "{response}"}
    path = tmp_path / "chat_pmi.json"
    path.write_text(json.dumps(raw))
    judge = LikelihoodJudge()
    list(label_pairs(judge, [_pair(context="ctx-A")], prompt="pmi", template=path,
                     progress=False))
    prefixes = sorted(prefix for prefix, _ in judge.scored)
    assert [p.rstrip("\n") for p in prefixes] == ["[chat]A post.", "[chat]Post: ctx-A"]
    assert {c for _, conts in judge.scored for c in conts} == {ALPHA, BETA}


def test_pmi_refuses_cot_shots_a_template_without_pmi_and_a_judge_without_likelihoods(
        tmp_path):
    judge = LikelihoodJudge()
    for kwargs in ({"cot": True}, {"shots": 1}):
        with pytest.raises(ValueError, match="pmi"):
            list(label_pairs(judge, [_pair()], prompt="pmi", progress=False, **kwargs))
    raw = json.loads((Path(load_template("tldr").path)).read_text())
    del raw["pmi"]
    path = tmp_path / "no_pmi.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(TemplateError, match="no 'pmi' section"):
        list(label_pairs(judge, [_pair()], prompt="pmi", template=path, progress=False))
    assert judge.scored == [] and judge.calls == []
    with pytest.raises(JudgeError, match="cannot score continuations"):
        list(label_pairs(FakeJudge(LOGP_ALPHA_FIRST, LOGP_BETA_FIRST), [_pair()],
                         prompt="pmi", progress=False))
