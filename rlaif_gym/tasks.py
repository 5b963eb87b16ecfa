"""The three RLAIF tasks: which prompts an episode starts from and how the policy sees them.

========  =============================  ================================================
name      prompts                        the policy is asked to
========  =============================  ================================================
tldr      Reddit TL;DR posts             write a one-sentence TL;DR summary of the post
helpful   HH-RLHF helpful-base contexts  write the next assistant turn of the dialogue
harmless  HH-RLHF harmless-base contexts write the next assistant turn of the dialogue
========  =============================  ================================================

Two views of one prompt:

* :attr:`PromptRecord.text <rlaif_gym.data.records.PromptRecord>` is the plain task input
  (the formatted post, the ``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` dialogue). Reward
  functions and judges see this text.
* :meth:`Task.render_prompt` is what the *policy* sees: the task's chat messages rendered
  with the tokenizer's chat template (or a plain-text template ending in ``"TL;DR:"`` /
  ``"Assistant:"`` when the tokenizer has none), as token ids, truncated to fit
  ``max_prompt_tokens``. :meth:`Task.fit_messages` gives the (truncated) messages
  themselves, for trainers that apply the chat template on their own (TRL), and
  :meth:`Task.task_input` maps a policy prompt back to the plain task input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlaif_gym.data.loaders import format_tldr_post, load_hh, load_tldr_posts
from rlaif_gym.data.records import PromptRecord, RecordList

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "TASK_NAMES",
    "HHTask",
    "PromptTooLongError",
    "Task",
    "TldrTask",
    "get_task",
    "parse_hh_dialogue",
]

#: Instruction placed before the post in the TL;DR user message.
TLDR_INSTRUCTION = "Write a one-sentence TL;DR summary of the following Reddit post."

_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ ]?")
_ROLE_OF_SPEAKER = {"Human": "user", "Assistant": "assistant"}
_SPEAKER_OF_ROLE = {"user": "Human", "assistant": "Assistant"}


class PromptTooLongError(ValueError):
    """Even with its content removed, a prompt does not fit ``max_prompt_tokens``."""


def parse_hh_dialogue(context: str) -> list[dict[str, str]]:
    """Split an HH-RLHF dialogue ``"\\n\\nHuman: a\\n\\nAssistant: b\\n\\nHuman: c"`` into
    chat messages ``[{"role": "user", "content": "a"}, {"role": "assistant", ...}, ...]``.

    Consecutive turns of the same speaker are merged (chat templates expect alternation).
    Text before the first ``Human:``/``Assistant:`` marker is kept as a user turn.

    Raises:
        ValueError: the context contains no text at all.
    """
    pieces = _HH_TURN.split(context)
    # pieces = [preamble, speaker, text, speaker, text, ...]
    turns: list[tuple[str, str]] = []
    if pieces[0].strip():
        turns.append(("user", pieces[0].strip()))
    for speaker, text in zip(pieces[1::2], pieces[2::2], strict=True):
        turns.append((_ROLE_OF_SPEAKER[speaker], text.strip()))
    messages: list[dict[str, str]] = []
    for role, text in turns:
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] = f"{messages[-1]['content']}\n\n{text}".strip()
        else:
            messages.append({"role": role, "content": text})
    if not messages:
        raise ValueError(f"HH dialogue context has no turns: {context!r}")
    return messages


def _has_chat_template(tokenizer: PreTrainedTokenizerBase) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of ``text`` exactly as written (templates already contain any BOS)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _decode_piece(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> str:
    """Decode a truncated slice of content, dropping a broken multi-byte character at a cut."""
    return tokenizer.decode(ids, skip_special_tokens=True).strip("\ufffd")


@dataclass(frozen=True)
class Task:
    """Base class: a named task. Subclasses implement the four task-specific methods."""

    name: str

    def load_prompts(
        self, split: str = "test", data_dir: str | Path | None = None, source: str = "auto"
    ) -> RecordList[PromptRecord]:
        """Load the task's prompts (see ``rlaif_gym.data`` for ``split``/``data_dir``/
        ``source``). Returns a :class:`RecordList` of :class:`PromptRecord` whose
        ``.source`` says where the data came from."""
        raise NotImplementedError

    def policy_messages(self, record: PromptRecord) -> list[dict[str, str]]:
        """The chat messages the policy answers (the last one is a user message)."""
        raise NotImplementedError

    def plain_prompt(self, messages: list[dict[str, str]]) -> str:
        """Plain-text rendering of :meth:`policy_messages` for tokenizers without a chat
        template; ends where the policy's answer starts."""
        raise NotImplementedError

    def task_input(self, prompt: str | Sequence[Mapping[str, Any]]) -> str:
        """The plain task input (:attr:`PromptRecord.text`) behind a policy prompt: the inverse
        of :meth:`policy_messages` for chat messages, of :meth:`plain_prompt` for a string
        (a string that is not a plain prompt of this task is returned unchanged)."""
        raise NotImplementedError

    def fit_messages(
        self, record: PromptRecord, tokenizer: PreTrainedTokenizerBase, max_prompt_tokens: int
    ) -> tuple[list[dict[str, str]], list[int]]:
        """The policy's chat messages with content cut as :meth:`render_prompt` cuts it, and
        their token ids (``render_prompt``'s): with a chat template, the ids are the
        template applied to the messages (``add_generation_prompt=True``)."""
        raise NotImplementedError

    def render_prompt(
        self, record: PromptRecord, tokenizer: PreTrainedTokenizerBase, max_prompt_tokens: int
    ) -> list[int]:
        """The policy prompt as token ids, ``len(ids) <= max_prompt_tokens``.

        Uses the tokenizer's chat template with ``add_generation_prompt=True`` when it has
        one, else :meth:`plain_prompt`. Too long prompts lose content (task specific, see
        the subclass), never template tokens.

        Raises:
            PromptTooLongError: the prompt does not fit even with its content removed.
            ValueError: ``max_prompt_tokens < 1``.
        """
        return self.fit_messages(record, tokenizer, max_prompt_tokens)[1]

    # -- shared helpers ---------------------------------------------------------------------

    def _render_ids(
        self, messages: list[dict[str, str]], tokenizer: PreTrainedTokenizerBase
    ) -> list[int]:
        if _has_chat_template(tokenizer):
            text = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        else:
            text = self.plain_prompt(messages)
        return _encode(tokenizer, text)

    def _fit_content(
        self,
        build: Any,
        content: str,
        tokenizer: PreTrainedTokenizerBase,
        max_prompt_tokens: int,
        keep: str,
        record_id: str,
    ) -> tuple[list[dict[str, str]], list[int]]:
        """``build(content)`` (messages) and its ids, the content cut to fit
        ``max_prompt_tokens`` tokens by dropping content tokens from the end
        (``keep="head"``) or the start (``"tail"``)."""
        messages = build(content)
        ids = self._render_ids(messages, tokenizer)
        if len(ids) <= max_prompt_tokens:
            return messages, ids
        overhead = len(self._render_ids(build(""), tokenizer))
        if overhead > max_prompt_tokens:
            raise PromptTooLongError(
                f"task {self.name!r}, prompt {record_id!r}: the template alone takes {overhead} "
                f"tokens (with empty content), more than max_prompt_tokens={max_prompt_tokens}; "
                "raise max_prompt_tokens"
            )
        content_ids = _encode(tokenizer, content)
        budget = min(len(content_ids), max_prompt_tokens - overhead)
        while budget > 0:
            piece = content_ids[:budget] if keep == "head" else content_ids[-budget:]
            messages = build(_decode_piece(tokenizer, piece))
            ids = self._render_ids(messages, tokenizer)
            excess = len(ids) - max_prompt_tokens
            if excess <= 0:
                return messages, ids
            budget -= excess  # re-tokenization at the cut can merge differently: shrink again
        return build(""), self._render_ids(build(""), tokenizer)


