"""A natively batched (NumPy) vector version of :class:`~rlaif_gym.envs.text_env.TextGenerationEnv`.

State lives in arrays: ``tokens`` ``(B, max_len)`` int64, ``lengths``/``prompt_lengths``
``(B,)``; a step is a handful of vectorized NumPy operations. Python loops only run over
sub-environments that end or reset in that step. All episodes that end in one step are
decoded together and scored with ONE call to the reward function.

Semantics match ``gymnasium.vector.SyncVectorEnv`` over ``B`` single envs (same
observations, rewards, terminations and infos for the same seeds and actions):

* seeding: sub-env ``i`` owns its own generator; ``reset(seed=s)`` seeds it with ``s + i``
  (a list seeds each sub-env with its own entry; ``None`` keeps the current generators),
  and every prompt sampled for sub-env ``i``, also at an autoreset, comes from that
  generator.
* ``autoreset_mode``: ``NEXT_STEP`` (default; the step after an episode ended resets that
  sub-env, ignoring its action, with reward 0 and ``terminated=False``), ``SAME_STEP`` (the
  ending step resets at once; the final observation/info go to ``info["final_obs"]`` and
  ``info["final_info"]``) or ``DISABLED`` (reset ended sub-envs yourself with
  ``reset(options={"reset_mask": mask})``). In ``DISABLED`` mode a sub-env whose episode
  ended is *frozen* until it is reset: its action is ignored, its observation stays the
  final one, and it reports reward 0 and ``terminated=False`` (SyncVectorEnv asserts
  instead). This lets an agent run a batch until every episode has ended, with exactly one
  reward per episode (see :func:`agents.rollout.collect_episodes`).
* infos: Gymnasium's vector layout, ``info[key]`` an array over sub-envs with mask
  ``info["_" + key]``; strings are object arrays.

Groups (``group_size=k > 1``, for group rewards such as ``"pairwise"`` and leave-one-out
baselines): sub-envs ``[g k, (g + 1) k)`` form group ``g``. Every reset of a group gives its
k sub-envs the same prompt (drawn from the generator of the group's first sub-env, or the
``options["index"]`` entry, which must then be the same for the whole group), and a reset
must cover whole groups. A group's episodes are scored together, in ONE reward call, when
the last of them ends: a sub-env whose episode ends while others of its group still run is
*held*: its token is appended (its observation shows the finished completion), then it
ignores its actions (its observation stops growing) and reports reward 0 and
``terminated=False`` until the group's last episode ends; in that step every member of the
group reports ``terminated=True``, its reward and its final info. Several groups that end in
the same step share one reward call. With ``k = 1`` (default) nothing changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from rlaif_gym.data.records import PromptRecord, RecordList
from rlaif_gym.envs.config import EnvConfig
from rlaif_gym.envs.text_env import EpisodeCore, _check_render_mode
from rlaif_gym.reward_protocol import RewardFunction

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["TextGenerationVectorEnv"]


_SCALAR_DTYPES = {int: np.dtype(int), float: np.dtype(float), bool: np.dtype(bool)}

#: From this many sub-envs on, per-sub-env work (resets, info columns) is done with one NumPy
#: operation instead of a Python loop (below it, NumPy's fixed costs dominate).
_MANY_ROWS = 8


def _empty_info_array(value: Any, num_envs: int) -> np.ndarray:
    """The array ``VectorEnv._add_info`` creates for a new info key whose first value is
    ``value``: numbers of the value's type, stacked arrays, or an object array of None."""
    kind = type(value)
    dtype = _SCALAR_DTYPES.get(kind)
    if dtype is not None:
        return np.zeros(num_envs, dtype=dtype)
    if issubclass(kind, np.number):
        return np.zeros(num_envs, dtype=kind)
    if kind is np.ndarray:
        return np.zeros((num_envs, *value.shape), dtype=value.dtype)
    return np.empty(num_envs, dtype=object)  # object arrays start out filled with None


