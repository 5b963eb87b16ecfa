"""The :class:`Judge` interface: what preference labeling and direct scoring need from an LLM.

Everything above this layer (``rewards.preference``, ``rewards.direct``) works on rendered
TEXT prompts and a handful of primitives, so a backend only has to implement:

* :meth:`Judge.render` - chat messages + assistant prefix -> one prompt string,
* :meth:`Judge.next_token_logprobs` - log P(candidate token | prompt) under the full
  vocabulary softmax, shape ``(n_prompts, n_candidates)``,
* :meth:`Judge.generate` - greedy continuations (chain-of-thought rationales),
* :meth:`Judge.is_single_token` - whether a string is one token in the judge's vocabulary.

:meth:`Judge.continuation_logprobs` (the log-likelihood of a text after a prefix) is optional:
the default raises :class:`JudgeError`, the transformers backend implements it.

:meth:`Judge.next_token_logprobs_shared_prefix` and :meth:`Judge.next_token_logprobs_two_step`
have default implementations on top of :meth:`next_token_logprobs`; a backend overrides them
when it can do better (reusing a KV cache, reading two positions of one forward pass).

A *prompt* is either a string or a sequence of text SEGMENTS. Segments are tokenized one by
one and the token ids concatenated, so ``(prefix, suffix)`` gives exactly the same token ids
whether it goes through the plain path or the shared-prefix path (tokenizing
``prefix + suffix`` jointly could merge tokens across the boundary).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from rewards.judges.stats import JudgeStats

if TYPE_CHECKING:
    from rewards.judges.verdict_cache import VerdictCache
    from rewards.prompts import ChatPrompt

__all__ = ["Judge", "JudgeError", "Prompt", "TokenizerJudge", "as_segments"]

#: A prompt: one string, or text segments tokenized separately and concatenated.
Prompt = str | Sequence[str]


class JudgeError(ValueError):
    """A judge cannot answer the request (bad candidate, bad prompt, bad output)."""


def as_segments(prompt: Prompt) -> tuple[str, ...]:
    """``prompt`` as a non-empty tuple of string segments.

    Raises:
        TypeError: not a string or a sequence of strings.
        JudgeError: no segments, or all segments empty.
    """
    if isinstance(prompt, str):
        segments: tuple[str, ...] = (prompt,)
    elif isinstance(prompt, Sequence) and not isinstance(prompt, (bytes, bytearray)):
        segments = tuple(prompt)
        bad = [type(s).__name__ for s in segments if not isinstance(s, str)]
        if bad:
            raise TypeError(f"prompt segments must be str, got {bad}")
    else:
        raise TypeError(
            f"a prompt must be a str or a sequence of str segments, got {type(prompt).__name__}"
        )
    if not any(segments):
        raise JudgeError("empty prompt: a judge needs at least one character of context")
    return segments


class Judge(ABC):
    """An LLM used as an AI labeler. Subclasses set :attr:`name` and implement the four
    abstract primitives."""

    #: Human-readable id of the judge model (recorded in preference labels).
    name: str = "judge"
    #: The :class:`~rewards.judges.verdict_cache.VerdictCache` attached by
    #: :func:`~rewards.judges.verdict_cache.attach_verdict_cache` (None: no cache).
    verdict_cache: VerdictCache | None = None

    @property
    def stats(self) -> JudgeStats:
        """Running counters of this judge (calls, prompt tokens, cache hits, retries, waits;
        see :mod:`rewards.judges.stats`). Created on first access."""
        stats = self.__dict__.get("_stats")
        if stats is None:
            stats = self.__dict__.setdefault("_stats", JudgeStats())
        return stats

    @property
    def cache_identity(self) -> str:
        """What identifies this judge's numbers in a verdict cache key: the backend class,
        :attr:`name` and :attr:`weights_dtype`. Backends add what else changes the numbers."""
        return f"{type(self).__name__}:{self.name}:{self.weights_dtype}"

    @property
    def weights_dtype(self) -> str | None:
        """The dtype the judge computes in (``"float32"``, ``"bfloat16"``...), recorded in
        preference labels; ``None`` when the backend does not know (a remote server)."""
        return None

    @abstractmethod
    def render(self, messages: Sequence[Mapping[str, str]], assistant_prefix: str = "") -> str:
        """Render chat ``messages`` as the judge's prompt text, with the start of the
        assistant turn (generation prompt) followed by ``assistant_prefix``."""

    @abstractmethod
    def next_token_logprobs(
        self, prompts: Sequence[Prompt], candidates: Sequence[str]
    ) -> np.ndarray:
        """Log-probabilities of each single-token candidate as the next token.

        Returns:
            float64 array ``(len(prompts), len(candidates))``, values ``<= 0`` (full
            vocabulary softmax, so a row need not sum to 1 over the candidates).

        Raises:
            JudgeError: a candidate is not exactly one token.
        """

    @abstractmethod
    def generate(self, prompts: Sequence[Prompt], max_new_tokens: int) -> list[str]:
        """Greedy continuation of each prompt (at most ``max_new_tokens`` tokens, stopping at
        end of turn), decoded without special tokens."""

    @abstractmethod
    def is_single_token(self, text: str) -> bool:
        """Whether ``text`` is exactly one token of the judge's vocabulary."""

    # ----------------------------------------------------------------- derived primitives

    def render_chat(self, chat: ChatPrompt) -> str:
        """:meth:`render` of a :class:`rewards.prompts.ChatPrompt`."""
        return self.render(chat.messages, chat.assistant_prefix)

    def next_token_logprobs_shared_prefix(
        self, prefix: str, suffixes: Sequence[str], candidates: Sequence[str]
    ) -> np.ndarray:
        """:meth:`next_token_logprobs` of the prompts ``(prefix, suffix)`` for each suffix,
        shape ``(len(suffixes), len(candidates))``. Backends with a KV cache run the prefix
        once; this default just builds the two-segment prompts."""
        return self.next_token_logprobs([(prefix, s) for s in suffixes], candidates)

    def next_token_logprobs_two_step(
        self,
        prompts: Sequence[Prompt],
        candidates: Sequence[str],
        then: str,
        then_candidates: Sequence[str],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Log-probabilities at two consecutive positions.

        Returns:
            ``(first, second)``: ``first[i, j] = log P(candidates[j] | prompts[i])`` with shape
            ``(n, len(candidates))`` and ``second[i, j] = log P(then_candidates[j] |
            prompts[i] + then)`` with shape ``(n, len(then_candidates))``, where ``then`` is
            appended as its own segment (one token, e.g. ``"1"``). The default makes two
            calls; a backend can read both positions from one forward pass.
        """
        first = self.next_token_logprobs(prompts, candidates)
        extended = [(*as_segments(p), then) for p in prompts]
        second = self.next_token_logprobs(extended, then_candidates)
        return first, second

    def generate_and_score(
        self,
        prompts: Sequence[Prompt],
        max_new_tokens: int,
        continuation: Callable[[int, str], str],
        candidates: Sequence[str],
    ) -> tuple[list[str], np.ndarray]:
        """Two-step chain of thought in one call: greedy-decode each prompt, then score the
        candidates as the next token after ``prompt + continuation(i, generated_i)``.

        Returns:
            ``(generated, logprobs)``: the :meth:`generate` texts and
            ``logprobs[i, j] = log P(candidates[j] | (*segments(prompts[i]), c_i))`` with
            ``c_i = continuation(i, generated[i])`` appended as its own segment, shape
            ``(n, len(candidates))``. This default makes the two calls; a backend with a KV
            cache reuses the prompt's cache from decoding instead of recomputing it.
        """
        generated = self.generate(prompts, max_new_tokens)
        follow = [(*as_segments(p), continuation(i, g))
                  for i, (p, g) in enumerate(zip(prompts, generated, strict=True))]
        return generated, self.next_token_logprobs(follow, candidates)

    def continuation_logprobs(self, prefix: str, continuations: Sequence[str]) -> np.ndarray:
        """Log-likelihood of each continuation after ``prefix``.

        ``prefix`` and each continuation are tokenized separately (two segments), and the
        value is ``sum_t log P(token_t | prefix, tokens_<t)`` over the continuation's
        tokens (full vocabulary softmax): a float64 array of shape
        ``(len(continuations),)``, values ``<= 0``. PMI labels
        (:mod:`rewards.preference`, ``prompt="pmi"``) are built on it.

        Raises:
            JudgeError: an empty prefix or continuation, or a backend that cannot score
                continuations (this default: servers whose prompt log-probs are not
                exposed reliably).
        """
        raise JudgeError(
            f"{type(self).__name__} cannot score continuations (continuation_logprobs); "
            "use the transformers backend for prompt='pmi'"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class TokenizerJudge(Judge):
    """A :class:`Judge` that holds a local Hugging Face tokenizer (``self.tokenizer``) and
    uses it for the tokenizer-side primitives every backend shares: segment-wise
    :meth:`encode`, :meth:`is_single_token`, :meth:`candidate_ids` and chat-template
    :meth:`render`. Subclasses set ``self.tokenizer`` and implement the model calls."""

    tokenizer: Any

    #: End-of-turn tokens of common chat templates, stop tokens when in the vocabulary.
    END_OF_TURN_TOKENS: tuple[str, ...] = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>",
                                           "<end_of_turn>")

    def _tokenizer_stop_ids(self) -> set[int]:
        """The tokenizer's EOS id plus the :attr:`END_OF_TURN_TOKENS` in its vocabulary."""
        tok = self.tokenizer
        ids = set()
        if tok.eos_token_id is not None:
            ids.add(int(tok.eos_token_id))
        vocab = tok.get_vocab()
        for text in self.END_OF_TURN_TOKENS:
            if text in vocab:
                ids.add(int(vocab[text]))
        return ids

    def _token_ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids of ``prompt``: each segment tokenized without added special tokens, then
        concatenated (special tokens written in the text, e.g. ``<|im_start|>``, are kept)."""
        ids: list[int] = []
        for segment in as_segments(prompt):
            ids.extend(self._token_ids(segment))
        if not ids:
            raise JudgeError("prompt tokenized to zero tokens")
        return ids

    def is_single_token(self, text: str) -> bool:
        return len(self._token_ids(text)) == 1

    def candidate_ids(self, candidates: Sequence[str]) -> list[int]:
        """One token id per candidate; raises :class:`JudgeError` for a multi-token one."""
        if isinstance(candidates, str) or len(candidates) == 0:
            raise JudgeError(f"candidates must be a non-empty sequence of str, got {candidates!r}")
        out = []
        for cand in candidates:
            ids = self._token_ids(cand)
            if len(ids) != 1:
                pieces = self.tokenizer.convert_ids_to_tokens(ids)
                raise JudgeError(
                    f"candidate {cand!r} is {len(ids)} tokens {pieces} for judge {self.name!r}; "
                    "next-token log-probabilities need single-token candidates"
                )
            out.append(ids[0])
        return out

    def render(self, messages: Sequence[Mapping[str, str]], assistant_prefix: str = "") -> str:
        """Chat template (``add_generation_prompt=True``) + ``assistant_prefix``; plain text
        (:func:`rewards.prompts.render_plain`) when the tokenizer has no chat template."""
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(
                [dict(m) for m in messages], tokenize=False, add_generation_prompt=True
            )
            return text + assistant_prefix
        from rewards.prompts import render_plain

        return render_plain(messages, assistant_prefix)
