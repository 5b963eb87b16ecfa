"""Register the RLAIF environments with Gymnasium (done by ``import rlaif_gym``).

==========================  ========  ===============================================
id                          task      prompts
==========================  ========  ===============================================
``RLAIF-TLDR-v0``           tldr      Reddit TL;DR posts (summarize)
``RLAIF-HH-Helpful-v0``     helpful   Anthropic HH-RLHF helpful-base (next assistant turn)
``RLAIF-HH-Harmless-v0``    harmless  Anthropic HH-RLHF harmless-base (next assistant turn)
==========================  ========  ===============================================

``gym.make(id, reward=..., policy=..., ...)`` builds a
:class:`~rlaif_gym.envs.text_env.TextGenerationEnv`;
``gym.make_vec(id, num_envs=B, vectorization_mode="vector_entry_point", ...)`` the native
:class:`~rlaif_gym.envs.vector_env.TextGenerationVectorEnv`. Episodes end by themselves
(stop token or ``max_new_tokens``), so no ``max_episode_steps`` is set.
"""

from __future__ import annotations

import gymnasium as gym

__all__ = ["ENV_IDS", "TASK_ENV_IDS", "register_envs"]

#: id -> task name.
ENV_IDS: dict[str, str] = {
    "RLAIF-TLDR-v0": "tldr",
    "RLAIF-HH-Helpful-v0": "helpful",
    "RLAIF-HH-Harmless-v0": "harmless",
}

#: task name -> id.
TASK_ENV_IDS: dict[str, str] = {task: env_id for env_id, task in ENV_IDS.items()}

ENTRY_POINT = "rlaif_gym.envs.text_env:TextGenerationEnv"
VECTOR_ENTRY_POINT = "rlaif_gym.envs.vector_env:TextGenerationVectorEnv"


def register_envs() -> None:
    """Register every id in :data:`ENV_IDS` that is not registered yet (idempotent)."""
    for env_id, task in ENV_IDS.items():
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point=ENTRY_POINT,
            vector_entry_point=VECTOR_ENTRY_POINT,
            kwargs={"task": task},
            max_episode_steps=None,
        )


register_envs()