class TextGenerationVectorEnv(VectorEnv):
    """``num_envs`` text-generation episodes stepped together; actions ``(num_envs,)`` ints.

    Takes ``num_envs``, the env options of :class:`~rlaif_gym.envs.config.EnvConfig` (as
    ``config=`` or keyword arguments; other keywords are reward options, as for
    :class:`TextGenerationEnv`), ``autoreset_mode`` (an
    :class:`~gymnasium.vector.AutoresetMode` or its string value), ``group_size`` (k
    sub-envs per prompt, scored in one reward call: module doc; default 1) and ``copy``
    (default True,
    as in ``SyncVectorEnv``: every observation is a fresh array; False returns read-only
    views of the env's buffers that the next ``step``/``reset`` overwrites, for callers that
    consume an observation before stepping again).

    Observation: ``{"tokens": int64 (num_envs, max_len), "length": int64 (num_envs,)}``.
    """

    metadata: dict[str, Any] = {
        "render_modes": ["ansi"],
        "render_fps": 4,
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    def __init__(
        self,
        num_envs: int = 1,
        config: EnvConfig | None = None,
        *,
        autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
        copy: bool = True,
        group_size: int = 1,
        **options: Any,
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or (
            num_envs < 1
        ):
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) or (
            group_size < 1 or num_envs % group_size
        ):
            raise ValueError(f"group_size must be a positive int that divides num_envs="
                             f"{num_envs}, got {group_size!r}")
        config = EnvConfig.from_options(config, **options)
        _check_render_mode(config.render_mode, self.metadata["render_modes"])
        try:
            mode = AutoresetMode(autoreset_mode)
        except ValueError as exc:
            valid = [m.value for m in AutoresetMode]
            raise ValueError(
                f"autoreset_mode must be one of {valid}, got {autoreset_mode!r}"
            ) from exc
        self.autoreset_mode = mode
        self.metadata = {**type(self).metadata, "autoreset_mode": mode}
        self.render_mode = config.render_mode
        self.num_envs = int(num_envs)
        #: sub-envs per group: they share a prompt and are scored together (module doc)
        self.group_size = int(group_size)
        self.core = EpisodeCore(config)
        self.data_source = self.core.data_source
        self.single_observation_space = self.core.observation_space
        self.single_action_space = self.core.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

        n, core = self.num_envs, self.core
        self._tokens = np.full((n, core.max_len), core.pad_token_id, dtype=np.int64)
        self._lengths = np.zeros(n, dtype=np.int64)
        self._prompt_lengths = np.zeros(n, dtype=np.int64)
        self._end_lengths = np.zeros(n, dtype=np.int64)  # length at which the limit ends it
        self._indices = np.full(n, -1, dtype=np.int64)
        self._pending: list[int] = []  # sub-envs whose episode ended, awaiting a reset
        self._held: list[int] = []  # ended sub-envs waiting for the rest of their group
        self._no_envs = np.zeros(n, dtype=bool)  # template for info masks
        self._mask_keys: dict[str, str] = {}  # info key -> "_" + key
        self._rows = np.arange(n)
        self._flat_tokens = self._tokens.reshape(-1)  # a view: row i starts at i * max_len
        self._row_starts = self._rows * core.max_len
        self._ones = np.ones(n, dtype=np.int64)
        self._is_stop = core.is_stop
        #: fast steps until a running sub-env may reach its length limit (a lower bound)
        self._steps_to_limit = 0
        self._rngs: list[np.random.Generator | None] = [None] * n
        self._started = False
        #: like ``SyncVectorEnv(copy=...)``: False returns read-only views of the env's own
        #: buffers, which the next step/reset overwrites (no 8 * num_envs * max_len byte copy)
        self.copy = bool(copy)
        self._tokens_view = self._tokens.view()
        self._tokens_view.flags.writeable = False
        self._lengths_view = self._lengths.view()
        self._lengths_view.flags.writeable = False

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

    # -- helpers -----------------------------------------------------------------------------

    def _obs(self) -> dict[str, np.ndarray]:
        if self.copy:
            return {"tokens": self._tokens.copy(), "length": self._lengths.copy()}
        return {"tokens": self._tokens_view, "length": self._lengths_view}

    def _single_obs(self, i: int) -> dict[str, Any]:
        """Sub-env ``i``'s observation as :class:`TextGenerationEnv` returns it."""
        return {"tokens": self._tokens[i].copy(), "length": np.int64(self._lengths[i])}

    def _seeds(self, seed: int | Sequence[int | None] | None) -> list[int | None]:
        if seed is None:
            return [None] * self.num_envs
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            return [int(seed) + i for i in range(self.num_envs)]
        seeds = list(seed)  # type: ignore[arg-type]
        if len(seeds) != self.num_envs:
            raise ValueError(f"got {len(seeds)} seeds for num_envs={self.num_envs}")
        return seeds

    def _indices_option(self, options: dict[str, Any]) -> list[int | None]:
        if "index" not in options:
            return [None] * self.num_envs
        value = options["index"]
        if isinstance(value, (list, tuple, np.ndarray)) and np.ndim(value) == 1:
            if len(value) != self.num_envs:
                raise ValueError(
                    f"options['index'] has {len(value)} entries for num_envs={self.num_envs}"
                )
            indices = [self.core.check_index(v) for v in value]
            k = self.group_size
            mixed = [g for g in range(self.num_envs // k)
                     if len(set(indices[g * k:(g + 1) * k])) > 1]
            if mixed:
                raise ValueError(f"options['index'] gives different prompts to the sub-envs of "
                                 f"group(s) {mixed}; with group_size={k} each run of {k} "
                                 "entries must repeat one prompt index")
            return indices
        return [self.core.check_index(value)] * self.num_envs

    def _check_whole_groups(self, rows: Sequence[int]) -> None:
        """Raise ValueError unless ``rows`` are whole groups."""
        k = self.group_size
        if k == 1:
            return
        chosen = set(rows)
        partial = sorted({r // k for r in rows if not all(
            m in chosen for m in range((r // k) * k, (r // k + 1) * k))})
        if partial:
            raise ValueError(f"with group_size={k} a reset must cover whole groups; group(s) "
                             f"{partial} are only partly reset")

    def _settle_groups(self, rows: list[int]) -> list[int]:
        """Of the sub-envs ``rows`` whose episode ended in this step, the ones to score now
        (sorted): every member of each group whose last running episode just ended, held
        members included. The other rows are held (:attr:`_held`)."""
        k = self.group_size
        if k == 1:
            return rows
        held = set(self._held)
        held.update(rows)
        finished: list[int] = []
        for g in sorted({r // k for r in rows}):
            members = range(g * k, (g + 1) * k)
            if all(m in held for m in members):
                finished.extend(members)
                held.difference_update(members)
        self._held = sorted(held)
        return finished

    def _reset_rows(self, rows: list[int], indices: Sequence[int | None] | None = None
                    ) -> dict[str, list[Any]]:
        """Start new episodes in sub-envs ``rows`` (prompt ``indices[i]``, or drawn from
        sub-env ``i``'s generator when None); returns their reset infos as columns."""
        core = self.core
        chosen = self._sample_indices(rows, indices)
        prompts = [core.prompt_ids(index) for index in chosen]
        sizes = [ids.size for ids in prompts]
        if len(rows) >= _MANY_ROWS:
            self._write_prompts_many(rows, chosen, prompts, sizes)
        else:
            self._write_prompts_few(rows, chosen, prompts, sizes)
        return {
            "prompt_index": chosen,
            "prompt_length": sizes,
            "data_source": [core.data_source] * len(rows),
        }

    def _write_prompts_few(self, rows: list[int], chosen: list[int],
                           prompts: list[np.ndarray], sizes: list[int]) -> None:
        """Per sub-env: its row becomes the prompt then padding; lengths are reset."""
        pad, max_new = self.core.pad_token_id, self.core.max_new_tokens
        tokens, lengths, prompt_lengths = self._tokens, self._lengths, self._prompt_lengths
        for i, index, ids, size in zip(rows, chosen, prompts, sizes, strict=True):
            row = tokens[i]
            row[:size] = ids
            row[size:] = pad
            lengths[i] = prompt_lengths[i] = size
            self._end_lengths[i] = size + max_new
            self._indices[i] = index

    def _write_prompts_many(self, rows: list[int], chosen: list[int],
                            prompts: list[np.ndarray], sizes: list[int]) -> None:
        """:meth:`_write_prompts_few` with one NumPy operation per array where it can."""
        where = np.array(rows, dtype=np.intp)
        self._tokens[where] = self.core.pad_token_id
        flat, width = self._flat_tokens, self.core.max_len
        for i, ids, size in zip(rows, prompts, sizes, strict=True):
            start = i * width
            flat[start : start + size] = ids
        size_array = np.array(sizes, dtype=np.int64)
        self._lengths[where] = size_array
        self._prompt_lengths[where] = size_array
        self._end_lengths[where] = size_array + self.core.max_new_tokens
        self._indices[where] = chosen

    def _sample_indices(self, rows: list[int], indices: Sequence[int | None] | None
                        ) -> list[int]:
        """The prompt index of each new episode in ``rows``: ``indices[i]``, or drawn
        from sub-env ``i``'s generator (seeded at random when it has none yet). With groups,
        one index per group (its first sub-env's), repeated for its members."""
        k = self.group_size
        if k == 1:
            return self._sample_each(rows, indices)
        self._check_whole_groups(rows)
        firsts = sorted({r - r % k for r in rows})
        per_group = dict(zip(firsts, self._sample_each(firsts, indices), strict=True))
        return [per_group[r - r % k] for r in rows]

    def _sample_each(self, rows: list[int], indices: Sequence[int | None] | None
                     ) -> list[int]:
        """:meth:`_sample_indices` for independent sub-envs."""
        rngs = self._rngs
        if indices is None:
            draw = rows
        else:
            draw = [i for i in rows if indices[i] is None]
        for i in draw:
            if rngs[i] is None:
                rngs[i], _ = seeding.np_random()
        drawn = self.core.sample_indices([rngs[i] for i in draw])  # type: ignore[misc]
        if indices is None:
            return drawn
        it = iter(drawn)
        return [next(it) if indices[i] is None else indices[i] for i in rows]  # type: ignore[misc]

    def _merge_info(self, infos: dict[str, Any], rows: list[int],
                    columns: dict[str, list[Any]]) -> dict[str, Any]:
        """Vectorized ``VectorEnv._add_info``: add per-episode ``columns`` of sub-envs
        ``rows`` to ``infos``, with the same array dtypes and ``_key`` masks."""
        mask_keys = self._mask_keys
        where = np.array(rows, dtype=np.intp) if len(rows) >= _MANY_ROWS else None
        for key, values in columns.items():
            mask_key = mask_keys.get(key)
            if mask_key is None:
                mask_key = mask_keys[key] = f"_{key}"
            array = infos.get(key)
            if array is None:
                array = _empty_info_array(values[0], self.num_envs)
                mask = self._no_envs.copy()
            else:
                mask = infos[mask_key]
            if where is None:  # few rows: one by one, as _add_info stores them
                for i, value in zip(rows, values, strict=True):
                    array[i] = value
                    mask[i] = True
            else:
                if len(values) != len(rows):
                    raise ValueError(f"info {key!r}: {len(values)} values for {len(rows)} envs")
                if array.dtype.kind == "O":  # strings, dicts, arrays: stored as the objects
                    array[where] = np.fromiter(values, dtype=object, count=len(values))
                else:  # numbers or same-shape arrays: one assignment (same casts as one by one)
                    array[where] = values
                mask[where] = True
            infos[key] = array
            infos[mask_key] = mask
        return infos

    # -- API ---------------------------------------------------------------------------------

    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Reset all sub-envs, or those in ``options["reset_mask"]`` (bool ``(num_envs,)``).

        Args:
            seed: ``int`` (sub-env ``i`` gets ``seed + i``), a list of ``num_envs`` seeds or
                None (keep the current generators).
            options: ``"index"``: one prompt index for every sub-env or one per sub-env;
                ``"reset_mask"``: which sub-envs to reset.
        """
        options = dict(options or {})
        unknown = sorted(set(options) - {"index", "reset_mask"})
        if unknown:
            raise ValueError(f"unknown reset options {unknown}; valid: ['index', 'reset_mask']")
        seeds = self._seeds(seed)
        indices = self._indices_option(options)
        rows = np.flatnonzero(self._reset_mask(options.get("reset_mask"))).tolist()
        self._check_whole_groups(rows)
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            super().reset(seed=int(seed))
        for i in rows:
            if seeds[i] is not None:
                self._rngs[i], _ = seeding.np_random(seeds[i])
        infos = self._merge_info({}, rows, self._reset_rows(rows, indices))
        reset = set(rows)
        self._pending = [i for i in self._pending if i not in reset]
        self._held = [i for i in self._held if i not in reset]
        self._started = True
        self._update_steps_to_limit()
        return self._obs(), infos

    def _reset_mask(self, mask: object) -> np.ndarray:
        if mask is None:
            return np.ones(self.num_envs, dtype=bool)
        if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
            raise TypeError("options['reset_mask'] must be a numpy bool array")
        if mask.shape != (self.num_envs,) or not mask.any():
            raise ValueError(
                f"options['reset_mask'] must have shape ({self.num_envs},) and at least one "
                f"True entry, got {mask!r}"
            )
        if not self._started and not mask.all():
            raise RuntimeError("the first reset() must reset every sub-env (no reset_mask)")
        return mask

    def step(
        self, actions: object
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Append ``actions[i]`` to every running sub-env (a sub-env that autoresets in this
        step ignores its action, which must still be a valid token id).

        Returns ``(obs, rewards float64 (B,), terminated bool (B,), truncated bool (B,),
        infos)``. Rewards are 0 except where an episode ended in this step.

        Raises:
            RuntimeError: before the first reset.
            ValueError: ``actions`` is not an integer array of shape ``(num_envs,)`` in
                ``[0, vocab_size)``.
        """
        if not self._started:
            raise RuntimeError("step() called before reset()")
        n = self.num_envs
        acts = self.core.check_actions(actions, n)
        if self._pending or self._held:
            return self._step_with_ended_envs(acts)
        # fast path: every sub-env is running
        lengths = self._lengths
        self._flat_tokens[self._row_starts + lengths] = acts
        lengths += self._ones  # an array operand is faster than the scalar 1
        ended = self._is_stop[acts]
        self._steps_to_limit -= 1
        if self._steps_to_limit <= 0:  # some sub-env may have reached its length limit
            ended |= lengths >= self._end_lengths
        rewards = np.zeros(n, dtype=np.float64)
        infos: dict[str, Any] = {}
        rows = ended.nonzero()[0]
        if rows.size:
            done = rows.tolist()
            if self.group_size > 1:  # only whole groups end; the others' rows are held
                done = self._settle_groups(done)
                ended = np.zeros(n, dtype=bool)
                ended[done] = True
            if done:
                infos = self._finish_rows(done, rewards, infos, frozen=[])
            else:
                self._update_steps_to_limit()
        return self._obs(), rewards, ended, np.zeros(n, dtype=bool), infos

    def _update_steps_to_limit(self) -> None:
        """Recompute :attr:`_steps_to_limit`, a lower bound on the steps before a running
        sub-env reaches its length limit (the fast path of :meth:`step` compares lengths
        with the limits only once it reaches 0). Called whenever rows are reset or end."""
        self._steps_to_limit = int((self._end_lengths - self._lengths).min())

    def _step_with_ended_envs(
        self, acts: np.ndarray
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """:meth:`step` when some sub-envs ended before: NEXT_STEP resets them now,
        DISABLED keeps them frozen; held sub-envs (groups) stay frozen in every mode."""
        n = self.num_envs
        pending = self._pending
        disabled = self.autoreset_mode == AutoresetMode.DISABLED
        kept = pending if disabled else []  # DISABLED: ended, frozen until reset by mask
        resetting = [] if disabled else pending  # NEXT_STEP: start over now
        frozen = sorted(set(kept) | set(self._held))
        # Append to every row. A row awaiting its NEXT_STEP autoreset gets a junk token at
        # position 0 (its length may be max_len) that the reset below overwrites; a frozen
        # (DISABLED-mode or held) row gets its junk token past its length, and keeps its
        # length.
        lengths = self._lengths
        if frozen:
            saved_lengths = lengths[frozen].copy()
            lengths[frozen] = np.minimum(saved_lengths, self.core.max_len - 1)
            saved_tokens = self._tokens[frozen, lengths[frozen]].copy()
        if resetting:
            lengths[resetting] = 0
        self._flat_tokens[self._row_starts + lengths] = acts
        lengths += self._ones
        ended = self._is_stop[acts]
        ended |= lengths >= self._end_lengths
        infos: dict[str, Any] = {}
        if frozen:  # frozen sub-envs ignore their action
            self._tokens[frozen, lengths[frozen] - 1] = saved_tokens
            lengths[frozen] = saved_lengths
            ended[frozen] = False
        if resetting:  # NEXT_STEP autoreset: these sub-envs start over, ignoring their action
            ended[resetting] = False
            infos = self._merge_info(infos, resetting, self._reset_rows(resetting))
        rewards = np.zeros(n, dtype=np.float64)
        done: list[int] = []
        if np.count_nonzero(ended):
            done = self._settle_groups(ended.nonzero()[0].tolist())
            if self.group_size > 1:  # held rows do not end yet; their groups' held ones do
                ended[:] = False
                ended[done] = True
        if done:
            infos = self._finish_rows(done, rewards, infos, frozen=list(kept))
        else:
            self._pending = list(kept)
            self._update_steps_to_limit()
        return self._obs(), rewards, ended, np.zeros(n, dtype=bool), infos

    def _finish_rows(self, rows: list[int], rewards: np.ndarray, infos: dict[str, Any],
                     frozen: list[int]) -> dict[str, Any]:
        """:meth:`_finish` with the env's state right whatever the reward does.

        Contract: the episodes of ``rows`` ended in this step. If the reward raises, they
        still ended: the exception propagates, their rewards are lost, and they await a
        reset like any ended episode (the next step autoresets them in ``NEXT_STEP`` and
        ``SAME_STEP`` mode; in ``DISABLED`` mode they stay frozen until a masked reset).
        The other sub-envs go on; ``reset()`` is always allowed.
        """
        self._pending = sorted(set(rows) | set(frozen))  # what holds if the reward raises
        try:
            infos = self._finish(rows, rewards, infos)
        finally:
            self._update_steps_to_limit()
        if self.autoreset_mode == AutoresetMode.SAME_STEP:
            self._pending = list(frozen)  # _finish has reset the ended rows
        return infos

    def _finish(self, rows: list[int], rewards: np.ndarray, infos: dict[str, Any]
                ) -> dict[str, Any]:
        """Score the episodes of sub-envs ``rows`` (one reward call), write their rewards
        and add their final infos (and, in SAME_STEP mode, reset them)."""
        if len(rows) >= _MANY_ROWS:
            where = np.array(rows, dtype=np.intp)
            prompt_lengths, lengths = self._prompt_lengths[where], self._lengths[where]
            row_starts = self._row_starts[where]
            last = row_starts + lengths - 1  # flat position of each episode's last token
            stopped_array = self._is_stop[self._flat_tokens[last]]
            starts = (row_starts + prompt_lengths).tolist()
            stops = (last + 1 - stopped_array).tolist()  # a final stop token excluded
            stopped = stopped_array.tolist()
            sizes = (lengths - prompt_lengths).tolist()
            indices = self._indices[where].tolist()
        else:
            is_stop, width = self._is_stop, self.core.max_len
            starts, stops, stopped, sizes, indices = [], [], [], [], []
            for i in rows:
                start, length = i * width, int(self._lengths[i])
                prompt_length = int(self._prompt_lengths[i])
                stop = bool(is_stop[self._tokens[i, length - 1]])
                starts.append(start + prompt_length)
                stops.append(start + length - stop)
                stopped.append(stop)
                sizes.append(length - prompt_length)
                indices.append(int(self._indices[i]))
        flat = self._flat_tokens
        bodies = [flat[a:b] for a, b in zip(starts, stops, strict=True)]
        scores, columns = self.core.finish_split(indices, bodies, stopped, sizes)
        rewards[rows] = scores
        if self.autoreset_mode != AutoresetMode.SAME_STEP:
            return self._merge_info(infos, rows, columns)
        final_obs = [self._single_obs(i) for i in rows]
        infos = self._merge_info(infos, rows, {"final_obs": final_obs})
        infos["final_info"] = self._merge_info(infos.get("final_info", {}), rows, columns)
        final_mask = infos.get("_final_info")
        if final_mask is None:
            final_mask = self._no_envs.copy()
        final_mask[rows] = True
        infos["_final_info"] = final_mask
        return self._merge_info(infos, rows, self._reset_rows(rows))

    def render(self) -> tuple[str, ...] | None:
        """``"ansi"``: one string per sub-env (decoded prompt and completion so far)."""
        if self.render_mode is None:
            return None
        return tuple(
            self.core.render_text(self._tokens[i], int(self._prompt_lengths[i]),
                                  int(self._lengths[i]))
            for i in range(self.num_envs)
        )
