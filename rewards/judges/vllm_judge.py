"""A :class:`~rewards.judges.base.Judge` running vLLM's offline engine (``vllm.LLM``) in-process.

vLLM is imported inside :class:`VLLMJudge` only, so ``import rewards.judges.vllm_judge``
works without it (CPU machines, CI). Written against vLLM 0.33's documented API:

* ``LLM(model=..., tokenizer=..., dtype=..., seed=..., gpu_memory_utilization=...,
  max_logprobs=...)`` (``**kwargs`` go to ``EngineArgs``);
* ``LLM.generate(prompts, sampling_params, use_tqdm=False)`` with token-id prompts
  ``{"prompt_token_ids": [...]}`` (``TokensPrompt``), outputs in input order;
* ``SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=[...])``. vLLM's
  ``vllm/sampling_params.py`` documents ``logprob_token_ids`` as "Specific token IDs to return
  logprobs for. More efficient than logprobs=-1 when you only need logprobs for a small set of
  tokens. When set, logprobs for exactly these token IDs will be returned, in addition to the
  sampled token. This is useful for scoring tasks where you want to compare probabilities of
  specific label tokens." (at most ``MAX_LOGPROB_TOKEN_IDS = 128`` ids). Its OpenAI frontend
  builds exactly these parameters: ``logprobs=None if self.logprob_token_ids else
  self.logprobs, ..., logprob_token_ids=self.logprob_token_ids`` (``CompletionRequest.
  to_sampling_params``). When the installed ``SamplingParams`` has no such field, the judge
  falls back to the top-``top_logprobs`` list (``logprobs=K``) and raises
  :class:`~rewards.judges.base.JudgeError` for a candidate outside it.
* ``allowed_token_ids`` is NOT used: it only masks sampling, while the returned logprobs are
  computed from the raw logits before that whitelist (vLLM's ``Sampler``: "1. If logprobs are
  requested: compute logprobs ... 3. Apply allowed token ids whitelist"), so it would change
  nothing here. The logprobs are the full-vocabulary ``raw_logprobs`` (the default
  ``logprobs_mode``), like :class:`~rewards.judges.transformers_judge.TransformersJudge`'s.
* ``output.outputs[0].logprobs[0]`` is a ``dict[int, Logprob]`` (``Logprob.logprob``).

Prompts are tokenized locally, segment by segment, exactly like ``TransformersJudge`` (no BOS
added), and sent as token ids. vLLM's automatic prefix caching makes the second step of
:meth:`~rewards.judges.base.Judge.next_token_logprobs_two_step` (``prompt + "1"``) and the
shared prefix of the two preference orders nearly free, so the default implementations of
those primitives are kept.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rewards.judges.base import JudgeError, Prompt, TokenizerJudge

__all__ = ["INSTALL_HINT", "VLLMJudge"]

INSTALL_HINT = "pip install 'rlaif-gym[vllm]'"


def _import_vllm() -> tuple[Any, Any]:
    """``(vllm.LLM, vllm.SamplingParams)``; ImportError naming the extra when missing."""
    try:
        from vllm import LLM, SamplingParams
    except ImportError as exc:
        raise ImportError(
            f"VLLMJudge needs vLLM (and a CUDA GPU): {INSTALL_HINT}. "
            f"Without a GPU use backend='transformers', or backend='openai' against a running "
            f"vLLM or llama.cpp server. ({exc})"
        ) from exc
    return LLM, SamplingParams


def _has_field(cls: Any, name: str) -> bool:
    """Whether the (msgspec struct / dataclass) ``cls`` takes keyword ``name``."""
    fields = getattr(cls, "__struct_fields__", None)
    if fields is not None:
        return name in fields
    try:
        return name in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False


def _model_source(spec: str | os.PathLike) -> str:
    """What vLLM loads for ``spec``: the converted safetensors folder of a packaged short
    name or ``.gguf`` file (the same weights ``TransformersJudge`` loads), a local folder, or
    a hub id as is."""
    from rlaif_gym.models import TINY_RANDOM, resolve_model_path

    text = os.fspath(spec)
    if text == TINY_RANDOM:
        raise ValueError(f"{TINY_RANDOM!r} exists only in memory; vLLM needs a checkpoint folder, "
                         "a packaged short name, a .gguf file or a hub id")
    looks_like_path = text.startswith(("/", ".", "~")) or Path(text).expanduser().exists()
    if "/" in text and not looks_like_path:
        return text  # hub id "org/name": vLLM resolves it itself
    return str(resolve_model_path(spec))


class VLLMJudge(TokenizerJudge):
    """Judge running a causal LM with vLLM's offline ``LLM`` engine (GPU).

    Args:
        model_spec: short name (``"qwen2.5-coder-1.5b-instruct"``), checkpoint folder,
            ``.gguf`` path (both converted by :func:`rlaif_gym.models.resolve_model_path`) or
            hub id.
        tokenizer: tokenizer object (default: :func:`rlaif_gym.models.load_tokenizer` of the
            spec); must match the model's vocabulary.
        dtype: weights/activations dtype for vLLM (``"bfloat16"``, ``"float16"``,
            ``"float32"``, ``"auto"``).
        top_logprobs: K of the top-K fallback when ``logprob_token_ids`` is unavailable.
        gpu_memory_utilization: fraction of GPU memory vLLM may take.
        max_model_len: context length limit (``None``: the model's).
        seed: engine seed (greedy decoding does not use it).
        name: recorded in labels (default: the spec).
        **llm_kwargs: more ``vllm.LLM`` / ``EngineArgs`` options (``enforce_eager``,
            ``tensor_parallel_size``...).

    Raises:
        ImportError: vLLM is not installed (the message names ``rlaif-gym[vllm]``).
    """

    def __init__(
        self,
        model_spec: str | os.PathLike,
        tokenizer: Any = None,
        *,
        dtype: str = "bfloat16",
        top_logprobs: int = 20,
        gpu_memory_utilization: float = 0.85,
        max_model_len: int | None = None,
        seed: int = 0,
        name: str | None = None,
        **llm_kwargs: Any,
    ) -> None:
        llm_cls, sampling_cls = _import_vllm()
        if isinstance(top_logprobs, bool) or not isinstance(top_logprobs, int) or top_logprobs < 1:
            raise ValueError(f"top_logprobs must be a positive int, got {top_logprobs!r}")
        source = _model_source(model_spec)
        if tokenizer is None:
            from rlaif_gym.models import load_tokenizer

            tokenizer = load_tokenizer(model_spec)
        self.tokenizer = tokenizer
        self.name = name or os.fspath(model_spec)
        self.top_logprobs = top_logprobs
        self._dtype = dtype
        self._sampling_cls = sampling_cls
        self._by_token_ids = _has_field(sampling_cls, "logprob_token_ids")
        options: dict[str, Any] = {
            "model": source,
            "tokenizer": source if Path(source).is_dir() else None,
            "dtype": dtype,
            "seed": seed,
            "gpu_memory_utilization": gpu_memory_utilization,
            "max_logprobs": max(20, top_logprobs),
        }
        if max_model_len is not None:
            options["max_model_len"] = max_model_len
        options.update(llm_kwargs)
        self.llm = llm_cls(**{k: v for k, v in options.items() if v is not None})
        self._stop_ids = self._pick_stop_ids()

    @property
    def weights_dtype(self) -> str | None:
        """The ``dtype`` asked of vLLM (``None`` for vLLM's ``"auto"`` choice)."""
        return None if self._dtype in (None, "auto") else str(self._dtype)

    # ----------------------------------------------------------------- tokenizer helpers

    def _pick_stop_ids(self) -> list[int]:
        return sorted(self._tokenizer_stop_ids())

    # ----------------------------------------------------------------- primitives

    def _logprob_params(self, cand: list[int]) -> Any:
        if self._by_token_ids:
            return self._sampling_cls(max_tokens=1, temperature=0.0, logprob_token_ids=cand)
        return self._sampling_cls(max_tokens=1, temperature=0.0, logprobs=self.top_logprobs)

    def _run(self, prompts: Sequence[Prompt], params: Any) -> list[Any]:
        inputs = [{"prompt_token_ids": self.encode(p)} for p in prompts]
        return self.llm.generate(inputs, params, use_tqdm=False)

    def next_token_logprobs(
        self, prompts: Sequence[Prompt], candidates: Sequence[str]
    ) -> np.ndarray:
        cand = self.candidate_ids(candidates)
        if len(prompts) == 0:
            return np.zeros((0, len(cand)), dtype=np.float64)
        outputs = self._run(prompts, self._logprob_params(cand))
        out = np.empty((len(prompts), len(cand)), dtype=np.float64)
        for i, request_output in enumerate(outputs):
            steps = request_output.outputs[0].logprobs
            if not steps:
                raise JudgeError(f"vLLM returned no logprobs for prompt {i}")
            step = steps[0]
            for j, (text, token_id) in enumerate(zip(candidates, cand, strict=True)):
                entry = step.get(token_id) if hasattr(step, "get") else None
                if entry is None:
                    how = ("logprob_token_ids" if self._by_token_ids
                           else f"the top-{self.top_logprobs} logprobs")
                    raise JudgeError(f"candidate {text!r} (token id {token_id}) is missing from "
                                     f"vLLM's {how} for prompt {i}")
                out[i, j] = min(float(getattr(entry, "logprob", entry)), 0.0)
        return out

    def generate(self, prompts: Sequence[Prompt], max_new_tokens: int) -> list[str]:
        """Greedy decoding, stopping at the end-of-turn/eos tokens, decoded without special
        tokens."""
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) \
                or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
        if len(prompts) == 0:
            return []
        params = self._sampling_cls(max_tokens=max_new_tokens, temperature=0.0,
                                    repetition_penalty=1.0, stop_token_ids=self._stop_ids,
                                    skip_special_tokens=True)
        return [o.outputs[0].text for o in self._run(prompts, params)]
