"""rlaif-gym rewards as TRL reward functions (``GRPOTrainer`` / ``RLOOTrainer`` ``reward_funcs``).

TRL 1.16 calls each synchronous reward function as::

    reward_func(prompts=prompts, completions=completions, completion_ids=ids,
                trainer_state=..., log_extra=..., log_metric=..., **dataset_columns)

once per generation batch: ``prompts`` and ``completions`` hold one entry per completion,
a prompt repeated ``num_generations`` times in a row (its ``RepeatSampler``); every dataset
column but ``prompt`` arrives as a keyword list aligned with them. It logs each function's
mean and std as ``rewards/<__name__>/mean`` and ``.../std``.

:func:`as_trl_reward` wraps any reward :func:`rlaif_gym.reward_registry.make_reward`
accepts into such a function:

* formats: standard (``prompts`` / ``completions`` are strings) and conversational (lists
  of messages; the completion's text is its last message's content).
* task input: the judge must see the plain task input (``PromptRecord.text``), not the
  chat-templated policy prompt. It is taken from the dataset column ``input_column``
  (``"task_input"``, written by :func:`rlaif_gym.data.trl_prompt_dataset`); without that
  column it is recovered from the prompt with :meth:`rlaif_gym.tasks.Task.task_input` (the
  user message without the task's instruction; a string prompt without the task's plain
  ending).
* references: a reward that needs them (``"pairwise"`` with ``anchor="reference"``) gets
  the ``reference_column`` (``"reference"``) through the reward protocol's ``references``.
* groups: the whole batch goes to the reward in ONE call, so the ``num_generations``
  completions of a prompt, which share their task input, are one group for ``"pairwise"``
  (identical task inputs in one call are one group; pass ``num_generations`` to check that
  the batch comes in such runs). On several processes TRL gives each process a slice of
  the generation batch: make the per-process slice a multiple of ``num_generations`` so
  that no group is split.
* logs: ``__name__`` (``"rlaif_<reward name>"`` unless ``name=``) names the TRL metrics; a
  ``"pairwise"`` reward also reports ``<name>/position_consistency`` and
  ``<name>/judge_prompts`` through TRL's ``log_metric``.

TRL itself is not imported: the function only follows its calling convention.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rlaif_gym.reward_protocol import CallableReward, RewardFunction, RewardOutput, call_reward
from rlaif_gym.reward_registry import make_reward
from rlaif_gym.tasks import Task, get_task

__all__ = ["TRLReward", "as_trl_reward", "completion_text"]


def _message_text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of content blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "".join(str(part.get("text", "")) for part in content
                       if isinstance(part, Mapping) and part.get("type", "text") == "text")
    return "" if content is None else str(content)


def completion_text(completion: str | Sequence[Mapping[str, Any]]) -> str:
    """The text of a TRL completion: the string itself (standard format) or the content of
    its last message (conversational format, ``[{"role": "assistant", "content": ...}]``)."""
    if isinstance(completion, str):
        return completion
    messages = list(completion)
    return _message_text(messages[-1].get("content")) if messages else ""


class TRLReward:
    """A reward function with TRL's ``reward_funcs`` signature (see :func:`as_trl_reward`).

    Attributes:
        reward: the wrapped :class:`~rlaif_gym.reward_protocol.RewardFunction`.
        task: the :class:`~rlaif_gym.tasks.Task` whose prompts it scores.
        last_output: the :class:`~rlaif_gym.reward_protocol.RewardOutput` of the last call.
        calls: number of calls so far.
    """

    def __init__(self, reward: RewardFunction, task: Task, *, name: str,
                 input_column: str = "task_input", reference_column: str = "reference",
                 num_generations: int | None = None) -> None:
        self.reward = reward
        self.task = task
        self.__name__ = name
        self.input_column = input_column
        self.reference_column = reference_column
        self.num_generations = num_generations
        self.last_output: RewardOutput | None = None
        self.calls = 0

    def task_inputs(self, prompts: Sequence[Any], columns: Mapping[str, Any]) -> list[str]:
        """The plain task input of each completion: the ``input_column`` column, else
        :meth:`Task.task_input` of the prompt."""
        column = columns.get(self.input_column)
        if column is not None:
            return [str(x) for x in column]
        return [self.task.task_input(p) for p in prompts]

    def _check_groups(self, inputs: Sequence[str]) -> None:
        k = self.num_generations
        if k is None:
            return
        if len(inputs) % k or any(len(set(inputs[g:g + k])) != 1
                                  for g in range(0, len(inputs), k)):
            raise ValueError(f"{self.__name__}: the batch ({len(inputs)} completions) is not "
                             f"made of runs of num_generations={k} completions of one prompt; "
                             "is a group split across processes?")

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any],
                 **kwargs: Any) -> list[float]:
        """Scores of ``completions`` (one float each), from one call of the reward."""
        if len(prompts) != len(completions):
            raise ValueError(f"{self.__name__}: {len(prompts)} prompts but "
                             f"{len(completions)} completions")
        inputs = self.task_inputs(prompts, kwargs)
        self._check_groups(inputs)
        texts = [completion_text(c) for c in completions]
        references = kwargs.get(self.reference_column)
        if getattr(self.reward, "needs_references", False) and references is None:
            raise ValueError(f"{self.__name__}: reward {self.reward.name!r} needs references; "
                             f"the dataset has no {self.reference_column!r} column")
        out = call_reward(self.reward, inputs, texts,
                          None if references is None else list(references))
        self.last_output = out
        self.calls += 1
        self._log(out, kwargs.get("log_metric"))
        return [float(x) for x in out.scores]

    def _log(self, out: RewardOutput, log_metric: Any) -> None:
        if not callable(log_metric):
            return
        consistency = out.details.get("pairwise_consistency")
        if consistency is not None and np.isfinite(consistency).any():
            log_metric(f"{self.__name__}/position_consistency",
                       float(np.nanmean(consistency)))
        prompts = out.details.get("pairwise_judge_prompts")
        group = out.details.get("pairwise_group_size")
        if prompts is not None and group is not None:
            per_group = np.asarray(prompts, dtype=np.float64) / np.maximum(group, 1)
            log_metric(f"{self.__name__}/judge_prompts", float(per_group.sum()))

    def __repr__(self) -> str:
        return f"TRLReward({self.reward!r}, task={self.task.name!r}, name={self.__name__!r})"


def as_trl_reward(reward: object = "direct", task: str | Task = "tldr", *,
                  name: str | None = None, input_column: str = "task_input",
                  reference_column: str = "reference", num_generations: int | None = None,
                  **options: Any) -> TRLReward:
    """An rlaif-gym reward as a TRL reward function ``(prompts, completions, **kwargs) ->
    list[float]`` (module doc).

    Args:
        reward: a registered name (``"direct"``, ``"pairwise"``, ...), a
            :class:`~rlaif_gym.reward_protocol.RewardFunction`, a callable ``(prompts,
            completions) -> scores`` or a reward-model directory.
        task: the task of the prompts (``"tldr"``, ``"helpful"``, ``"harmless"``); a named
            reward judges with its template (the env's ``task`` context).
        name: ``__name__`` for TRL's logs (default ``"rlaif_<reward.name>"``).
        input_column, reference_column: the dataset columns with the task input and the
            reference response.
        num_generations: when given, check that each call holds runs of this many
            completions of one prompt (TRL's groups).
        **options: the named reward's options (``judge=``, ``anchor=``, ``normalize=``...).

    Example::

        from trl import GRPOConfig, GRPOTrainer
        from rlaif_gym.data import trl_prompt_dataset
        from rlaif_gym.trl_reward import as_trl_reward

        dataset = trl_prompt_dataset("tldr", "test", limit=64)
        reward = as_trl_reward("pairwise", task="tldr", judge="qwen2.5-coder-0.5b-instruct")
        trainer = GRPOTrainer(model=..., reward_funcs=reward, train_dataset=dataset,
                              args=GRPOConfig(num_generations=4, ...))
    """
    task_obj = get_task(task)
    if isinstance(reward, RewardFunction):
        if options:
            raise TypeError(f"reward options {sorted(options)} given with a reward instance")
        built = reward
    elif callable(reward) and not isinstance(reward, str):
        if options:
            raise TypeError(f"reward options {sorted(options)} given with a callable reward")
        built = CallableReward(reward)
    else:
        built = make_reward(reward, context={"task": task_obj.name}, **options)
    if num_generations is not None and (isinstance(num_generations, bool)
                                        or not isinstance(num_generations, int)
                                        or num_generations < 1):
        raise ValueError(f"num_generations must be a positive int, got {num_generations!r}")
    return TRLReward(built, task_obj, name=name or f"rlaif_{built.name}",
                     input_column=input_column, reference_column=reference_column,
                     num_generations=num_generations)
