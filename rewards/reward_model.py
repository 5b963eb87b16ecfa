"""Reward models trained on preference pairs (Lee et al. 2023, section 2.2, "distilled" RLAIF).

A reward model (RM) is a causal-LM backbone with a scalar head: a
``transformers.AutoModelForSequenceClassification`` with ``num_labels=1`` (the class TRL's
``RewardTrainer`` trains), built from the backbone of any causal LM that
:func:`rlaif_gym.models.load_causal_lm` loads (default ``smollm2-135m-instruct``). It scores a
(context, response) pair rendered through the tokenizer's chat template::

    user      = the task's instruction + context   (Task.policy_messages: what the policy sees)
    assistant = response                            (followed by the template's end of turn)

and the score is read at the LAST REAL TOKEN of the right-padded sequence (position
``attention_mask.sum() - 1``), so it does not depend on padding or on the pad token being
distinct from the end-of-turn token (SmolLM2 uses ``<|im_end|>`` for both).

Too long inputs keep the response: the context is cut the way the task cuts policy prompts
(:meth:`rlaif_gym.tasks.Task.render_prompt`: end of a TL;DR post, oldest HH turns); only a
response longer than half of ``max_length`` is itself cut (its end).

Training (section 2.2): for a pair ``(x, y1, y2)`` with AI preference ``p = P(y1 preferred)``
the loss is the cross-entropy between ``(p, 1 - p)`` and ``softmax(r(x, y1), r(x, y2))``::

    loss = -[p log sigmoid(r1 - r2) + (1 - p) log sigmoid(r2 - r1)]

Hard human labels are the special case ``p in {0, 1}`` (the Bradley-Terry loss).

A trained RM is a directory that :meth:`RewardModel.from_pretrained` reloads::

    OUT/config.json, model.safetensors      the sequence-classification model (transformers)
    OUT/tokenizer.json, ...                 its tokenizer (with the chat template)
    OUT/rm_meta.json                        base spec, task, label source, max_length, epoch,
                                            step, metrics (written last)
    OUT/trainer_state.pt                    optimizer + RNG state + position, for resuming

Checkpoints are written to ``OUT/.next/`` first and moved into place after a ``COMPLETE``
manifest is written, so an interrupted save never leaves weights of one step next to the
optimizer state of another (the next load finishes or discards the half-done save).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rlaif_gym.data.records import PreferencePair, PromptRecord
from rlaif_gym.defaults import DEFAULT_POLICY
from rlaif_gym.files import write_json
from rlaif_gym.reward_protocol import RewardFunction, RewardOutput
from rlaif_gym.tasks import PromptTooLongError, Task, get_task

__all__ = [
    "DEFAULT_BASE",
    "RM_META_FILE",
    "TRAINER_STATE_FILE",
    "PairSplit",
    "PairwiseAccuracy",
    "RMExample",
    "RewardModel",
    "RewardModelReward",
    "TrainResult",
    "evaluate_pairwise",
    "examples_from_human",
    "examples_from_labels",
    "is_reward_model_dir",
    "read_labels",
    "soft_preference_loss",
    "split_pairs",
    "train_reward_model",
]

#: Backbone used when none is given.
DEFAULT_BASE = DEFAULT_POLICY
RM_META_FILE = "rm_meta.json"
TRAINER_STATE_FILE = "trainer_state.pt"
META_FORMAT = 1
_STAGING = ".next"
_COMPLETE = "COMPLETE"
#: Files of a checkpoint that a new save replaces (stale ones are deleted).
_OWNED = ("model*.safetensors", "model.safetensors.index.json", TRAINER_STATE_FILE, RM_META_FILE)
_MARKER = "\ue00fRLAIFGYMRESPONSE\ue00f"
_PROMPT_CACHE_SIZE = 4096


# =========================================================================== examples


@dataclass(frozen=True)
class RMExample:
    """One training pair with its soft target.

    Attributes:
        id, task, context, responses: from the :class:`PreferencePair`.
        target: ``P(responses[0] preferred)`` in ``[0, 1]`` (an AI soft label, or 0/1 for a
            human choice).
        human_choice: 0, 1 or None (kept for evaluation against humans).
    """

    id: str
    task: str
    context: str
    responses: tuple[str, str]
    target: float
    human_choice: int | None = None

    def __post_init__(self) -> None:
        if len(self.responses) != 2:
            raise ValueError(f"example {self.id!r}: expected 2 responses, got "
                             f"{len(self.responses)}")
        t = float(self.target)
        if not (math.isfinite(t) and 0.0 <= t <= 1.0):
            raise ValueError(f"example {self.id!r}: target must be a probability in [0, 1], "
                             f"got {self.target!r}")

    @classmethod
    def from_pair(cls, pair: PreferencePair, target: float) -> RMExample:
        return cls(id=str(pair.id), task=pair.task, context=pair.context,
                   responses=(pair.responses[0], pair.responses[1]), target=float(target),
                   human_choice=pair.human_choice)


def examples_from_human(pairs: Iterable[PreferencePair]) -> list[RMExample]:
    """Hard targets from the human choices: ``target = 1.0`` if ``human_choice == 0`` else
    ``0.0``. Pairs without a human choice are skipped.

    Raises:
        ValueError: no pair has a human choice.
    """
    pairs = list(pairs)
    out = [RMExample.from_pair(p, 1.0 if p.human_choice == 0 else 0.0)
           for p in pairs if p.human_choice is not None]
    if not out:
        raise ValueError(f"none of the {len(pairs)} pairs has a human choice")
    return out


def read_labels(path: str | os.PathLike[str]) -> list[Any]:
    """The :class:`~rewards.preference.PreferenceLabel` objects of a labels JSONL file written
    by ``rlaif-gym label`` (an incomplete last line, left by a crash, is ignored).

    Raises:
        OSError: unreadable file. ValueError: a malformed line (names the line).
    """
    from rewards.alignment import read_labels_jsonl
    from rewards.preference import PreferenceLabel

    found = read_labels_jsonl(path)
    labels = []
    for k, record in enumerate(found.records, 1):
        try:
            labels.append(PreferenceLabel.from_json(record))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: label {k}: {exc}") from exc
    return labels


@dataclass(frozen=True)
class LabelJoin:
    """Result of :func:`examples_from_labels`: the examples and what did not match."""

    examples: list[RMExample]
    pairs_without_label: int
    labels_without_pair: int


def examples_from_labels(pairs: Iterable[PreferencePair], labels: Iterable[Any]) -> LabelJoin:
    """Join AI labels to pairs by id: ``target = label.p_first``.

    ``labels`` are :class:`~rewards.preference.PreferenceLabel` objects or their JSON dicts.
    Pairs without a label are skipped (counted); labels without a pair are counted.

    Raises:
        ValueError: duplicate pair ids, contradicting duplicate labels, a label whose task
            differs from its pair's, or no pair with a label.
    """
    from rewards.preference import PreferenceLabel

    by_id: dict[str, Any] = {}
    for label in labels:
        if isinstance(label, Mapping):
            label = PreferenceLabel.from_json(label)
        key = str(label.id)
        if key in by_id and by_id[key].p_first != label.p_first:
            raise ValueError(f"label id {key!r} appears twice with different p_first "
                             f"({by_id[key].p_first} and {label.p_first})")
        by_id[key] = label
    pairs = list(pairs)
    seen: set[str] = set()
    out: list[RMExample] = []
    for pair in pairs:
        key = str(pair.id)
        if key in seen:
            raise ValueError(f"pair id {key!r} appears twice; labels are joined by id")
        seen.add(key)
        label = by_id.get(key)
        if label is None:
            continue
        if label.task != pair.task:
            raise ValueError(f"label {key!r} is for task {label.task!r} but the pair is "
                             f"for task {pair.task!r}")
        out.append(RMExample.from_pair(pair, float(label.p_first)))
    if not out:
        raise ValueError(f"no label id matches any of the {len(pairs)} pair ids; were the "
                         "labels made from the same pairs (same --task/--pairs/--data-dir)?")
    return LabelJoin(out, len(pairs) - len(out), len(set(by_id) - seen))


# =========================================================================== split


@dataclass(frozen=True)
class PairSplit:
    """A train/test split of pair ids BY GROUP: pairs with the same context (for TL;DR the
    same post, i.e. the same ``TldrComparison.post_id``; for HH the same dialogue) are on
    the same side.

    Attributes:
        train, test: pair ids.
        seed, test_fraction: how it was made (see :func:`split_pairs`).
        task, source: the pairs' task and data source (for the record).
    """

    train: tuple[str, ...]
    test: tuple[str, ...]
    seed: int
    test_fraction: float
    task: str = ""
    source: str = ""

    def side(self, name: str) -> frozenset[str]:
        """Ids of side ``"train"``, ``"test"`` or ``"all"``."""
        if name == "train":
            return frozenset(self.train)
        if name == "test":
            return frozenset(self.test)
        if name == "all":
            return frozenset(self.train) | frozenset(self.test)
        raise ValueError(f"side must be 'train', 'test' or 'all', got {name!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"format": 1, "group_by": "context", "task": self.task, "source": self.source,
                "seed": self.seed, "test_fraction": self.test_fraction,
                "n_train": len(self.train), "n_test": len(self.test),
                "train": list(self.train), "test": list(self.test)}

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write as JSON (atomically)."""
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PairSplit:
        """Read a split file written by :meth:`save`.

        Raises:
            FileNotFoundError, ValueError: missing or malformed file, ids on both sides.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            split = cls(train=tuple(str(i) for i in data["train"]),
                        test=tuple(str(i) for i in data["test"]), seed=int(data["seed"]),
                        test_fraction=float(data["test_fraction"]),
                        task=str(data.get("task", "")), source=str(data.get("source", "")))
        except FileNotFoundError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a split file ({type(exc).__name__}: {exc})") from exc
        both = set(split.train) & set(split.test)
        if both:
            raise ValueError(f"{path}: {len(both)} ids are on both sides, e.g. {sorted(both)[:3]}")
        return split


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' own progress bars ("Loading weights", "Writing model shards")
    while a checkpoint is read or written; the previous setting is restored."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _stable_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def split_pairs(pairs: Sequence[PreferencePair], test_fraction: float = 0.1, seed: int = 0,
                source: str = "") -> PairSplit:
    """Split pairs into train/test by context (see :class:`PairSplit`).

    The groups (distinct contexts) are sorted by the SHA-256 of their text, so the order of
    the pairs in the file does not matter, then shuffled with
    ``numpy.random.default_rng(seed)``; the first ``round(test_fraction * n_groups)`` groups
    (at least 1, at most ``n_groups - 1``) form the test side. The same pairs and seed
    always give the same split.

    Raises:
        ValueError: ``test_fraction`` outside (0, 1), fewer than 2 groups, duplicate ids.
    """
    if not (isinstance(test_fraction, (int, float)) and 0.0 < test_fraction < 1.0):
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    ids = [str(p.id) for p in pairs]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"pair id {dup!r} appears more than once")
    groups: dict[str, list[str]] = {}
    for pair in pairs:
        groups.setdefault(pair.context, []).append(str(pair.id))
    if len(groups) < 2:
        raise ValueError(f"cannot split {len(pairs)} pairs with {len(groups)} distinct "
                         "context(s): train and test need different contexts")
    keys = sorted(groups, key=_stable_hash)
    order = np.random.default_rng(seed).permutation(len(keys))
    n_test = min(max(1, round(test_fraction * len(keys))), len(keys) - 1)
    test_keys = {keys[i] for i in order[:n_test]}
    test = tuple(i for i, p in zip(ids, pairs, strict=True) if p.context in test_keys)
    train = tuple(i for i, p in zip(ids, pairs, strict=True) if p.context not in test_keys)
    tasks = sorted({p.task for p in pairs})
    return PairSplit(train=train, test=test, seed=int(seed), test_fraction=float(test_fraction),
                     task=",".join(tasks), source=source)


# =========================================================================== the model


def soft_preference_loss(scores_first: torch.Tensor, scores_second: torch.Tensor,
                         p_first: torch.Tensor | float, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy between the target ``(p, 1 - p)`` and ``softmax(r1, r2)``.

    Args:
        scores_first, scores_second: RM scores ``r1``, ``r2``, shape ``(n,)``.
        p_first: ``P(first preferred)`` in ``[0, 1]``, shape ``(n,)`` or a float.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        ``-[p log sigmoid(r1 - r2) + (1 - p) log sigmoid(r2 - r1)]`` reduced; with
        ``p in {0, 1}`` this is the Bradley-Terry loss ``-log sigmoid(r_chosen - r_rejected)``.
    """
    p = torch.as_tensor(p_first, dtype=scores_first.dtype, device=scores_first.device)
    if not bool(torch.all((p >= 0) & (p <= 1))):
        raise ValueError("p_first must lie in [0, 1]")
    diff = scores_first - scores_second
    loss = -(p * F.logsigmoid(diff) + (1.0 - p) * F.logsigmoid(-diff))
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def is_reward_model_dir(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a directory holding ``rm_meta.json``."""
    p = Path(path).expanduser()
    return p.is_dir() and ((p / RM_META_FILE).is_file() or (p / _STAGING / _COMPLETE).is_file())


class RewardModel(torch.nn.Module):
    """A scalar reward head on a causal-LM backbone.

    Args:
        model: a ``transformers`` sequence-classification model with ``num_labels == 1``
            and a ``score`` head (Llama, Qwen2, Mistral, GPT-2, ...).
        tokenizer: its tokenizer (must have a pad token).
        task: the task whose prompt format renders the context (``"tldr"``, ``"helpful"``,
            ``"harmless"`` or a :class:`~rlaif_gym.tasks.Task`).
        max_length: maximum tokens per (context, response) sequence.
        meta: metadata (base spec, label source, training progress, metrics).
    """

    def __init__(self, model: Any, tokenizer: Any, task: str | Task = "tldr",
                 max_length: int = 512, meta: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if getattr(model.config, "num_labels", None) != 1:
            raise ValueError(f"the model must have num_labels=1, got "
                             f"{getattr(model.config, 'num_labels', None)}")
        if not isinstance(getattr(model, "score", None), torch.nn.Module):
            raise ValueError(f"{type(model).__name__} has no 'score' head; use a "
                             "*ForSequenceClassification model of a decoder-only architecture")
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 8:
            raise ValueError(f"max_length must be an int >= 8, got {max_length!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.task = get_task(task)
        self.max_length = max_length
        self.meta: dict[str, Any] = dict(meta or {})
        self.meta.update(task=self.task.name, max_length=max_length)
        self._prompt_cache: dict[str, list[int]] = {}
        self._suffix_template = self._assistant_template()

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_causal_lm(cls, lm: Any, tokenizer: Any, *, task: str | Task = "tldr",
                       max_length: int = 512, seed: int = 0, base: str | None = None
                       ) -> RewardModel:
        """Build an RM from a loaded causal LM: same backbone weights, a new ``score`` head
        (initialised by transformers from ``torch.manual_seed(seed)``; the global torch RNG
        is left as it was)."""
        from transformers import AutoModelForSequenceClassification

        config = copy.deepcopy(lm.config)
        config.num_labels = 1
        config.pad_token_id = tokenizer.pad_token_id
        config.architectures = None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoModelForSequenceClassification.from_config(config, dtype=lm.dtype)
        model.base_model.load_state_dict(lm.base_model.state_dict())
        model.to(lm.device)
        model.eval()
        spec = base if base is not None else (getattr(lm.config, "_name_or_path", "") or
                                              type(lm).__name__)
        return cls(model, tokenizer, task=task, max_length=max_length,
                   meta={"base": str(spec), "seed": seed})

    @classmethod
    def from_base(cls, base: str | os.PathLike[str] = DEFAULT_BASE, *, task: str | Task = "tldr",
                  max_length: int = 512, seed: int = 0, dtype: Any = None,
                  device: str | torch.device = "cpu") -> RewardModel:
        """Load ``base`` with :func:`rlaif_gym.models.load_causal_lm` / ``load_tokenizer``
        (short name, ``"tiny-random"``, folder, ``.gguf``, hub id) and add a score head."""
        from rlaif_gym.models import load_causal_lm, load_tokenizer

        lm = load_causal_lm(base, dtype=dtype, device=device)
        tokenizer = load_tokenizer(base, padding_side="right")
        rm = cls.from_causal_lm(lm, tokenizer, task=task, max_length=max_length, seed=seed,
                                base=os.fspath(base))
        del lm
        return rm

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], *, device: str | torch.device = "cpu",
                        dtype: Any = None) -> RewardModel:
        """Load a directory written by :meth:`save_pretrained` or by training.

        Raises:
            FileNotFoundError: ``path`` is not a directory or has no ``rm_meta.json``.
        """
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = Path(path).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"reward model directory {path} does not exist")
        _recover(path)
        meta_path = path / RM_META_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"{path} is not a reward model directory: no {RM_META_FILE} "
                                    "(train one with `rlaif-gym train-rm --out DIR`)")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        kwargs = {} if dtype is None else {"dtype": dtype}
        with _quiet_transformers():
            model = AutoModelForSequenceClassification.from_pretrained(str(path), **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(str(path))
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "right"
        model.to(torch.device(device))
        model.eval()
        return cls(model, tokenizer, task=meta.get("task", "tldr"),
                   max_length=int(meta.get("max_length", 512)), meta=meta)

    def save_pretrained(self, path: str | os.PathLike[str],
                        extra_files: Mapping[str, Callable[[Path], None]] | None = None) -> Path:
        """Write the model, tokenizer and ``rm_meta.json`` to ``path`` (atomically, see the
        module docstring). A ``trainer_state.pt`` of an earlier run in ``path`` is removed
        unless ``extra_files`` writes a new one. Returns ``path``."""
        path = Path(path).expanduser()

        def write(staging: Path) -> None:
            with _quiet_transformers():
                self.model.save_pretrained(str(staging))
                self.tokenizer.save_pretrained(str(staging))
            for name, writer in (extra_files or {}).items():
                writer(staging / name)
            meta = {"format": META_FORMAT, **self.meta,
                    "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
            (staging / RM_META_FILE).write_text(json.dumps(meta, indent=1) + "\n",
                                                encoding="utf-8")

        _commit(path, write)
        return path

    # -- properties ----------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def label_source(self) -> str | None:
        return self.meta.get("label_source")

    # -- encoding ------------------------------------------------------------------------------

    def _assistant_template(self) -> tuple[str, str] | None:
        """``(head, tail)`` with ``rendered(messages + [assistant: r]) ==
        rendered(messages, add_generation_prompt=True) + head + r + tail`` for the chat
        template, or None when the template does not render that way."""
        tok = self.tokenizer
        if not getattr(tok, "chat_template", None):
            eos = tok.eos_token or ""
            return " ", eos
        user = [{"role": "user", "content": "x"}]
        try:
            prefix = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
            full = tok.apply_chat_template(user + [{"role": "assistant", "content": _MARKER}],
                                           tokenize=False)
        except Exception:  # noqa: BLE001 - an unusual template: fall back to full renders
            return None
        if not full.startswith(prefix) or _MARKER not in full[len(prefix):]:
            return None
        head, tail = full[len(prefix):].split(_MARKER, 1)
        return head, tail

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _record(self, context: str) -> PromptRecord:
        return PromptRecord(id="rm", task=self.task.name, text=context)

    def _prompt_ids(self, context: str) -> list[int]:
        ids = self._prompt_cache.get(context)
        if ids is None:
            ids = self.task.render_prompt(self._record(context), self.tokenizer, 10**9)
            if len(self._prompt_cache) >= _PROMPT_CACHE_SIZE:
                self._prompt_cache.pop(next(iter(self._prompt_cache)))
            self._prompt_cache[context] = ids
        return ids

    def token_ids(self, context: str, response: str) -> list[int]:
        """Token ids of one (context, response) sequence, ``len <= max_length``."""
        if not isinstance(context, str) or not isinstance(response, str):
            raise TypeError("context and response must be strings")
        limit = self.max_length
        if self._suffix_template is None:  # template without a clean assistant split
            messages = self.task.policy_messages(self._record(context))
            text = self.tokenizer.apply_chat_template(
                messages + [{"role": "assistant", "content": response}], tokenize=False)
            return self._ids(text)[-limit:]
        head, tail = self._suffix_template
        suffix = self._ids(head + response + tail)
        prompt = self._prompt_ids(context)
        if len(prompt) + len(suffix) <= limit:
            return prompt + suffix
        suffix = suffix[: limit - min(len(prompt), limit // 2)]
        budget = limit - len(suffix)
        if len(prompt) > budget:
            try:
                prompt = self.task.render_prompt(self._record(context), self.tokenizer, budget)
            except PromptTooLongError as exc:
                raise ValueError(f"max_length={limit} is too small for the prompt template: "
                                 f"{exc}") from exc
        return prompt + suffix

    def encode(self, contexts: Sequence[str], responses: Sequence[str]
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ``input_ids`` and ``attention_mask``, int64 ``(n, L)``,
        ``L <= max_length``, on the model's device."""
        if len(contexts) != len(responses):
            raise ValueError(f"{len(contexts)} contexts but {len(responses)} responses")
        if not contexts:
            raise ValueError("nothing to encode")
        rows = [self.token_ids(c, r) for c, r in zip(contexts, responses, strict=True)]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), int(self.tokenizer.pad_token_id), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        return ids.to(self.device), mask.to(self.device)

    # -- scoring -------------------------------------------------------------------------------

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Scores ``(n,)`` float32 read at the last real token of each right-padded row."""
        out = self.model.base_model(input_ids=input_ids, attention_mask=attention_mask,
                                    use_cache=False)
        hidden = out.last_hidden_state  # (n, L, H)
        last = attention_mask.sum(dim=-1) - 1
        if bool((last < 0).any()):
            raise ValueError("a row of attention_mask is all zeros")
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return self.model.score(pooled).squeeze(-1).float()

    def score_tensor(self, contexts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        """Scores ``(n,)`` with gradients (one forward pass over all ``n`` sequences)."""
        return self(*self.encode(contexts, responses))

    @torch.no_grad()
    def score(self, contexts: Sequence[str], responses: Sequence[str],
              batch_size: int | None = None) -> np.ndarray:
        """Scores ``(n,)`` float64, in eval mode without gradients; ``batch_size=None``
        scores everything in ONE forward pass, else in chunks of ``batch_size``."""
        n = len(contexts)
        if len(responses) != n:
            raise ValueError(f"{n} contexts but {len(responses)} responses")
        if n == 0:
            return np.zeros(0, dtype=np.float64)
        step = n if batch_size is None else int(batch_size)
        if step < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {batch_size!r}")
        was_training = self.training
        self.eval()
        try:
            parts = [self(*self.encode(contexts[i:i + step], responses[i:i + step]))
                     for i in range(0, n, step)]
        finally:
            self.train(was_training)
        return torch.cat(parts).double().cpu().numpy()

    def __repr__(self) -> str:
        return (f"RewardModel(base={self.meta.get('base')!r}, task={self.task.name!r}, "
                f"label_source={self.label_source!r}, max_length={self.max_length})")


# =========================================================================== evaluation


@dataclass(frozen=True)
class PairwiseAccuracy:
    """Pairwise accuracy against human choices: the RM scores the human-preferred response
    higher. Ties count half. ``ci_low``/``ci_high``: 95% Wilson interval."""

    accuracy: float
    n: int
    correct: float
    ties: int
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "n": self.n, "correct": self.correct,
                "ties": self.ties, "ci_low": self.ci_low, "ci_high": self.ci_high}


def evaluate_pairwise(rm: RewardModel, pairs: Iterable[PreferencePair | RMExample],
                      batch_size: int = 16) -> PairwiseAccuracy:
    """Score both responses of every pair with a human choice and compare.

    Raises:
        ValueError: no pair has a human choice.
    """
    from rlaif_gym.stats import wilson_interval

    usable = [p for p in pairs if p.human_choice is not None]
    if not usable:
        raise ValueError("no pair with a human choice to evaluate against")
    correct, ties = 0.0, 0
    for start in range(0, len(usable), batch_size):
        chunk = usable[start:start + batch_size]
        contexts = [p.context for p in chunk]
        scores = rm.score(contexts * 2, [p.responses[0] for p in chunk]
                          + [p.responses[1] for p in chunk])
        first, second = scores[: len(chunk)], scores[len(chunk):]
        for pair, a, b in zip(chunk, first, second, strict=True):
            if a == b:
                ties += 1
                correct += 0.5
            elif (a > b) == (pair.human_choice == 0):
                correct += 1.0
    n = len(usable)
    low, high = wilson_interval(correct, n)
    return PairwiseAccuracy(correct / n, n, correct, ties, low, high)


# =========================================================================== training


@dataclass
class TrainResult:
    """What :func:`train_reward_model` returns.

    Attributes:
        model: the trained :class:`RewardModel` (eval mode).
        history: one metrics dict per completed epoch (``epoch``, ``step``, ``train_loss``,
            ``eval_accuracy``, ``eval_n``, ``eval_ci_low``, ``eval_ci_high``).
        losses: training loss of every optimizer step of the run, resumed parts included.
        step: optimizer steps done. epochs_completed: full epochs done.
        out_dir: the checkpoint directory (None without one).
    """

    model: RewardModel
    history: list[dict[str, Any]]
    losses: list[float]
    step: int
    epochs_completed: int
    out_dir: Path | None = None
    resumed_from_step: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _as_examples(items: Iterable[Any]) -> list[RMExample]:
    out = []
    for item in items:
        if isinstance(item, RMExample):
            out.append(item)
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], PreferencePair):
            out.append(RMExample.from_pair(item[0], float(item[1])))
        else:
            raise TypeError("training examples must be RMExample or (PreferencePair, p_first) "
                            f"tuples, got {type(item).__name__}")
    if not out:
        raise ValueError("no training examples")
    return out


def _fingerprint(examples: Sequence[RMExample]) -> str:
    digest = hashlib.sha256()
    for ex in examples:
        digest.update(json.dumps([ex.id, ex.context, list(ex.responses), ex.target],
                                 ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def _check_positive(name: str, value: object, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _epoch_groups(n: int, seed: int, epoch: int, batch_size: int, grad_accum: int
                  ) -> list[list[np.ndarray]]:
    """Optimizer-step groups of micro-batches (example indices) for ``epoch``: a permutation
    drawn from ``default_rng([seed, epoch])``, so any epoch can be rebuilt on resume."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    micro = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    return [micro[i:i + grad_accum] for i in range(0, len(micro), grad_accum)]


