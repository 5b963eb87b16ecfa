"""rlaif-gym: RLAIF (Lee et al. 2023) as Gymnasium environments.

Importing the package registers ``RLAIF-TLDR-v0``, ``RLAIF-HH-Helpful-v0`` and
``RLAIF-HH-Harmless-v0`` with Gymnasium. The import stays light: tokenizers, models and
data are loaded only when an environment is built.
"""

__version__ = "0.1.0"

from rlaif_gym.envs import TextGenerationEnv, TextGenerationVectorEnv  # noqa: E402

__all__ = ["TextGenerationEnv", "TextGenerationVectorEnv", "__version__"]
