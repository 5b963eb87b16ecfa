"""The options of a text-generation env, in one place.

``gym.make(id, **options)``, ``gym.make_vec(id, num_envs, vectorization_mode=
"vector_entry_point", **options)``, :class:`~rlaif_gym.envs.text_env.TextGenerationEnv` and
:class:`~rlaif_gym.envs.vector_env.TextGenerationVectorEnv` all take the fields of
:class:`EnvConfig` as keyword arguments (or an ``EnvConfig`` as ``config=``). Any other
keyword argument is an option of the reward: ``gym.make("RLAIF-TLDR-v0", reward="direct",
judge="qwen2.5-coder-0.5b-instruct")`` passes ``judge`` to the d-RLAIF reward.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlaif_gym.data.records import PromptRecord
from rlaif_gym.defaults import DEFAULT_POLICY
from rlaif_gym.tasks import Task

__all__ = ["DEFAULT_POLICY", "ENV_OPTION_NAMES", "EnvConfig"]



@dataclass(frozen=True)
class EnvConfig:
    """Everything a text-generation env is built from.

    Attributes:
        task: ``"tldr"``, ``"helpful"`` or ``"harmless"`` (or a :class:`~rlaif_gym.tasks.Task`).
        reward: anything :func:`rlaif_gym.reward_registry.make_reward` accepts (a name such as
            ``"direct"``, a :class:`~rlaif_gym.reward_protocol.RewardFunction`, a callable
            ``(prompts, completions) -> scores``). Default ``"none"`` (always 0). A named
            reward that takes a ``task`` gets this env's task unless its options give one.
        reward_options: keyword options of a named reward (extra keyword arguments of the
            env constructors are merged into them).
        policy: tokenizer spec of the policy (see :func:`rlaif_gym.models.load_tokenizer`).
        tokenizer: a tokenizer object (or spec), used instead of ``policy``.
        split, data_dir, source: which prompts to load (see :mod:`rlaif_gym.data`).
        max_prompt_tokens: prompts are truncated to this many tokens (task specific), >= 1.
        max_new_tokens: the episode ends after this many generated tokens, >= 1.
        stop_token_ids: tokens that end the episode; default EOS plus the chat template's
            end-of-turn token.
        vocab_size: size of the action space; default ``len(tokenizer)``. Pass the model's
            ``config.vocab_size`` when its embedding is larger (Qwen).
        render_mode: ``"ansi"`` or None.
        prompts: use these :class:`PromptRecord` instead of loading the task's data.
    """

    task: str | Task = "tldr"
    reward: object = "none"
    reward_options: Mapping[str, Any] = field(default_factory=dict)
    policy: str | Path | None = DEFAULT_POLICY
    tokenizer: Any = None
    split: str = "test"
    data_dir: str | Path | None = None
    source: str = "auto"
    max_prompt_tokens: int = 512
    max_new_tokens: int = 64
    stop_token_ids: Sequence[int] | None = None
    vocab_size: int | None = None
    render_mode: str | None = None
    prompts: Sequence[PromptRecord] | None = None

    @classmethod
    def from_options(cls, config: EnvConfig | None = None, **options: Any) -> EnvConfig:
        """``config`` (or the defaults) updated with ``options``; options that are not
        fields are merged into ``reward_options``.

        Raises:
            TypeError: a reward option given both in ``reward_options`` and as a keyword,
                or options for the reward ``"none"`` (which takes none: usually a typo of an
                env option).
        """
        fields = {k: v for k, v in options.items() if k in ENV_OPTION_NAMES}
        extra = {k: v for k, v in options.items() if k not in ENV_OPTION_NAMES}
        if fields.get("reward_options", None) is None and "reward_options" in fields:
            fields["reward_options"] = {}
        base = config if config is not None else cls()
        merged = dataclasses.replace(base, **fields)
        reward_options = dict(merged.reward_options)
        clash = sorted(set(reward_options) & set(extra))
        if clash:
            raise TypeError(f"reward options {clash} given both in reward_options and as kwargs")
        reward_options.update(extra)
        if reward_options and (merged.reward is None or merged.reward == "none"):
            raise TypeError(
                f"unexpected keyword arguments {sorted(reward_options)}: the reward 'none' "
                "takes no options (extra keyword arguments of the env are passed to the reward)"
            )
        return dataclasses.replace(merged, reward_options=reward_options)


#: The keyword arguments of the env constructors that are env options (the rest go to the
#: reward).
ENV_OPTION_NAMES: frozenset[str] = frozenset(f.name for f in dataclasses.fields(EnvConfig))
