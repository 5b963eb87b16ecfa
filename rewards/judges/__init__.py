"""LLM judges for AI feedback: the :class:`Judge` interface and its backends.

``load_judge(spec, backend="transformers", **kwargs)`` builds a judge from a model spec;
``"vllm"`` and ``"openai"`` (OpenAI-compatible HTTP) are reserved names for later backends.
"""

from __future__ import annotations

from typing import Any

from rewards.judges.base import Judge, JudgeError, Prompt, as_segments

__all__ = ["BACKENDS", "Judge", "JudgeError", "Prompt", "as_segments", "load_judge"]

#: Backend names ``load_judge`` accepts now, and those reserved for later.
BACKENDS: tuple[str, ...] = ("transformers",)
RESERVED_BACKENDS: tuple[str, ...] = ("vllm", "openai")


def load_judge(spec: Any, backend: str = "transformers", **kwargs: Any) -> Judge:
    """A judge for ``spec``.

    Args:
        spec: a :class:`Judge` (returned unchanged; then no kwargs are allowed), or a model
            spec for the backend (for ``"transformers"``: see
            :class:`rewards.judges.transformers_judge.TransformersJudge`, e.g.
            ``"qwen2.5-coder-1.5b-instruct"`` or ``"tiny-random"``).
        backend: ``"transformers"``.
        **kwargs: backend options (``dtype``, ``device``, ``num_threads``, ``batch_size``...).

    Raises:
        NotImplementedError: ``"vllm"`` / ``"openai"`` (reserved, not implemented yet).
        ValueError: unknown backend (the message lists the valid ones).
    """
    if isinstance(spec, Judge):
        if kwargs:
            raise TypeError(f"judge options {sorted(kwargs)} given with a Judge instance")
        return spec
    if backend in RESERVED_BACKENDS:
        raise NotImplementedError(
            f"judge backend {backend!r} is not implemented yet; available: {', '.join(BACKENDS)}"
        )
    if backend == "transformers":
        from rewards.judges.transformers_judge import TransformersJudge

        return TransformersJudge(spec, **kwargs)
    valid = ", ".join(BACKENDS + RESERVED_BACKENDS)
    raise ValueError(f"unknown judge backend {backend!r}; valid backends: {valid} "
                     f"({', '.join(RESERVED_BACKENDS)} not implemented yet)")