def _check_max_prompt_tokens(max_prompt_tokens: int) -> None:
    if not isinstance(max_prompt_tokens, int) or max_prompt_tokens < 1:
        raise ValueError(f"max_prompt_tokens must be a positive int, got {max_prompt_tokens!r}")


@dataclass(frozen=True)
class TldrTask(Task):
    """Reddit TL;DR summarization. ``PromptRecord.text`` is the formatted post (subreddit,
    title, then the post body last); the reference is the human TL;DR."""

    def load_prompts(
        self, split: str = "test", data_dir: str | Path | None = None, source: str = "auto"
    ) -> RecordList[PromptRecord]:
        posts = load_tldr_posts(split=split, data_dir=data_dir, source=source)
        records = [
            PromptRecord(
                id=post.id,
                task=self.name,
                text=format_tldr_post(post.subreddit, post.title, post.post),
                reference=post.summary,
            )
            for post in posts
        ]
        return RecordList(records, posts.source)

    def policy_messages(self, record: PromptRecord) -> list[dict[str, str]]:
        return [{"role": "user", "content": f"{TLDR_INSTRUCTION}\n\n{record.text}"}]

    def plain_prompt(self, messages: list[dict[str, str]]) -> str:
        text = messages[-1]["content"]
        if text.startswith(TLDR_INSTRUCTION):
            text = text[len(TLDR_INSTRUCTION) :].lstrip("\n")
        return f"{text}\n\nTL;DR:"

    def task_input(self, prompt: str | Sequence[Mapping[str, Any]]) -> str:
        if isinstance(prompt, str):
            return prompt.removesuffix("\n\nTL;DR:")
        users = [m for m in prompt if m.get("role") == "user"]
        if not users:
            raise ValueError("a TL;DR prompt needs a user message")
        text = str(users[-1]["content"])
        if text.startswith(TLDR_INSTRUCTION):
            text = text[len(TLDR_INSTRUCTION) :].lstrip("\n")
        return text

    def fit_messages(
        self, record: PromptRecord, tokenizer: PreTrainedTokenizerBase, max_prompt_tokens: int
    ) -> tuple[list[dict[str, str]], list[int]]:
        """See :meth:`Task.fit_messages`. Too long posts lose the tail of
        ``record.text``, that is the end of the post body."""
        _check_max_prompt_tokens(max_prompt_tokens)

        def build(text: str) -> list[dict[str, str]]:
            return self.policy_messages(PromptRecord(record.id, record.task, text))

        return self._fit_content(
            build, record.text, tokenizer, max_prompt_tokens, keep="head", record_id=record.id
        )


