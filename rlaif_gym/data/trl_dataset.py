"""The prompt dataset of a task for TRL's trainers (``GRPOTrainer``, ``RLOOTrainer``).

One row per prompt, with the columns TRL and :func:`rlaif_gym.trl_reward.as_trl_reward`
use::

    prompt       the policy prompt: chat messages (TRL's conversational format, default;
                 TRL applies the policy tokenizer's chat template with
                 add_generation_prompt=True, as the envs do) or the rendered text (TRL's
                 standard format)
    task_input   PromptRecord.text, the plain task input the judge sees
    reference    PromptRecord.reference (None when the dataset has none)
    prompt_id    PromptRecord.id

TRL forwards every column but ``prompt`` to reward functions as keyword arguments, one
value per completion, so the reward gets ``task_input`` and ``reference`` back exactly.

The prompt is the one the envs give the policy (:meth:`rlaif_gym.tasks.Task.fit_messages`):
the same messages, with content cut to ``max_prompt_tokens`` tokens of the policy
tokenizer's rendering exactly as :meth:`~rlaif_gym.tasks.Task.render_prompt` cuts it (TRL
1.16 does not truncate prompts). The standard format renders those messages with the chat
template (no added special tokens; TRL tokenizes the text with the tokenizer's defaults, so
a tokenizer that adds a BOS token would add one more).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlaif_gym.data.records import PromptRecord

if TYPE_CHECKING:
    from datasets import Dataset

    from rlaif_gym.tasks import Task

__all__ = ["TRL_COLUMNS", "trl_prompt_dataset"]

#: The dataset's columns.
TRL_COLUMNS: tuple[str, ...] = ("prompt", "task_input", "reference", "prompt_id")


def trl_prompt_dataset(
    task: str | Task = "tldr",
    split: str = "test",
    *,
    data_dir: str | Path | None = None,
    source: str = "auto",
    policy: str | Path | None = "smollm2-135m-instruct",
    tokenizer: Any = None,
    max_prompt_tokens: int | None = 512,
    limit: int | None = None,
    start: int = 0,
    conversational: bool = True,
    prompts: Sequence[PromptRecord] | None = None,
) -> Dataset:
    """A ``datasets.Dataset`` of the task's prompts for TRL (module doc).

    Args:
        task: ``"tldr"``, ``"helpful"``, ``"harmless"`` or a :class:`~rlaif_gym.tasks.Task`.
        split, data_dir, source: which prompts (see :mod:`rlaif_gym.data`).
        policy: tokenizer spec of the policy (:func:`rlaif_gym.models.load_tokenizer`),
            used when ``tokenizer`` is None.
        tokenizer: the policy's tokenizer object (or spec).
        max_prompt_tokens: cut prompts as the envs do (``None``: keep them whole; then no
            tokenizer is loaded for the conversational format).
        limit, start: rows ``start .. start + limit - 1`` of the split (None: to the end).
        conversational: chat messages (True) or the rendered text (False).
        prompts: use these records instead of loading the task's data.

    Raises:
        ValueError: ``start``/``limit`` out of range, an empty selection.
    """
    from datasets import Dataset

    from rlaif_gym.tasks import get_task

    task_obj = get_task(task)
    records = list(prompts) if prompts is not None else list(
        task_obj.load_prompts(split=split, data_dir=data_dir, source=source))
    if start < 0 or (limit is not None and limit < 1):
        raise ValueError(f"need start >= 0 and limit >= 1, got start={start}, limit={limit}")
    records = records[start:] if limit is None else records[start:start + limit]
    if not records:
        raise ValueError(f"task {task_obj.name!r}, split {split!r}: no prompts selected")
    tok = None
    if max_prompt_tokens is not None or not conversational:
        from rlaif_gym.envs.text_env import resolve_tokenizer

        tok = resolve_tokenizer(policy, tokenizer)
    rows: dict[str, list[Any]] = {name: [] for name in TRL_COLUMNS}
    for record in records:
        if max_prompt_tokens is None:
            messages = task_obj.policy_messages(record)
        else:
            messages, _ = task_obj.fit_messages(record, tok, int(max_prompt_tokens))
        if conversational:
            prompt: Any = messages
        elif getattr(tok, "chat_template", None):
            prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            prompt = task_obj.plain_prompt(messages)
        rows["prompt"].append(prompt)
        rows["task_input"].append(record.text)
        rows["reference"].append(record.reference)
        rows["prompt_id"].append(record.id)
    return Dataset.from_dict(rows)
