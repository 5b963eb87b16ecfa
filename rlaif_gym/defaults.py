"""The default models, named once (core layer).

Every module and CLI option that needs a default model imports it from here.
"""

from __future__ import annotations

__all__ = ["DEFAULT_JUDGE", "DEFAULT_POLICY", "SMALL_JUDGE", "TASKS"]

#: The policy: SmolLM2-135M-Instruct (packaged weights, ``make weights``).
DEFAULT_POLICY = "smollm2-135m-instruct"
#: The judge: Qwen2.5-Coder-1.5B-Instruct, the strongest model available offline.
DEFAULT_JUDGE = "qwen2.5-coder-1.5b-instruct"
#: The cheaper judge: Qwen2.5-Coder-0.5B-Instruct.
SMALL_JUDGE = "qwen2.5-coder-0.5b-instruct"
#: The task names, in a stable order (``rlaif_gym.tasks.TASK_NAMES`` holds the same).
TASKS: tuple[str, ...] = ("tldr", "helpful", "harmless")
