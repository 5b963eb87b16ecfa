"""Token-by-token text generation as a Gymnasium environment.

One episode = one prompt of a task (TL;DR post, HH dialogue). Each action is the next token
id of the policy's completion. The episode ends (``terminated=True``) when the policy emits
a stop token or after ``max_new_tokens`` tokens; only then is the completion decoded and
scored by the reward function, once. Every earlier step has reward 0.0 (gamma = 1, sparse
terminal reward, as in RLAIF).

:class:`EpisodeCore` holds everything the single env and the native vector env
(:mod:`rlaif_gym.envs.vector_env`) share: the prompts, the tokenizer and its cached prompt
token ids, the spaces, action validation, decoding and the reward call.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rlaif_gym.data.records import PromptRecord, RecordList
from rlaif_gym.defaults import DEFAULT_POLICY
from rlaif_gym.envs.config import EnvConfig
from rlaif_gym.envs.decoding import completion_decoder
from rlaif_gym.reward_protocol import RewardFunction, call_reward
from rlaif_gym.reward_registry import make_reward
from rlaif_gym.tasks import get_task

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["EnvConfig", "EpisodeCore", "TextGenerationEnv"]

_MARKER = "RLAIFGYMMARKER"

_INT64 = np.dtype(np.int64)
_UINT64 = np.dtype(np.uint64)


def resolve_tokenizer(policy: str | Path | None, tokenizer: Any) -> PreTrainedTokenizerBase:
    """``tokenizer`` if it is a tokenizer object, else load the spec ``tokenizer`` or
    ``policy`` with :func:`rlaif_gym.models.load_tokenizer` (imported lazily)."""
    spec = policy if tokenizer is None else tokenizer
    if spec is None:
        spec = DEFAULT_POLICY
    if isinstance(spec, (str, Path)):
        from rlaif_gym.models import load_tokenizer

        return load_tokenizer(str(spec))
    if not callable(getattr(spec, "decode", None)):
        raise TypeError(f"tokenizer must be a tokenizer object or a spec string, got {spec!r}")
    return spec


def end_of_turn_token_id(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The special token the chat template writes right after an assistant message
    (``<|im_end|>``, ``<|eot_id|>``, ...), or None when there is no template or no such
    special token."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _MARKER}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # noqa: BLE001 - a template may reject this probe; then there is no EOT
        return None
    cut = text.rfind(_MARKER)
    if cut < 0:
        return None
    rest = text[cut + len(_MARKER) :].lstrip(" ")
    if not rest:
        return None
    ids = tokenizer(rest, add_special_tokens=False)["input_ids"]
    special = set(tokenizer.all_special_ids) | {
        i for i, tok in getattr(tokenizer, "added_tokens_decoder", {}).items() if tok.special
    }
    return int(ids[0]) if ids and ids[0] in special else None


def default_stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> tuple[int, ...]:
    """EOS plus the chat template's end-of-turn token when it is a different token."""
    ids: list[int] = []
    eos = getattr(tokenizer, "eos_token_id", None)
    if isinstance(eos, int):
        ids.append(eos)
    eot = end_of_turn_token_id(tokenizer)
    if eot is not None and eot not in ids:
        ids.append(eot)
    return tuple(ids)


def _check_render_mode(render_mode: str | None, valid: Sequence[str]) -> None:
    if render_mode is not None and render_mode not in valid:
        raise ValueError(f"render_mode must be None or one of {list(valid)}, got {render_mode!r}")


def _is_int_like(value: object) -> bool:
    """True for Python/NumPy integer scalars and 0-d integer arrays (bools excluded)."""
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, (int, np.integer)):
        return True
    return isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iu"


