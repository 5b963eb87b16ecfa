"""rlaif-gym: RLAIF (Lee et al. 2023) as Gymnasium environments.

Importing the package registers ``RLAIF-TLDR-v0``, ``RLAIF-HH-Helpful-v0`` and
``RLAIF-HH-Harmless-v0`` with Gymnasium. The import stays light: tokenizers, models and
data are loaded only when an environment is built.

This package is the core layer: data, tasks, models, envs, the reward protocol and the
reward-name registry. ``rewards`` builds on it, ``agents`` on both, and the pipelines and
the CLI (:mod:`rlaif_gym.pipelines`, :mod:`rlaif_gym.cli`) sit on top (docs/DESIGN.md).
"""

__version__ = "0.2.0"

from rlaif_gym.envs import TextGenerationEnv, TextGenerationVectorEnv  # noqa: E402
from rlaif_gym.reward_protocol import RewardFunction, RewardOutput  # noqa: E402
from rlaif_gym.reward_registry import make_reward, register_reward  # noqa: E402
from rlaif_gym.trl_reward import as_trl_reward  # noqa: E402

__all__ = ["RewardFunction", "RewardOutput", "TextGenerationEnv", "TextGenerationVectorEnv",
           "__version__", "as_trl_reward", "make_reward", "register_reward"]