def _default_log(progress: bool) -> Callable[[str], None]:
    def log(message: str) -> None:
        if progress:
            from tqdm.auto import tqdm

            tqdm.write(message, file=sys.stderr)

    return log


def train_reward_model(
    examples: Iterable[RMExample | tuple[PreferencePair, float]],
    *,
    base: str | os.PathLike[str] | RewardModel = DEFAULT_BASE,
    task: str | None = None,
    label_source: str | None = None,
    epochs: int = 1,
    lr: float = 1e-5,
    batch_size: int = 8,
    grad_accum: int = 1,
    max_length: int = 512,
    eval_pairs: Sequence[PreferencePair | RMExample] | None = None,
    eval_batch_size: int = 16,
    out_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    resume: bool = True,
    progress: bool = True,
    num_threads: int | None = None,
    weight_decay: float = 0.0,
    warmup_steps: int = 0,
    max_grad_norm: float | None = 1.0,
    max_steps: int | None = None,
    save_every: int | None = None,
    keep_training_state: bool = True,
    dtype: Any = None,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train a reward model on soft (or hard) preference targets.

    Each optimizer step averages :func:`soft_preference_loss` over ``batch_size *
    grad_accum`` pairs (both responses of a micro-batch go through ONE forward pass). AdamW,
    constant learning rate after an optional linear warmup of ``warmup_steps`` steps,
    gradient-norm clipping at ``max_grad_norm``. The pair order of epoch ``e`` is a
    permutation drawn from ``numpy.random.default_rng([seed, e])`` and the head is
    initialised from ``seed``, so a run is deterministic given the seed (and thread count).

    Args:
        examples: :class:`RMExample` or ``(PreferencePair, p_first)`` tuples, one task.
        base: backbone spec for :meth:`RewardModel.from_base`, or a :class:`RewardModel` to
            continue training (trained in place).
        task: checked against the examples' task (default: theirs).
        label_source: recorded in the metadata (``"ai"``, ``"human"``; default ``"custom"``).
        epochs: total epochs of the run (a resumed run continues up to this number).
        eval_pairs: held-out pairs with human choices: pairwise accuracy is computed and
            logged after every epoch.
        out_dir: checkpoint directory, saved after every epoch (and every ``save_every``
            steps, and when ``max_steps`` stops the run). None: nothing is saved.
        resume: continue from the checkpoint in ``out_dir`` if there is one (same
            examples and hyperparameters required; ``epochs`` may grow). ``False`` with an
            existing checkpoint raises ``FileExistsError``.
        progress: tqdm progress bar and per-epoch lines on stderr.
        num_threads: ``torch.set_num_threads`` (process-wide) when given.
        max_steps: stop after this many optimizer steps in total (checkpoint saved).
        keep_training_state: write ``trainer_state.pt`` (optimizer, RNG, position) with the
            finished model too, so that it can be trained for more epochs later. False
            leaves it out of the final save (1.1 GB less for SmolLM2-135M); checkpoints
            before the end always hold it.
        log: called with each per-epoch report line (default: stderr when ``progress``).

    Returns:
        a :class:`TrainResult`.

    Raises:
        ValueError: bad arguments, mixed tasks, a checkpoint made with other examples or
            hyperparameters. FileExistsError: see ``resume``.
    """
    examples = _as_examples(examples)
    tasks = sorted({ex.task for ex in examples})
    if len(tasks) != 1:
        raise ValueError(f"training examples mix tasks {tasks}")
    if task is not None and task != tasks[0]:
        raise ValueError(f"task={task!r} but the examples are for task {tasks[0]!r}")
    task = tasks[0]
    for name, value in (("epochs", epochs), ("batch_size", batch_size),
                        ("grad_accum", grad_accum), ("eval_batch_size", eval_batch_size)):
        _check_positive(name, value)
    _check_positive("max_steps", max_steps, allow_none=True)
    _check_positive("save_every", save_every, allow_none=True)
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be an int >= 0, got {warmup_steps!r}")
    if num_threads is not None:
        _check_positive("num_threads", num_threads)
        torch.set_num_threads(num_threads)
    log = log or _default_log(progress)
    out = Path(out_dir).expanduser() if out_dir is not None else None

    base_spec = (base.meta.get("base", "custom") if isinstance(base, RewardModel)
                 else os.fspath(base))
    config = {"base": str(base_spec), "task": task, "lr": float(lr), "batch_size": batch_size,
              "grad_accum": grad_accum, "max_length": max_length, "seed": seed,
              "weight_decay": float(weight_decay), "warmup_steps": warmup_steps,
              "max_grad_norm": max_grad_norm, "data": _fingerprint(examples),
              "n_examples": len(examples)}

    state = _load_trainer_state(out, config, resume) if out is not None else None
    if state is not None:
        rm = RewardModel.from_pretrained(out, device=device, dtype=dtype)
    elif isinstance(base, RewardModel):
        rm = base
        if rm.max_length != max_length:
            raise ValueError(f"the given RewardModel has max_length={rm.max_length}, "
                             f"but max_length={max_length} was asked")
    else:
        rm = RewardModel.from_base(base, task=task, max_length=max_length, seed=seed,
                                   dtype=dtype, device=device)
    if rm.task.name != task:
        raise ValueError(f"the reward model is for task {rm.task.name!r}, the examples for "
                         f"{task!r}")
    rm.meta.update(base=config["base"], label_source=label_source or
                   rm.meta.get("label_source") or "custom", seed=seed,
                   hyperparameters={k: v for k, v in config.items() if k != "data"},
                   train_examples=len(examples), data_fingerprint=config["data"])

    params = [p for p in rm.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    step, epoch, group_index = 0, 0, 0
    losses: list[float] = []
    history: list[dict[str, Any]] = []
    resumed_from = None
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        step, epoch, group_index = state["step"], state["epoch"], state["group"]
        losses, history = list(state["losses"]), list(state["history"])
        resumed_from = step
        log(f"resuming {out} at step {step} (epoch {epoch + 1}, step group {group_index})")
    else:
        torch.manual_seed(seed)

    n = len(examples)
    steps_per_epoch = len(_epoch_groups(n, seed, 0, batch_size, grad_accum))
    total_steps = steps_per_epoch * epochs
    if max_steps is not None:
        total_steps = min(total_steps, max_steps)

    def save() -> None:
        if out is None:
            return
        rm.meta.update(epoch=epoch if group_index == 0 else epoch + group_index
                       / steps_per_epoch, epochs_completed=epoch, step=step,
                       metrics=history[-1] if history else {}, history=history,
                       complete=epoch >= epochs and group_index == 0)
        if rm.meta["complete"] and not keep_training_state:
            rm.save_pretrained(out)
            return
        trainer_state = {"format": META_FORMAT, "config": config, "step": step, "epoch": epoch,
                         "group": group_index, "optimizer": optimizer.state_dict(),
                         "torch_rng": torch.get_rng_state(), "losses": losses,
                         "history": history}
        rm.save_pretrained(out, {TRAINER_STATE_FILE: lambda p: torch.save(trainer_state, p)})

    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, initial=min(step, total_steps), desc="reward model",
               unit="step", disable=not progress)
    rm.train()
    try:
        while epoch < epochs and (max_steps is None or step < max_steps):
            groups = _epoch_groups(n, seed, epoch, batch_size, grad_accum)
            while group_index < len(groups):
                if max_steps is not None and step >= max_steps:
                    break
                batches = [[examples[i] for i in micro] for micro in groups[group_index]]
                loss = _train_step(rm, optimizer, batches, lr, warmup_steps, step,
                                   max_grad_norm)
                losses.append(loss)
                step += 1
                group_index += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", epoch=epoch + 1)
                if save_every is not None and step % save_every == 0 and \
                        group_index < len(groups):
                    save()
            if group_index < len(groups):  # stopped by max_steps inside the epoch
                break
            epoch_losses = losses[-len(groups):]
            metrics: dict[str, Any] = {"epoch": epoch + 1, "step": step,
                                       "train_loss": float(np.mean(epoch_losses))}
            if eval_pairs:
                acc = evaluate_pairwise(rm, eval_pairs, eval_batch_size)
                rm.train()
                metrics.update(eval_accuracy=acc.accuracy, eval_n=acc.n,
                               eval_ci_low=acc.ci_low, eval_ci_high=acc.ci_high)
            history.append(metrics)
            epoch, group_index = epoch + 1, 0
            log(_format_metrics(metrics))
            save()
        if max_steps is not None and step >= max_steps and group_index != 0:
            save()
    finally:
        bar.close()
        rm.eval()
    return TrainResult(model=rm, history=history, losses=losses, step=step,
                       epochs_completed=epoch, out_dir=out, resumed_from_step=resumed_from)


def _format_metrics(m: Mapping[str, Any]) -> str:
    text = f"epoch {m['epoch']}: step {m['step']}, train loss {m['train_loss']:.4f}"
    if "eval_accuracy" in m:
        text += (f", held-out pairwise accuracy {m['eval_accuracy']:.3f} "
                 f"(95% CI {m['eval_ci_low']:.3f}-{m['eval_ci_high']:.3f}, N={m['eval_n']})")
    return text


def _train_step(rm: RewardModel, optimizer: torch.optim.Optimizer,
                batches: list[list[RMExample]], lr: float, warmup_steps: int, step: int,
                max_grad_norm: float | None) -> float:
    """One optimizer step over the micro-batches ``batches`` (gradients accumulated);
    returns the mean pair loss of the step."""
    total = sum(len(batch) for batch in batches)
    optimizer.zero_grad(set_to_none=True)
    loss_sum = 0.0
    for batch in batches:
        contexts = [ex.context for ex in batch]
        scores = rm.score_tensor(contexts * 2, [ex.responses[0] for ex in batch]
                                 + [ex.responses[1] for ex in batch])
        targets = torch.tensor([ex.target for ex in batch], dtype=scores.dtype,
                               device=scores.device)
        loss = soft_preference_loss(scores[: len(batch)], scores[len(batch):], targets,
                                    reduction="sum") / total
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite reward-model loss at step {step}")
        loss.backward()
        loss_sum += float(loss.detach())
    scale = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
    for param_group in optimizer.param_groups:
        param_group["lr"] = lr * scale
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(rm.parameters(), max_grad_norm)
    optimizer.step()
    return loss_sum


def _load_trainer_state(out: Path, config: Mapping[str, Any], resume: bool
                        ) -> dict[str, Any] | None:
    """The trainer state in ``out`` (checked against ``config``), or None for a fresh run."""
    if out.exists():
        _recover(out)
    state_path = out / TRAINER_STATE_FILE
    if not state_path.is_file():
        if (out / RM_META_FILE).is_file() and not resume:
            raise FileExistsError(f"{out} already holds a reward model; choose another output "
                                  "directory")
        if (out / RM_META_FILE).is_file():
            raise FileExistsError(f"{out} holds a reward model without a trainer state (a "
                                  "finished one saved with keep_training_state=False, or not "
                                  "trained by train_reward_model): it cannot be resumed; "
                                  "choose another output directory")
        return None
    if not resume:
        raise FileExistsError(f"{out} already holds a reward-model checkpoint; resume it "
                              "(resume=True / --resume) or choose another output directory")
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    meta = json.loads((out / RM_META_FILE).read_text(encoding="utf-8"))
    if meta.get("step") != state.get("step"):
        raise ValueError(f"{out}: inconsistent checkpoint (metadata at step {meta.get('step')}, "
                         f"trainer state at step {state.get('step')})")
    saved = state.get("config", {})
    differing = sorted(k for k in config if saved.get(k) != config[k])
    if differing:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {config[k]!r}" for k in differing
                           if k != "data")
        if "data" in differing:
            detail = (detail + ", " if detail else "") + "the training examples differ"
        raise ValueError(f"cannot resume {out}: the run differs from the checkpoint ({detail}); "
                         "use the same data and hyperparameters, or another output directory")
    return state


# =========================================================================== atomic saves


def _commit(out: Path, write: Callable[[Path], None]) -> None:
    """Write a checkpoint into ``out/.next`` with ``write``, mark it complete, move it in."""
    out.mkdir(parents=True, exist_ok=True)
    _recover(out)
    staging = out / _STAGING
    staging.mkdir()
    try:
        write(staging)
        names = sorted(p.name for p in staging.iterdir())
        bad = [name for name in names if not (staging / name).is_file()]
        if bad:
            raise RuntimeError(f"checkpoint writer created non-files {bad}")
        tmp = staging / (_COMPLETE + ".tmp")
        tmp.write_text(json.dumps(names), encoding="utf-8")
        os.replace(tmp, staging / _COMPLETE)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _roll_forward(out)


def _roll_forward(out: Path) -> None:
    staging = out / _STAGING
    names: list[str] = json.loads((staging / _COMPLETE).read_text(encoding="utf-8"))
    for pattern in _OWNED:
        for old in out.glob(pattern):
            if old.name not in names and old.is_file():
                old.unlink()
    ordered = [n for n in names if n != RM_META_FILE] + ([RM_META_FILE]
                                                          if RM_META_FILE in names else [])
    for name in ordered:
        if (staging / name).exists():
            os.replace(staging / name, out / name)
    shutil.rmtree(staging)


def _recover(out: Path) -> None:
    """Finish a save that was interrupted after it was complete; discard an incomplete one."""
    staging = out / _STAGING
    if not staging.is_dir():
        return
    if (staging / _COMPLETE).is_file():
        _roll_forward(out)
    else:
        shutil.rmtree(staging)


# =========================================================================== reward function


class RewardModelReward(RewardFunction):
    """A trained reward model as an env reward (``"ai-rm"``, ``"human-rm"`` or a directory).

    Scores all episodes that ended in a step with ONE forward pass (``batch_size=None``;
    give a number to bound memory). Details: ``rm_raw_score`` ``(n,)``.

    Args:
        path: the RM directory (from ``rlaif-gym train-rm --out DIR`` or
            :meth:`RewardModel.save_pretrained`).
        model: an already loaded :class:`RewardModel` instead of ``path``.
        name: the reward's name (in errors and logs).
        expected_source: ``"ai"``/``"human"``: warn when the RM was trained on other labels.
        task: if given, must equal the RM's task.
        device, dtype: where and in which precision to load it.
        batch_size: sequences per forward pass (None: all at once).
        num_threads: ``torch.set_num_threads`` (process-wide) when given.

    Raises:
        ValueError: no ``path``/``model``, or a task mismatch. FileNotFoundError: ``path``
            is not a reward model directory.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *,
                 model: RewardModel | None = None, name: str = "rm",
                 expected_source: str | None = None, task: str | None = None,
                 device: str | torch.device = "cpu", dtype: Any = None,
                 batch_size: int | None = None, num_threads: int | None = None) -> None:
        self.name = name
        if (path is None) == (model is None):
            raise ValueError(f"reward {name!r} needs path=<directory of a trained reward model> "
                             "(made by `rlaif-gym train-rm --out DIR`)" if path is None else
                             f"reward {name!r}: give path= or model=, not both")
        if batch_size is not None:
            _check_positive("batch_size", batch_size)
        if num_threads is not None:
            _check_positive("num_threads", num_threads)
            torch.set_num_threads(num_threads)
        if model is None:
            p = Path(os.fspath(path)).expanduser()
            if not p.is_dir():
                raise FileNotFoundError(f"reward {name!r}: reward model directory {p} does not "
                                        "exist")
            model = RewardModel.from_pretrained(p, device=device, dtype=dtype)
        self.rm = model
        self.rm.eval()
        self.path = None if path is None else Path(os.fspath(path))
        self.batch_size = batch_size
        if task is not None and get_task(task).name != self.rm.task.name:
            raise ValueError(f"reward {name!r}: the reward model at {self.path} was trained for "
                             f"task {self.rm.task.name!r}, not {task!r}")
        source = self.rm.label_source
        if expected_source is not None and source not in (None, expected_source):
            import warnings

            warnings.warn(f"reward {name!r}: the reward model at {self.path} was trained on "
                          f"{source!r} labels, not {expected_source!r}", stacklevel=2)

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> RewardOutput:
        raw = self.rm.score(list(prompts), list(completions), batch_size=self.batch_size)
        return RewardOutput(scores=raw, details={"rm_raw_score": raw.copy()})

    def __repr__(self) -> str:
        return f"RewardModelReward(name={self.name!r}, path={str(self.path)!r})"

