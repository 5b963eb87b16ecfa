"""LLM judges for AI feedback: the :class:`Judge` interface and its backends.

``load_judge(spec, backend="transformers", **kwargs)`` builds a judge from a model spec:

* ``"transformers"`` (default): :class:`~rewards.judges.transformers_judge.TransformersJudge`,
  the model runs in-process;
* ``"openai"``: :class:`~rewards.judges.openai_judge.OpenAIJudge`, an OpenAI-compatible
  ``/v1/completions`` server (``vllm serve``, ``llama_cpp.server``); ``spec`` is the model's
  tokenizer spec and ``base_urls=...`` is required;
* ``"vllm"``: :class:`~rewards.judges.vllm_judge.VLLMJudge`, vLLM's offline ``LLM`` engine
  in-process (CUDA; ``pip install 'rlaif-gym[vllm]'``).

Any backend takes ``verdict_cache=PATH`` (or a
:class:`~rewards.judges.verdict_cache.VerdictCache`): verdicts already judged are read from that
SQLite file instead of being computed again (:mod:`rewards.judges.verdict_cache`). Every judge
counts what it spends in ``judge.stats`` (:mod:`rewards.judges.stats`).

Backend modules are imported only when their backend is asked for.
"""

from __future__ import annotations

import os
from typing import Any

from rewards.judges.base import Judge, JudgeError, Prompt, as_segments

__all__ = ["BACKENDS", "Judge", "JudgeError", "LazyJudge", "Prompt", "as_segments", "check_judge",
           "load_judge"]

#: Backend names ``load_judge`` accepts, and the class each builds (imported when used).
BACKENDS: tuple[str, ...] = ("transformers", "openai", "vllm")
_BACKEND_CLASSES: dict[str, str] = {
    "transformers": "rewards.judges.transformers_judge:TransformersJudge",
    "openai": "rewards.judges.openai_judge:OpenAIJudge",
    "vllm": "rewards.judges.vllm_judge:VLLMJudge",
}


def check_judge(spec: Any, backend: str = "transformers", *, verdict_cache: Any = None,
                **kwargs: Any) -> None:
    """Check what :func:`load_judge` would get, without loading a model: the backend, the
    option names against the backend's constructor, and the model spec
    (:func:`rlaif_gym.models.check_model_spec`). Call it before anything slow starts.

    Raises:
        ValueError: an unknown backend or model name. TypeError: an option the backend does
            not take, or options with a Judge instance. FileNotFoundError: a missing model.
    """
    import inspect

    from gymnasium.envs.registration import load_env_creator

    from rlaif_gym.models import check_model_spec

    if isinstance(spec, Judge):
        if kwargs:
            raise TypeError(f"judge options {sorted(kwargs)} given with a Judge instance")
        return
    if backend not in BACKENDS:
        raise ValueError(f"unknown judge backend {backend!r}; valid backends: "
                         f"{', '.join(BACKENDS)}")
    params = inspect.signature(load_env_creator(_BACKEND_CLASSES[backend])).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            raise TypeError(f"the {backend!r} judge does not take {unknown}; it takes "
                            f"{sorted(list(params)[1:])}")
    if isinstance(spec, (str, os.PathLike)):  # a model object needs no check
        check_model_spec(spec)


def load_judge(spec: Any, backend: str = "transformers", *, verdict_cache: Any = None,
               **kwargs: Any) -> Judge:
    """A judge for ``spec``.

    Args:
        spec: a :class:`Judge` (returned unchanged; then no kwargs are allowed), or a model
            spec for the backend, e.g. ``"qwen2.5-coder-1.5b-instruct"`` or ``"tiny-random"``
            (for ``"openai"`` it names the local tokenizer of the served model).
        backend: ``"transformers"``, ``"openai"`` or ``"vllm"``.
        **kwargs: backend options: ``dtype``, ``device``, ``num_threads``, ``batch_size``...
            (transformers, see :class:`~rewards.judges.transformers_judge.TransformersJudge`);
            ``base_urls`` (required), ``model``, ``server``, ``max_concurrency``... (openai,
            see :class:`~rewards.judges.openai_judge.OpenAIJudge`); ``dtype``,
            ``gpu_memory_utilization``... (vllm, see
            :class:`~rewards.judges.vllm_judge.VLLMJudge`).
        verdict_cache: a path or :class:`~rewards.judges.verdict_cache.VerdictCache` to
            attach (any backend, also a Judge instance given as ``spec``); None: no cache.

    Raises:
        ValueError: unknown backend (the message lists the valid ones).
        TypeError: options given with a Judge instance; ``"openai"`` without ``base_urls``.
        ImportError: ``"vllm"`` without vLLM installed (names the pip extra).
    """
    judge = _load_backend(spec, backend, kwargs)
    if verdict_cache is not None:
        from rewards.judges.verdict_cache import attach_verdict_cache

        attach_verdict_cache(judge, verdict_cache)
    return judge


class LazyJudge:
    """Mixin of the rewards that hold a judge: ``self.judge`` loads ``self._judge_spec`` with
    ``self._judge_kwargs`` on first access (the transformers backend gets the reward's
    ``batch_size``), so building a reward stays cheap until its first call."""

    _judge: Judge | None
    _judge_spec: Any
    _judge_kwargs: dict[str, Any]
    batch_size: int

    @property
    def judge(self) -> Judge:
        """The judge, loaded on first access."""
        if self._judge is None:
            kwargs = dict(self._judge_kwargs)
            if kwargs.get("backend", "transformers") == "transformers":
                kwargs.setdefault("batch_size", self.batch_size)
            self._judge = load_judge(self._judge_spec, **kwargs)
        return self._judge


def _load_backend(spec: Any, backend: str, kwargs: dict[str, Any]) -> Judge:
    if isinstance(spec, Judge):
        if kwargs:
            raise TypeError(f"judge options {sorted(kwargs)} given with a Judge instance")
        return spec
    if backend == "transformers":
        from rewards.judges.transformers_judge import TransformersJudge

        return TransformersJudge(spec, **kwargs)
    if backend == "openai":
        from rewards.judges.openai_judge import OpenAIJudge

        if "base_urls" not in kwargs:
            raise TypeError("the 'openai' judge backend needs base_urls= (the server URL(s), "
                            "e.g. 'http://127.0.0.1:8000')")
        return OpenAIJudge(spec, **kwargs)
    if backend == "vllm":
        from rewards.judges.vllm_judge import VLLMJudge

        return VLLMJudge(spec, **kwargs)
    raise ValueError(f"unknown judge backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