@dataclass(frozen=True)
class HHTask(Task):
    """Anthropic HH-RLHF dialogue continuation (``subset`` "helpful" or "harmless").
    ``PromptRecord.text`` is the dialogue context ending with a human turn; the reference
    is the human-chosen response."""

    subset: str = "helpful"

    def load_prompts(
        self, split: str = "test", data_dir: str | Path | None = None, source: str = "auto"
    ) -> RecordList[PromptRecord]:
        pairs = load_hh(self.subset, split=split, data_dir=data_dir, source=source)
        records = [
            PromptRecord(id=pair.id, task=self.name, text=pair.context, reference=pair.chosen)
            for pair in pairs
        ]
        return RecordList(records, pairs.source)

    def policy_messages(self, record: PromptRecord) -> list[dict[str, str]]:
        return parse_hh_dialogue(record.text)

    def plain_prompt(self, messages: list[dict[str, str]]) -> str:
        turns = [f"{_SPEAKER_OF_ROLE[m['role']]}: {m['content']}" for m in messages]
        return "\n\n".join([*turns, "Assistant:"])

    def task_input(self, prompt: str | Sequence[Mapping[str, Any]]) -> str:
        if isinstance(prompt, str):
            if prompt.endswith("\n\nAssistant:") or prompt.startswith("Human:"):
                return "\n\n" + prompt.removesuffix("\n\nAssistant:")
            return prompt
        turns = [m for m in prompt if m.get("role") in _SPEAKER_OF_ROLE]
        if not turns:
            raise ValueError("an HH prompt needs user/assistant messages")
        return "".join(f"\n\n{_SPEAKER_OF_ROLE[str(m['role'])]}: {m['content']}"
                       for m in turns)

    def fit_messages(
        self, record: PromptRecord, tokenizer: PreTrainedTokenizerBase, max_prompt_tokens: int
    ) -> tuple[list[dict[str, str]], list[int]]:
        """See :meth:`Task.fit_messages`. Too long dialogues lose their oldest turns
        (the kept dialogue always starts with a user turn); if the last user turn alone is
        too long, it keeps its end."""
        _check_max_prompt_tokens(max_prompt_tokens)
        messages = self.policy_messages(record)
        while True:
            ids = self._render_ids(messages, tokenizer)
            if len(ids) <= max_prompt_tokens or len(messages) == 1:
                break
            messages = messages[1:]
            while len(messages) > 1 and messages[0]["role"] != "user":
                messages = messages[1:]
        if len(ids) <= max_prompt_tokens:
            return messages, ids
        last = messages[-1]

        def build(text: str) -> list[dict[str, str]]:
            return [{"role": last["role"], "content": text}]

        return self._fit_content(
            build, last["content"], tokenizer, max_prompt_tokens, keep="tail", record_id=record.id
        )


_TASKS: dict[str, Task] = {
    "tldr": TldrTask("tldr"),
    "helpful": HHTask("helpful", subset="helpful"),
    "harmless": HHTask("harmless", subset="harmless"),
}

#: Valid task names, in a stable order.
TASK_NAMES: tuple[str, ...] = tuple(_TASKS)


def get_task(name: str | Task) -> Task:
    """The :class:`Task` called ``name`` (``"tldr"``, ``"helpful"`` or ``"harmless"``);
    a :class:`Task` instance is returned unchanged.

    Raises:
        ValueError: an unknown name (the message lists the valid ones).
    """
    if isinstance(name, Task):
        return name
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASK_NAMES)}")
    return _TASKS[name]