class EpisodeCore:
    """Task, prompts, tokenizer, spaces and reward: the per-episode logic shared by
    :class:`TextGenerationEnv` and :class:`~rlaif_gym.envs.vector_env.TextGenerationVectorEnv`.

    Observations are ``{"tokens": int64 (max_len,), "length": int}`` with
    ``max_len = max_prompt_tokens + max_new_tokens``: the prompt followed by the tokens
    generated so far, right-padded with :attr:`pad_token_id`; ``length`` counts the
    non-padding tokens. Actions are token ids in ``[0, vocab_size)``.
    """

    def __init__(self, config: EnvConfig) -> None:
        """Build the shared state from ``config`` (see :class:`EnvConfig`).

        Raises:
            ValueError: a bad option (lengths, vocabulary, no prompts, unknown task).
            TypeError: reward options the reward does not take.
        """
        for name in ("max_prompt_tokens", "max_new_tokens"):
            value = getattr(config, name)
            if not _is_int_like(value) or int(value) < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.config = config
        self.task = get_task(config.task)
        self.tokenizer = resolve_tokenizer(config.policy, config.tokenizer)
        self.max_prompt_tokens = int(config.max_prompt_tokens)
        self.max_new_tokens = int(config.max_new_tokens)
        self.max_len = self.max_prompt_tokens + self.max_new_tokens
        self.prompts = self._load_prompts(config.prompts, config.split, config.data_dir,
                                          config.source)
        self.data_source = str(getattr(self.prompts, "source", "custom"))
        # a named reward that judges with a task-specific prompt gets this env's task
        self.reward_fn = make_reward(config.reward, context={"task": self.task.name},
                                     **config.reward_options)

        vocab_size, stop_token_ids = config.vocab_size, config.stop_token_ids
        n_tokens = len(self.tokenizer)
        self.vocab_size = n_tokens if vocab_size is None else int(vocab_size)
        if self.vocab_size < n_tokens:
            raise ValueError(
                f"vocab_size={self.vocab_size} is smaller than the tokenizer ({n_tokens} tokens); "
                "prompt token ids would fall outside the observation space"
            )
        stops = default_stop_token_ids(self.tokenizer) if stop_token_ids is None else stop_token_ids
        self.stop_token_ids = tuple(int(t) for t in stops)
        pad = getattr(self.tokenizer, "pad_token_id", None)
        if pad is None:
            pad = self.stop_token_ids[0] if self.stop_token_ids else 0
        self.pad_token_id = int(pad)
        for name, ids in (("stop_token_ids", self.stop_token_ids), ("pad token", (pad,))):
            bad = [t for t in ids if not 0 <= t < self.vocab_size]
            if bad:
                raise ValueError(f"{name} {bad} outside the vocabulary [0, {self.vocab_size})")
        #: is_stop[token_id] -> bool, a lookup table for the hot path.
        self.is_stop = np.zeros(self.vocab_size, dtype=bool)
        self.is_stop[list(self.stop_token_ids)] = True
        self._prompt_cache: dict[int, np.ndarray] = {}
        self.decode_completion = completion_decoder(self.tokenizer, self.vocab_size)

        self.observation_space = spaces.Dict(
            {
                "tokens": spaces.Box(0, self.vocab_size - 1, (self.max_len,), dtype=np.int64),
                "length": spaces.Discrete(self.max_len + 1),
            }
        )
        self.action_space = spaces.Discrete(self.vocab_size)

    # -- construction helpers ----------------------------------------------------------------

    def _load_prompts(
        self,
        prompts: Sequence[PromptRecord] | None,
        split: str,
        data_dir: str | Path | None,
        source: str,
    ) -> RecordList[PromptRecord]:
        if prompts is None:
            records = self.task.load_prompts(split=split, data_dir=data_dir, source=source)
        elif isinstance(prompts, RecordList):
            records = prompts
        else:
            from rlaif_gym.data.records import DataSource

            records = RecordList(list(prompts), DataSource("local", "custom prompts"))
        if len(records) == 0:
            raise ValueError(f"task {self.task.name!r}: no prompts (split={split!r})")
        return records

    # -- prompts -----------------------------------------------------------------------------

    def check_index(self, index: object) -> int:
        """``index`` as an int in ``[0, len(prompts))`` or a ValueError."""
        if not _is_int_like(index) or not 0 <= int(index) < len(self.prompts):  # type: ignore[arg-type]
            raise ValueError(
                f"prompt index must be an int in [0, {len(self.prompts)}), got {index!r}"
            )
        return int(index)  # type: ignore[arg-type]

    def sample_index(self, rng: np.random.Generator) -> int:
        """A uniformly random prompt index drawn from ``rng``."""
        return int(rng.integers(len(self.prompts)))

    def sample_indices(self, rngs: Sequence[np.random.Generator]) -> list[int]:
        """One prompt index per generator: ``[sample_index(rng) for rng in rngs]``."""
        n = len(self.prompts)
        return [int(rng.integers(n)) for rng in rngs]

    def prompt_ids(self, index: int) -> np.ndarray:
        """The rendered policy prompt of prompt ``index`` as int64 ids (tokenized once,
        cached; the returned array is read-only)."""
        ids = self._prompt_cache.get(index)
        if ids is None:
            rendered = self.task.render_prompt(
                self.prompts[index], self.tokenizer, self.max_prompt_tokens
            )
            ids = np.asarray(rendered, dtype=np.int64)
            if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
                raise ValueError(f"prompt {index} has token ids outside [0, {self.vocab_size})")
            ids.flags.writeable = False
            self._prompt_cache[index] = ids
        return ids

    def reset_info(self, index: int, prompt_length: int) -> dict[str, Any]:
        """The info dict returned by a reset to prompt ``index``."""
        return {
            "prompt_index": index,
            "prompt_length": prompt_length,
            "data_source": self.data_source,
        }

    # -- actions -----------------------------------------------------------------------------

    def check_action(self, action: object) -> int:
        """One action as an int token id, or a ValueError naming the problem."""
        if not _is_int_like(action):
            raise ValueError(
                f"action must be an integer token id, got {action!r} ({type(action).__name__})"
            )
        value = int(action)  # type: ignore[call-overload]
        if not 0 <= value < self.vocab_size:
            raise ValueError(f"action {value} outside the vocabulary [0, {self.vocab_size})")
        return value

    def check_actions(self, actions: object, num_envs: int) -> np.ndarray:
        """A batch of actions as an int64 array of shape ``(num_envs,)``, or a ValueError."""
        if type(actions) is np.ndarray and actions.dtype is _INT64 and actions.shape == (
                num_envs,):
            # fast path: the largest id seen as unsigned (negative ids wrap to huge values)
            # is in the vocabulary; anything else falls through to the checks that explain
            unsigned = actions.view(_UINT64)
            if unsigned[unsigned.argmax()] < self.vocab_size:
                return actions
        arr = actions if type(actions) is np.ndarray else np.asarray(actions)
        if arr.shape != (num_envs,):
            raise ValueError(f"actions must have shape ({num_envs},), got {arr.shape}")
        kind = arr.dtype.kind
        if kind == "i" and arr.dtype.itemsize >= 4:
            # one pass: negative ids wrap around to huge unsigned values
            unsigned = arr.view(np.dtype(f"u{arr.dtype.itemsize}"))
            n_bad = np.count_nonzero(unsigned >= self.vocab_size)
        elif kind in "iu":
            n_bad = np.count_nonzero((arr < 0) | (arr >= self.vocab_size))
        else:
            raise ValueError(f"actions must be integer token ids, got dtype {arr.dtype}")
        if n_bad:
            bad = np.flatnonzero((arr < 0) | (arr >= self.vocab_size))
            raise ValueError(
                f"actions {arr[bad].tolist()} (envs {bad.tolist()}) outside the vocabulary "
                f"[0, {self.vocab_size})"
            )
        return arr if arr.dtype == np.int64 else arr.astype(np.int64)

    # -- episode end -------------------------------------------------------------------------

    def split_generated(self, generated: Sequence[np.ndarray]
                        ) -> tuple[list[np.ndarray], list[bool]]:
        """Per episode, its generated ids without a final stop token (a view) and whether
        there was one."""
        is_stop = self.is_stop
        stopped = [ids.size > 0 and bool(is_stop[ids[-1]]) for ids in generated]
        bodies = [ids[:-1] if stop else ids for ids, stop in zip(generated, stopped, strict=True)]
        return bodies, stopped

    def decode_bodies(self, bodies: Sequence[np.ndarray]) -> list[str]:
        """``tokenizer.decode(ids, skip_special_tokens=True)`` of each id array (see
        :func:`completion_decoder`; several arrays in one batched decode)."""
        decode = self.decode_completion
        if len(bodies) > 1 and hasattr(decode, "batch"):
            return decode.batch(bodies)
        return [decode(ids) for ids in bodies]

    def finish(
        self, indices: Sequence[int], generated: Sequence[np.ndarray]
    ) -> tuple[np.ndarray, dict[str, list[Any]]]:
        """Score finished episodes with ONE reward call (a reward that declares
        ``needs_references`` also gets each prompt's ``PromptRecord.reference``).

        Args:
            indices: prompt index of each of the ``n`` episodes.
            generated: the token ids each episode generated (its last token is a stop
                token unless the length limit ended it).

        Returns:
            ``scores`` float64 ``(n,)`` and the final infos as columns (key -> list of ``n``
            values): ``prompt`` (``PromptRecord.text``), ``completion`` (decoded, special
            tokens skipped, stop token excluded), ``prompt_index`` (int), ``length_limit``
            (bool), ``completion_length`` (int, generated tokens, stop token included) and
            the reward's details (one value per episode: a NumPy scalar, or an array for
            details with more than one dimension; a name that clashes with the keys above
            gets the prefix ``reward_``).
        """
        bodies, stopped = self.split_generated(generated)
        return self.finish_split(indices, bodies, stopped, [int(g.size) for g in generated])

    def finish_split(
        self,
        indices: Sequence[int],
        bodies: Sequence[np.ndarray],
        stopped: Sequence[bool],
        completion_lengths: Sequence[int],
    ) -> tuple[np.ndarray, dict[str, list[Any]]]:
        """:meth:`finish` with each episode's generated ids already split by the caller
        (the vector env does it for all episodes at once): ``bodies[k]`` are the ids
        without the final stop token, ``stopped[k]`` (bool) whether there was one and
        ``completion_lengths[k]`` (int) the number of generated ids, stop token included.
        Same return value as :meth:`finish`."""
        completions = self.decode_bodies(bodies)
        prompts = [self.prompts[i].text for i in indices]
        references = None
        if getattr(self.reward_fn, "needs_references", False):  # the protocol's side channel
            references = [self.prompts[i].reference for i in indices]
        out = call_reward(self.reward_fn, prompts, completions, references)
        columns: dict[str, list[Any]] = {
            "prompt": prompts,
            "completion": completions,
            "prompt_index": [int(i) for i in indices],
            "length_limit": [not s for s in stopped],
            "completion_length": [int(n) for n in completion_lengths],
        }
        for key, values in out.details.items():
            name = f"reward_{key}" if key in columns else key
            columns[name] = [v.copy() if isinstance(v, np.ndarray) else v for v in values]
        return out.scores, columns

    def render_text(self, tokens: np.ndarray, prompt_length: int, length: int) -> str:
        """The decoded prompt (template tokens kept) followed by the completion so far."""
        prompt = self.tokenizer.decode(tokens[:prompt_length].tolist())
        completion = self.tokenizer.decode(
            tokens[prompt_length:length].tolist(), skip_special_tokens=True
        )
        return prompt + completion


