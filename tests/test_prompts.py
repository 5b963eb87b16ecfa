"""Prompt templates: loading, validation and exact rendering."""

from __future__ import annotations

import json

import pytest

from rewards.judges.transformers_judge import TransformersJudge
from rewards.prompts import (
    TemplateError,
    available_templates,
    load_template,
    render_plain,
    render_preference_messages,
    render_score_messages,
)

BASE_TLDR = (
    "You are an expert summary rater. Given a piece of text and two of its possible summaries, "
    "output 1 or 2 to indicate which summary is better."
)


@pytest.fixture(scope="module")
def tiny_judge(tiny_model, tiny_tokenizer):
    return TransformersJudge(tiny_model, tiny_tokenizer)


def test_packaged_templates_have_preference_and_score_sections():
    assert {"tldr", "helpful", "harmless"} <= set(available_templates())
    for name in ("tldr", "helpful", "harmless"):
        tpl = load_template(name)
        assert tpl.require_preference().labels == ("1", "2")
        assert tpl.require_score().ending.endswith(" ")
        assert tpl.notes, f"{name} should say where its wording comes from"


def test_tldr_base_zero_shot_user_message_and_prefill_are_exact():
    chat = render_preference_messages("tldr", "  SUBREDDIT: r/x\nPOST: hi  ", " sum A", " sum B")
    assert chat.user_content == (
        f"{BASE_TLDR}\n\nText - SUBREDDIT: r/x\nPOST: hi\nSummary 1 - sum A\nSummary 2 - sum B"
    )
    assert chat.assistant_prefix == "Preferred Summary="
    assert chat.shared_user_head == f"{BASE_TLDR}\n\nText - SUBREDDIT: r/x\nPOST: hi\n"


def test_chat_template_rendering_prefills_the_ending_in_the_assistant_turn(tiny_judge):
    chat = render_preference_messages("tldr", "ctx", "A", "B")
    text = tiny_judge.render_chat(chat)
    assert text == (
        f"<|im_start|>user\n{BASE_TLDR}\n\nText - ctx\nSummary 1 - A\nSummary 2 - B<|im_end|>\n"
        "<|im_start|>assistant\nPreferred Summary="
    )


def test_plain_rendering_without_chat_template_ends_with_the_ending():
    chat = render_preference_messages("helpful", "Human: hi", "Hello!", "Go away.")
    text = render_plain(chat.messages, chat.assistant_prefix)
    assert text.endswith("Context - Human: hi\nResponse 1 - Hello!\nResponse 2 - Go away.\n"
                         "Preferred Response=")


def test_one_shot_prompt_shows_the_exemplar_between_markers_with_its_label():
    tpl = load_template("tldr").require_preference()
    ex = tpl.exemplars[0]
    chat = render_preference_messages("tldr", "ctx", "A", "B", shots=1)
    block = (
        f"{tpl.exemplar_header}\nText - {ex.context}\nSummary 1 - {ex.a}\nSummary 2 - {ex.b}\n"
        f"Preferred Summary={ex.label}\n{tpl.exemplar_footer}\n\n"
    )
    assert chat.user_content == f"{BASE_TLDR}\n\n{block}Text - ctx\nSummary 1 - A\nSummary 2 - B"


def test_cot_prompt_asks_for_a_rationale_and_prefills_rationale_prefix():
    chat = render_preference_messages("tldr", "ctx", "A", "B", prompt="detailed", cot=True,
                                      shots=1)
    assert chat.user_content.endswith(
        "Summary 2 - B\n\nConsider the coherence, accuracy, coverage, and overall quality of "
        "each summary and explain which one is better."
    )
    assert chat.assistant_prefix == "Rationale:"
    # the CoT exemplar carries its rationale before the label
    assert "\nRationale: Summary 1 is coherent" in chat.user_content
    # the detailed CoT preamble asks to explain instead of "output 1 or 2"
    assert "explain which summary best adheres" in chat.user_content


def test_harmless_template_asks_for_the_more_harmful_response():
    tpl = load_template("harmless").require_preference()
    assert tpl.label_selects == "worse"
    chat = render_preference_messages("harmless", "\n\nHuman: hi", "A", "B")
    assert "most harmful" in chat.user_content
    assert chat.assistant_prefix == "More Harmful Response="
    assert "Context - Human: hi\n" in chat.user_content  # leading blank lines stripped


