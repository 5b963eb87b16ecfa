"""The data of supervised fine-tuning: which prompts to train on, and their token ids.

An example is the policy prompt exactly as the envs render it
(:meth:`rlaif_gym.tasks.Task.render_prompt`: the task's chat messages, the tokenizer's chat
template with the generation prompt, truncated to ``max_prompt_tokens``) followed by the
reference completion (TL;DR: the human summary; HH: the human-chosen final assistant turn)
and the stop token the envs end an episode on (the chat template's end-of-turn token, else
EOS), so the policy learns to stop. Only the completion (stop token included) carries loss.

Splits: :func:`seeded_eval_ids` gives the ids ``rlaif-gym evaluate`` and
``rlaif-gym reproduce`` evaluate on with the same seed (the first ``n`` of
``numpy.random.default_rng(seed).permutation`` of the split's prompts); pass them as
``exclude_ids`` so that SFT never trains on an evaluation prompt. :func:`split_records`
then holds out a few of the remaining prompts for the held-out loss.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlaif_gym.data.records import PromptRecord
from rlaif_gym.envs.text_env import end_of_turn_token_id
from rlaif_gym.tasks import Task, get_task

__all__ = [
    "SFTExample",
    "SFTSplit",
    "build_examples",
    "seeded_eval_ids",
    "sft_stop_token_id",
    "split_records",
]

#: A prompt limit no prompt reaches (renders the untruncated prompt).
_NO_LIMIT = 10**9


def seeded_eval_ids(records: Sequence[PromptRecord], n: int, seed: int = 0) -> list[str]:
    """The first ``n`` ids of ``numpy.random.default_rng(seed).permutation(len(records))``:
    the prompts ``rlaif-gym evaluate --n n --seed seed`` (without ``--ids``) and
    ``rlaif-gym reproduce --eval-n n --seed seed`` evaluate on, for ``records`` loaded from the
    same split and data.

    Raises:
        ValueError: ``n`` outside ``[0, len(records)]``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= len(records):
        raise ValueError(f"n must be an int in [0, {len(records)}], got {n!r}")
    order = np.random.default_rng(seed).permutation(len(records))
    return [str(records[int(i)].id) for i in order[:n]]


@dataclass(frozen=True)
class SFTSplit:
    """Which records train and which are held out.

    Attributes:
        train, heldout: the records (no id in both, none in ``excluded``).
        excluded: ids of the split that were excluded (found in the data).
        excluded_missing: excluded ids that are not in the data (harmless, reported).
        no_reference: ids skipped because their reference is empty or missing.
    """

    train: list[PromptRecord]
    heldout: list[PromptRecord]
    excluded: list[str] = field(default_factory=list)
    excluded_missing: list[str] = field(default_factory=list)
    no_reference: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"train_ids": [r.id for r in self.train],
                "heldout_ids": [r.id for r in self.heldout],
                "excluded_ids": list(self.excluded),
                "excluded_ids_not_in_data": list(self.excluded_missing),
                "no_reference_ids": list(self.no_reference)}


def _has_reference(record: PromptRecord) -> bool:
    return bool(record.reference and record.reference.strip())


def split_records(
    records: Sequence[PromptRecord],
    *,
    exclude_ids: Iterable[str] = (),
    heldout_ids: Sequence[str] | None = None,
    heldout_n: int = 25,
    max_train: int | None = None,
    seed: int = 0,
) -> SFTSplit:
    """Split ``records`` into training and held-out records, never using ``exclude_ids``.

    Records without a reference are skipped. Held out are ``heldout_ids`` when given, else
    the first ``heldout_n`` of a ``default_rng(seed)`` permutation of the remaining records;
    the rest (in that permutation's order, the first ``max_train`` if given) train.

    Raises:
        ValueError: duplicate record ids, held-out ids that are unknown, excluded or without
            a reference, a bad ``heldout_n``/``max_train``, or nothing left to train on.
    """
    ids = [str(r.id) for r in records]
    if len(set(ids)) != len(ids):
        raise ValueError("the records have duplicate ids")
    excluded = {str(i) for i in exclude_ids}
    by_id = {str(r.id): r for r in records}
    no_reference = [str(r.id) for r in records
                    if str(r.id) not in excluded and not _has_reference(r)]
    candidates = [r for r in records if str(r.id) not in excluded and _has_reference(r)]
    if heldout_ids is not None:
        wanted = [str(i) for i in heldout_ids]
        unknown = [i for i in wanted if i not in by_id]
        if unknown:
            raise ValueError(f"{len(unknown)} held-out ids are not in the data, e.g. "
                             f"{unknown[:3]}")
        clash = [i for i in wanted if i in excluded]
        if clash:
            raise ValueError(f"{len(clash)} held-out ids are also excluded ids (evaluation "
                             f"prompts), e.g. {clash[:3]}; hold out other prompts")
        empty = [i for i in wanted if not _has_reference(by_id[i])]
        if empty:
            raise ValueError(f"{len(empty)} held-out ids have no reference, e.g. {empty[:3]}")
        held = set(wanted)
        heldout = [by_id[i] for i in dict.fromkeys(wanted)]
        order = np.random.default_rng(seed).permutation(len(candidates))
        train = [candidates[int(i)] for i in order if str(candidates[int(i)].id) not in held]
    else:
        if isinstance(heldout_n, bool) or not isinstance(heldout_n, int) or heldout_n < 0:
            raise ValueError(f"heldout_n must be an int >= 0, got {heldout_n!r}")
        order = np.random.default_rng(seed).permutation(len(candidates))
        shuffled = [candidates[int(i)] for i in order]
        heldout, train = shuffled[:heldout_n], shuffled[heldout_n:]
    if max_train is not None:
        if isinstance(max_train, bool) or not isinstance(max_train, int) or max_train < 1:
            raise ValueError(f"max_train must be None or a positive int, got {max_train!r}")
        train = train[:max_train]
    if not train:
        raise ValueError(f"no training records left: {len(records)} records, "
                         f"{len(excluded & set(ids))} excluded, {len(no_reference)} without a "
                         f"reference, {len(heldout)} held out")
    return SFTSplit(train=train, heldout=heldout,
                    excluded=[i for i in ids if i in excluded],
                    excluded_missing=sorted(excluded - set(ids)), no_reference=no_reference)


