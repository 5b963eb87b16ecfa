"""verl reward functions that ask an ``rlaif-gym serve-reward`` server (its ``/score`` route).

verl loads a custom reward function from a file (``custom_reward_function.path`` and
``.name``; ``custom_reward_function.reward_kwargs`` are merged into every call, see
``get_custom_reward_fn`` in ``verl/trainer/ppo/reward.py``). Its reward managers call it two
ways, both provided here:

* ``reward_model.reward_manager=naive`` (verl's default): one call per response,
  ``compute_score(data_source=, solution_str=, ground_truth=, extra_info=)`` - use
  :func:`compute_score` (one HTTP request per response; the server batches concurrent ones,
  but the naive manager sends them one after another).
* ``reward_model.reward_manager=batch``: one call per batch,
  ``compute_score(data_sources=, solution_strs=, ground_truths=, extra_infos=)`` - use
  :func:`compute_score_batch` (one HTTP request per training batch; recommended).

verl passes the decoded response (``skip_special_tokens=True``) but not the prompt, so the
reward's context (the task input: the post to summarize, the dialogue) is read from each
example's ``extra_info[context_key]`` (default ``"context"``), else from its ground truth
when that is a non-empty string. Each result is a dict ``{"score": float, <1-D numeric
details>...}``; verl uses ``"score"`` as the reward and logs the other keys.

Point verl at this file: ``custom_reward_function.path=$(python -c "import rewards.verl_reward
as m; print(m.__file__)")``, ``custom_reward_function.name=compute_score_batch``,
``+custom_reward_function.reward_kwargs.url=http://HOST:PORT``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["compute_score", "compute_score_batch", "score_remote"]

DEFAULT_URL = "http://127.0.0.1:8000"


def _context(solution_index: int, extra_info: Any, ground_truth: Any, context_key: str) -> str:
    if isinstance(extra_info, Mapping) and isinstance(extra_info.get(context_key), str):
        return extra_info[context_key]
    if isinstance(ground_truth, str) and ground_truth:
        return ground_truth
    raise ValueError(f"example {solution_index}: no context for the reward: put the task "
                     f"input in extra_info[{context_key!r}] (or the ground truth)")


def score_remote(url: str, prompts: Sequence[str], completions: Sequence[str], *,
                 timeout: float = 300.0) -> list[dict[str, Any]]:
    """POST ``{"prompts", "completions"}`` to ``url + "/score"``; one dict per completion:
    ``{"score": float, name: value}`` for each one-dimensional numeric detail.

    Raises:
        RuntimeError: the server answers an error (its status and message), or a reply
            without one score per completion.
    """
    import httpx

    response = httpx.post(url.rstrip("/") + "/score", timeout=timeout,
                          json={"prompts": list(prompts), "completions": list(completions)})
    if response.status_code != 200:
        raise RuntimeError(f"{url}/score answered HTTP {response.status_code}: "
                           f"{response.text[:500]}")
    body = response.json()
    scores = body.get("scores")
    if not isinstance(scores, list) or len(scores) != len(completions):
        raise RuntimeError(f"{url}/score returned {scores!r} for {len(completions)} completions")
    details = {k: v for k, v in (body.get("details") or {}).items()
               if isinstance(v, list) and len(v) == len(scores)
               and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)}
    return [{"score": float(s), **{k: v[i] for k, v in details.items()}}
            for i, s in enumerate(scores)]


def compute_score(data_source: Any = None, solution_str: str = "", ground_truth: Any = None,
                  extra_info: Any = None, *, url: str = DEFAULT_URL, context_key: str = "context",
                  timeout: float = 300.0, **_: Any) -> dict[str, Any]:
    """verl's per-response reward function (naive reward manager)."""
    context = _context(0, extra_info, ground_truth, context_key)
    return score_remote(url, [context], [solution_str], timeout=timeout)[0]


def compute_score_batch(data_sources: Sequence[Any] = (), solution_strs: Sequence[str] = (),
                        ground_truths: Sequence[Any] | None = None,
                        extra_infos: Sequence[Any] | None = None, *, url: str = DEFAULT_URL,
                        context_key: str = "context", timeout: float = 300.0,
                        **_: Any) -> list[dict[str, Any]]:
    """verl's batch reward function (``reward_model.reward_manager=batch``)."""
    n = len(solution_strs)
    truths = list(ground_truths) if ground_truths is not None else [None] * n
    extras = list(extra_infos) if extra_infos is not None else [None] * n
    contexts = [_context(i, extras[i], truths[i], context_key) for i in range(n)]
    return score_remote(url, contexts, list(solution_strs), timeout=timeout)