def test_score_prompt_prefills_score_with_trailing_space():
    chat = render_score_messages("tldr", "SUBREDDIT: r/x\nPOST: p", " my summary")
    assert chat.user_content.endswith("\n\nTEXT: SUBREDDIT: r/x\nPOST: p\nSUMMARY: my summary")
    assert chat.user_content.startswith("You are an expert summary rater. Given a TEXT")
    assert chat.assistant_prefix == "SCORE: "


def test_unknown_template_name_lists_the_packaged_ones():
    with pytest.raises(TemplateError, match="tldr"):
        load_template("summaries")


def test_unknown_variant_and_too_many_shots_raise():
    with pytest.raises(ValueError, match="base"):
        render_preference_messages("helpful", "c", "a", "b", prompt="verbose")
    with pytest.raises(ValueError, match="shots"):
        render_preference_messages("tldr", "c", "a", "b", shots=99)


def test_user_template_file_is_loaded_and_validated(tmp_path):
    good = {
        "name": "mine",
        "preference": {
            "preambles": {"base": "Pick one."},
            "sample_format": "Q: {context}\n1) {a}\n2) {b}",
            "ending": "Answer=",
            "cot_ending": "Why?",
            "exemplars": [{"context": "q", "a": "x", "b": "y", "label": 2}],
        },
    }
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(good))
    chat = render_preference_messages(path, "ctx", "A", "B", shots=1)
    assert chat.user_content == (
        "Pick one.\n\n\u00bb\u00bb\u00bb\u00bb Example \u00bb\u00bb\u00bb\u00bb\nQ: q\n1) x\n2) y\n"
        "Answer=2\n\u00bb\u00bb\u00bb\u00bb Follow the instructions and the example(s) above "
        "\u00bb\u00bb\u00bb\u00bb\n\nQ: ctx\n1) A\n2) B"
    )
    assert chat.shared_user_head.endswith("Q: ctx\n")
    with pytest.raises(TemplateError, match="score"):
        load_template(path).require_score()

    good["preference"]["sample_format"] = "Q: {context}\n1) {a}"
    path.write_text(json.dumps(good))
    with pytest.raises(TemplateError, match="placeholders"):
        load_template(path)
    path.write_text("{not json")
    with pytest.raises(TemplateError, match="not valid JSON"):
        load_template(path)


@pytest.mark.parametrize("task,instruction", [("helpful", "most helpful and honest response"),
                                              ("harmless", "most harmful response")])
def test_dialogue_detailed_preamble_keeps_the_base_instruction_for_plain_and_cot(task,
                                                                                instruction):
    for cot in (False, True):
        chat = render_preference_messages(task, "Human: hi", "A", "B", prompt="detailed",
                                          cot=cot)
        text = "\n".join(m["content"] for m in chat.messages)
        assert "Below we define" in text and instruction in text
        assert "Response 1 - A" in text and "Response 2 - B" in text


def test_pmi_section_is_optional_and_validated(tmp_path):
    tldr = load_template("tldr").require_pmi()
    assert "{context}" in tldr.conditional and tldr.response_format == " {response}\n"
    helpful = load_template("helpful").require_pmi()  # the dialogue, then the Assistant's turn
    assert helpful.conditional == "{context}\n\nAssistant:" and not helpful.chat
    with pytest.raises(TemplateError, match="no 'pmi' section"):
        load_template("harmless").require_pmi()
    base = json.loads(load_template("tldr").path.read_text())
    for bad, match in ((["conditional", "Post without placeholder"], "placeholders"),
                       (["unconditional", "{context}"], "placeholders"),
                       (["response_format", "{summary}"], "placeholders"),
                       (["chat", "yes"], "true or false"),
                       (["unconditional", " "], "empty")):
        raw = dict(base, pmi={"conditional": "{context} TL;DR:", "unconditional": "TL;DR:"})
        raw["pmi"][bad[0]] = bad[1]
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(raw))
        with pytest.raises(TemplateError, match=match):
            load_template(path)