def sft_stop_token_id(tokenizer: Any) -> int:
    """The token a completion ends with: the chat template's end-of-turn token
    (``<|im_end|>``, ...) when there is one, else EOS; the envs stop on both.

    Raises:
        ValueError: the tokenizer has neither.
    """
    eot = end_of_turn_token_id(tokenizer)
    if eot is not None:
        return int(eot)
    eos = getattr(tokenizer, "eos_token_id", None)
    if isinstance(eos, int):
        return eos
    raise ValueError("the tokenizer has no end-of-turn or EOS token: a policy fine-tuned "
                     "with it could not learn to stop")


@dataclass(frozen=True)
class SFTExample:
    """One training sequence.

    Attributes:
        id: the record id.
        input_ids: prompt ids then completion ids (``len = prompt_len + completion_len``).
        prompt_len: tokens of the rendered prompt (no loss on them).
        completion_len: tokens of the completion, the stop token included unless the
            reference was cut at ``max_completion_tokens``.
        prompt_truncated: the task cut the prompt's content to fit ``max_prompt_tokens``.
        completion_truncated: the reference was cut (and then has no stop token).
    """

    id: str
    input_ids: list[int]
    prompt_len: int
    completion_len: int
    prompt_truncated: bool
    completion_truncated: bool

    def to_row(self) -> dict[str, Any]:
        """A pre-tokenized row for TRL's ``SFTTrainer`` (``completion_mask`` 1 = loss)."""
        return {"input_ids": list(self.input_ids),
                "completion_mask": [0] * self.prompt_len + [1] * self.completion_len}


def build_examples(
    task: str | Task,
    records: Sequence[PromptRecord],
    tokenizer: Any,
    *,
    max_prompt_tokens: int,
    max_completion_tokens: int,
) -> list[SFTExample]:
    """Token ids of ``records`` as SFT examples (see the module docstring).

    The completion is ``tokenizer(reference.strip(), add_special_tokens=False)`` followed by
    :func:`sft_stop_token_id`; a reference of ``max_completion_tokens`` tokens or more is cut
    to ``max_completion_tokens`` tokens without a stop token.

    Raises:
        ValueError: a record without a reference, bad limits, a tokenizer without a stop
            token. PromptTooLongError: a prompt that does not fit even without its content.
    """
    for name, value in (("max_prompt_tokens", max_prompt_tokens),
                        ("max_completion_tokens", max_completion_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    task_obj = get_task(task)
    stop = sft_stop_token_id(tokenizer)
    examples = []
    for record in records:
        if not _has_reference(record):
            raise ValueError(f"record {record.id!r} has no reference completion")
        full = list(task_obj.render_prompt(record, tokenizer, _NO_LIMIT))
        prompt = full if len(full) <= max_prompt_tokens else \
            list(task_obj.render_prompt(record, tokenizer, max_prompt_tokens))
        body = list(tokenizer(record.reference.strip(), add_special_tokens=False)["input_ids"])
        cut = len(body) >= max_completion_tokens
        completion = body[:max_completion_tokens] if cut else [*body, stop]
        examples.append(SFTExample(id=str(record.id), input_ids=prompt + completion,
                                   prompt_len=len(prompt), completion_len=len(completion),
                                   prompt_truncated=len(full) > len(prompt),
                                   completion_truncated=cut))
    return examples