class TextGenerationEnv(gym.Env[dict[str, Any], int]):
    """One text-generation episode per prompt; actions are token ids.

    Args:
        config: an :class:`~rlaif_gym.envs.config.EnvConfig` (default: the defaults).
        **options: its fields as keyword arguments (``task``, ``reward``, ``policy``,
            ``split``, ``max_new_tokens``...); any other keyword is an option of the reward
            (``judge=...`` for ``reward="direct"``).

    Observation: ``{"tokens": int64 (max_prompt_tokens + max_new_tokens,), "length": int}``,
    the prompt plus the tokens generated so far, right-padded with the pad id.
    Reward: 0.0 until the last step, then the reward function's score of the completion.
    ``terminated`` is True at a stop token or at the length limit (``info["length_limit"]``);
    ``truncated`` is always False.
    """

    metadata: dict[str, Any] = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, config: EnvConfig | None = None, **options: Any) -> None:
        config = EnvConfig.from_options(config, **options)
        _check_render_mode(config.render_mode, self.metadata["render_modes"])
        self.render_mode = config.render_mode
        self.core = EpisodeCore(config)
        self.observation_space = self.core.observation_space
        self.action_space = self.core.action_space
        self.data_source = self.core.data_source
        self._tokens = np.full(self.core.max_len, self.core.pad_token_id, dtype=np.int64)
        self._length = 0
        self._prompt_length = 0
        self._index = -1
        self._running = False

    # convenience views of the core
    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self.core.tokenizer

    @property
    def reward_fn(self) -> RewardFunction:
        return self.core.reward_fn

    @property
    def prompts(self) -> RecordList[PromptRecord]:
        return self.core.prompts

    def _obs(self) -> dict[str, Any]:
        return {"tokens": self._tokens.copy(), "length": np.int64(self._length)}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Start an episode on a random prompt (``self.np_random``) or on
        ``options["index"]``. Info: ``prompt_index``, ``prompt_length``, ``data_source``."""
        super().reset(seed=seed)
        options = options or {}
        unknown = sorted(set(options) - {"index"})
        if unknown:
            raise ValueError(f"unknown reset options {unknown}; valid: ['index']")
        if "index" in options:
            index = self.core.check_index(options["index"])
        else:
            index = self.core.sample_index(self.np_random)
        ids = self.core.prompt_ids(index)
        self._tokens.fill(self.core.pad_token_id)
        self._tokens[: ids.size] = ids
        self._index, self._prompt_length, self._length = index, ids.size, ids.size
        self._running = True
        return self._obs(), self.core.reset_info(index, ids.size)

    def step(self, action: int) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """Append token ``action``; see the class docstring for rewards and termination.

        Raises:
            RuntimeError: no episode is running (not reset yet, or the last one ended).
            ValueError: ``action`` is not an integer token id in ``[0, vocab_size)``.
        """
        if not self._running:
            raise RuntimeError(
                "step() called without a running episode: call reset() first (the previous "
                "episode ended)" if self._index >= 0 else "step() called before reset()"
            )
        token = self.core.check_action(action)
        self._tokens[self._length] = token
        self._length += 1
        generated = self._length - self._prompt_length
        if not self.core.is_stop[token] and generated < self.core.max_new_tokens:
            return self._obs(), 0.0, False, False, {}
        self._running = False
        scores, columns = self.core.finish(
            [self._index], [self._tokens[self._prompt_length : self._length]]
        )
        info = {key: values[0] for key, values in columns.items()}
        return self._obs(), float(scores[0]), True, False, info

    def render(self) -> str | None:
        """``"ansi"``: the decoded prompt and completion so far; None without render mode."""
        if self.render_mode is None:
            return None
        return self.core.render_text(self._tokens, self._prompt_length, self._length)
