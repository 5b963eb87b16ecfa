"""Tasks: prompt loading, policy messages, rendering and truncation to max_prompt_tokens."""

from __future__ import annotations

import pytest

from rlaif_gym.data.records import PromptRecord
from rlaif_gym.tasks import (
    TASK_NAMES,
    TLDR_INSTRUCTION,
    PromptTooLongError,
    get_task,
    parse_hh_dialogue,
)
from rlaif_gym.testing import make_tiny_tokenizer

DIALOGUE = (
    "\n\nHuman: What is the capital of France?\n\nAssistant: Paris."
    "\n\nHuman: And of Italy?"
)


def decode(tokenizer, ids):
    return tokenizer.decode(ids)


def test_get_task_knows_the_three_tasks_and_lists_them_on_error():
    assert TASK_NAMES == ("tldr", "helpful", "harmless")
    assert get_task("harmless").subset == "harmless"
    assert get_task(get_task("tldr")) is get_task("tldr")
    with pytest.raises(ValueError, match="valid tasks: tldr, helpful, harmless"):
        get_task("summarize")


def test_parse_hh_dialogue_turns_become_alternating_chat_messages():
    assert parse_hh_dialogue(DIALOGUE) == [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Italy?"},
    ]
    merged = parse_hh_dialogue("\n\nHuman: a\n\nHuman: b\n\nAssistant: c")
    assert merged == [{"role": "user", "content": "a\n\nb"},
                      {"role": "assistant", "content": "c"}]
    with pytest.raises(ValueError, match="no turns"):
        parse_hh_dialogue("   ")


def test_tldr_policy_message_asks_for_a_tldr_of_the_post():
    record = PromptRecord("x", "tldr", "SUBREDDIT: r/a\nTITLE: t\nPOST: body")
    (message,) = get_task("tldr").policy_messages(record)
    assert message["role"] == "user"
    assert message["content"] == f"{TLDR_INSTRUCTION}\n\n{record.text}"
    assert "one-sentence TL;DR" in message["content"]


def test_render_uses_the_chat_template_with_a_generation_prompt():
    tok = make_tiny_tokenizer()
    record = PromptRecord("x", "helpful", DIALOGUE)
    text = decode(tok, get_task("helpful").render_prompt(record, tok, 512))
    assert text.startswith("<|im_start|>user\nWhat is the capital of France?<|im_end|>")
    assert text.endswith("<|im_start|>user\nAnd of Italy?<|im_end|>\n<|im_start|>assistant\n")


def test_plain_text_templates_end_where_the_answer_starts():
    tok = make_tiny_tokenizer(chat_template=False)
    tldr = PromptRecord("x", "tldr", "SUBREDDIT: r/a\nTITLE: t\nPOST: body")
    assert decode(tok, get_task("tldr").render_prompt(tldr, tok, 512)) == (
        "SUBREDDIT: r/a\nTITLE: t\nPOST: body\n\nTL;DR:"
    )
    hh = PromptRecord("y", "harmless", DIALOGUE)
    assert decode(tok, get_task("harmless").render_prompt(hh, tok, 512)) == (
        "Human: What is the capital of France?\n\nAssistant: Paris.\n\n"
        "Human: And of Italy?\n\nAssistant:"
    )


@pytest.mark.parametrize("chat_template", [True, False])
def test_long_tldr_post_loses_its_tail_and_fits(chat_template):
    tok = make_tiny_tokenizer(chat_template=chat_template)
    record = PromptRecord("x", "tldr", "SUBREDDIT: r/a\nTITLE: t\nPOST: " + "abcdefgh " * 200)
    ids = get_task("tldr").render_prompt(record, tok, 200)
    assert 190 <= len(ids) <= 200
    text = decode(tok, ids)
    assert "TITLE: t\nPOST: abcdefgh" in text
    assert text.endswith("<|im_start|>assistant\n" if chat_template else "\n\nTL;DR:")


def test_long_hh_dialogue_drops_oldest_turns_and_starts_with_a_user_turn():
    tok = make_tiny_tokenizer()
    turns = "".join(f"\n\nHuman: question {i}?\n\nAssistant: answer {i}." for i in range(20))
    record = PromptRecord("x", "helpful", turns + "\n\nHuman: last question?")
    ids = get_task("helpful").render_prompt(record, tok, 150)
    assert len(ids) <= 150
    text = decode(tok, ids)
    assert text.startswith("<|im_start|>user\nquestion")
    assert "question 0?" not in text and "answer 19." in text
    assert text.endswith("last question?<|im_end|>\n<|im_start|>assistant\n")


def test_a_single_too_long_hh_turn_keeps_its_end():
    tok = make_tiny_tokenizer()
    record = PromptRecord("x", "helpful", "\n\nHuman: " + "blah " * 100 + "the real question?")
    ids = get_task("helpful").render_prompt(record, tok, 80)
    assert len(ids) <= 80
    assert decode(tok, ids).endswith("the real question?<|im_end|>\n<|im_start|>assistant\n")


def test_prompt_too_long_even_without_content_raises_a_clear_error():
    tok = make_tiny_tokenizer()
    record = PromptRecord("x", "tldr", "SUBREDDIT: r/a\nTITLE: t\nPOST: body")
    with pytest.raises(PromptTooLongError, match="template alone takes"):
        get_task("tldr").render_prompt(record, tok, 20)
    with pytest.raises(ValueError, match="max_prompt_tokens"):
        get_task("tldr").render_prompt(record, tok, 0)


@pytest.mark.parametrize("task", TASK_NAMES)
def test_load_prompts_gives_prompt_records_with_their_source(task):
    records = get_task(task).load_prompts(split="sample")
    assert len(records) > 0
    assert str(records.source).startswith("sample")
    first = records[0]
    assert isinstance(first, PromptRecord) and first.task == task
    assert first.text and first.reference
    if task == "tldr":
        assert first.text.startswith("SUBREDDIT: r/")
    else:
        assert first.text.lstrip().startswith("Human:")


def test_load_prompts_reads_the_real_data_folder(shared_data_dir):
    records = get_task("harmless").load_prompts(data_dir=shared_data_dir)
    assert len(records) == 2312
    assert records.source.kind == "local"
