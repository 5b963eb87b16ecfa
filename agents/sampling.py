"""Sample completions of held-out prompts exactly as RL and ``rlaif-gym evaluate`` do.

:func:`sample_completions` runs the task's vector env (``reward="none"``, autoreset
DISABLED) with :func:`agents.rollout.collect_episodes`, batch after batch, with ONE
``torch.Generator`` seeded once: the same prompts, seed, batch size, limits and policy
weights give the same completions (it is what ``rlaif-gym evaluate`` samples with, through
:func:`rlaif_gym.pipelines.evaluate.generate_completions`, and what SFT measures before and
after training).

:meth:`SampledCompletion.at_limit` cuts an episode to a smaller ``max_new_tokens = L``: the
first ``L`` tokens of an episode sampled with a larger limit have exactly the distribution
of an episode sampled with limit ``L``, so one run at the largest limit answers "does it
stop within 48 tokens? within 64?" for the same episodes (a paired comparison). The views of
the first batch are even token for token those of a run at ``L`` with the same seed
(sampling draws one random number per sub-env per step whether or not its episode has
ended); later batches differ from such a run, because the shared generator has then
advanced by a different number of steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from agents.rollout import collect_episodes
from rlaif_gym.data.records import PromptRecord

__all__ = ["LimitedCompletion", "SampledCompletion", "sample_completions"]


@dataclass(frozen=True)
class LimitedCompletion:
    """A completion as a run with ``max_new_tokens = limit`` ends it.

    Attributes:
        body_ids: int64 ``(k,)`` generated ids without the stop token, ``k <= limit``.
        stopped: True when the episode ended at a stop token within the limit.
        text: the decoded body (the env's decoder, special tokens skipped).
        limit: the ``max_new_tokens`` of this view.
    """

    body_ids: np.ndarray
    stopped: bool
    text: str
    limit: int

    @property
    def n_tokens(self) -> int:
        """Completion length in policy tokens, stop token excluded."""
        return int(self.body_ids.size)


@dataclass(frozen=True)
class SampledCompletion:
    """One sampled episode.

    Attributes:
        prompt_id: the :class:`PromptRecord` id. index: its position in ``prompts``.
        generated_ids: int64 ``(g,)`` sampled ids, the stop token included when the episode
            ended at one (``g <= max_new_tokens``).
        stopped: ended at a stop token (else the length limit ended it).
        text: the decoded completion (``info["completion"]``).
        max_new_tokens: the limit of the run.
    """

    prompt_id: str
    index: int
    generated_ids: np.ndarray
    stopped: bool
    text: str
    max_new_tokens: int

    @property
    def body_ids(self) -> np.ndarray:
        """The generated ids without a final stop token."""
        return self.generated_ids[:-1] if self.stopped else self.generated_ids

    def at_limit(self, limit: int, decode: Any) -> LimitedCompletion:
        """This episode cut as a run with ``max_new_tokens = limit`` (``<= max_new_tokens``)
        would end it (see the module docstring); ``decode`` maps body ids to text (the
        decoder :func:`sample_completions` returns, the env's ``core.decode_completion``).

        Raises:
            ValueError: ``limit`` outside ``[1, max_new_tokens]``.
        """
        if not 1 <= limit <= self.max_new_tokens:
            raise ValueError(f"limit must be in [1, {self.max_new_tokens}], got {limit}")
        if self.stopped and self.generated_ids.size <= limit:
            return LimitedCompletion(self.body_ids, True, self.text, limit)
        if limit == self.max_new_tokens:
            return LimitedCompletion(self.body_ids, False, self.text, limit)
        body = self.generated_ids[:limit]
        return LimitedCompletion(body, False, str(decode(body)), limit)


def sample_completions(
    model: torch.nn.Module,
    tokenizer: Any,
    task: str,
    prompts: Sequence[PromptRecord],
    *,
    max_new_tokens: int,
    max_prompt_tokens: int,
    temperature: float = 0.9,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = False,
    desc: str = "sample",
) -> tuple[list[SampledCompletion], Any]:
    """One completion per prompt, sampled through the task's vector env.

    Args:
        model: the policy (a causal LM); its ``config.vocab_size`` sets the action space.
        tokenizer: the policy's tokenizer object (renders prompts, decodes, stop tokens).
        task: ``"tldr"``, ``"helpful"`` or ``"harmless"``.
        prompts: the records to answer, in order (sub-env ``k`` of batch ``b`` answers
            ``prompts[b * batch_size + k]``).
        max_new_tokens, max_prompt_tokens: the env's limits.
        temperature: sampling temperature (> 0; RL and evaluation use 0.9).
        seed: seeds the one generator used for every batch.
        batch_size: prompts sampled together.
        progress: a tqdm bar over prompts.

    Returns:
        ``(completions, decode)``: one :class:`SampledCompletion` per prompt, in order, and
        the env's completion decoder (ids -> text) for :meth:`SampledCompletion.at_limit`.

    Raises:
        ValueError: no prompts, bad sizes, an unknown task.
    """
    import gymnasium as gym
    from gymnasium.vector import AutoresetMode
    from tqdm.auto import tqdm

    from rlaif_gym.envs.registration import TASK_ENV_IDS

    if not prompts:
        raise ValueError("no prompts to sample")
    if task not in TASK_ENV_IDS:
        raise ValueError(f"unknown task {task!r}; valid: {', '.join(TASK_ENV_IDS)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    envs: dict[int, Any] = {}
    out: list[SampledCompletion] = []
    decode = None
    bar = tqdm(total=len(prompts), disable=not progress, desc=desc, dynamic_ncols=True)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(prompts), batch_size):
            indices = list(range(start, min(start + batch_size, len(prompts))))
            if len(indices) not in envs:
                envs[len(indices)] = gym.make_vec(
                    TASK_ENV_IDS[task], num_envs=len(indices),
                    vectorization_mode="vector_entry_point",
                    autoreset_mode=AutoresetMode.DISABLED, reward="none", tokenizer=tokenizer,
                    prompts=list(prompts), max_prompt_tokens=max_prompt_tokens,
                    max_new_tokens=max_new_tokens, vocab_size=int(model.config.vocab_size))
            env = envs[len(indices)]
            decode = env.unwrapped.core.decode_completion
            batch = collect_episodes(model, env, temperature=temperature,
                                     generator=generator, reset_options={"index": indices})
            for k, index in enumerate(indices):
                info = batch.final_infos[k]
                out.append(SampledCompletion(
                    prompt_id=str(prompts[index].id), index=index,
                    generated_ids=np.asarray(batch.completion_ids[k], dtype=np.int64),
                    stopped=not bool(info.get("length_limit", True)),
                    text=batch.completions[k], max_new_tokens=max_new_tokens))
            bar.update(len(indices))
    finally:
        bar.close()
        for env in envs.values():
            env.close()
        model.train(was_training)
    return out, decode
