"""Gymnasium environments: token-by-token text generation rewarded at the end of the episode."""

from rlaif_gym.envs import registration
from rlaif_gym.envs.config import EnvConfig
from rlaif_gym.envs.registration import ENV_IDS, TASK_ENV_IDS
from rlaif_gym.envs.text_env import TextGenerationEnv
from rlaif_gym.envs.vector_env import TextGenerationVectorEnv

__all__ = [
    "ENV_IDS",
    "TASK_ENV_IDS",
    "EnvConfig",
    "TextGenerationEnv",
    "TextGenerationVectorEnv",
    "registration",
]
