"""Reward models from a task's data: train on AI labels or human choices, evaluate against
held-out human choices (``rlaif-gym train-rm``, ``rlaif-gym eval-rm``).

:func:`train_rm` splits the task's comparisons by context (post or dialogue: no context is on
both sides), joins the train side with AI soft labels (``labels=``) or the human choices
(``human=True``), and trains :func:`rewards.reward_model.train_reward_model` into ``out``,
printing the held-out pairwise accuracy after every epoch. ``out/split.json`` records the
split, so the AI-RM and the human-RM of one study share it (``split_file=``). A run that was
interrupted resumes with ``resume=True``; an ``out`` that holds a finished or unfinished run
is never overwritten otherwise.

:func:`evaluate_rm` returns a trained RM's pairwise accuracy against the human choices with
N and a 95% Wilson interval, on one side of a split (default: the RM's own test side).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rewards.reward_model import (
    PairSplit,
    RewardModel,
    evaluate_pairwise,
    examples_from_human,
    examples_from_labels,
    read_labels,
    split_pairs,
    train_reward_model,
)
from rlaif_gym.data import load_preference_pairs
from rlaif_gym.defaults import DEFAULT_POLICY, TASKS
from rlaif_gym.errors import UsageError

__all__ = ["SPLIT_FILE", "evaluate_rm", "load_task_pairs", "split_for", "train_rm"]

SPLIT_FILE = "split.json"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def load_task_pairs(task: str, *, pairs: str | os.PathLike[str] | None = None,
                    data_dir: str | os.PathLike[str] | None = None, split: str | None = None,
                    high_confidence: bool = False, limit: int | None = None) -> Sequence[Any]:
    """The task's preference pairs (:func:`rlaif_gym.data.load_preference_pairs`), the first
    ``limit`` of them when given.

    Raises:
        UsageError: an unknown task or data that cannot be loaded.
    """
    if task not in TASKS:
        raise UsageError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
    try:
        loaded = load_preference_pairs(task, path=pairs, data_dir=data_dir,
                                       **({"split": split} if split is not None else {}),
                                       high_confidence=high_confidence)
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"cannot load {task} pairs: {exc}") from exc
    return loaded if limit is None else loaded[:limit]


def split_for(pairs: Sequence[Any], out: Path, *, split_file: str | os.PathLike[str] | None,
              test_fraction: float, split_seed: int,
              log: Callable[[str], None] = _stderr) -> PairSplit:
    """The split to use: ``split_file``, else a new one by context; an existing
    ``out/split.json`` must be the same split (one that cannot be read, a torn copy, is
    reported and written again: it is derived from the options). Ids missing from the pairs
    are errors.

    Raises:
        UsageError: an unreadable split file, another split than ``out``'s, or ids that
            are not among the pairs.
    """
    ids = {str(p.id) for p in pairs}
    try:
        if split_file is not None:
            split = PairSplit.load(split_file)
        else:
            split = split_pairs(pairs, test_fraction, split_seed,
                                source=str(getattr(pairs, "source", "")))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot split the pairs: {exc}") from exc
    existing = out / SPLIT_FILE
    old = None
    if existing.is_file():
        try:
            old = PairSplit.load(existing)
        except ValueError as exc:
            log(f"rlaif-gym train-rm: warning: {existing} cannot be read ({exc}); it is "
                "written again from this run's split")
    if old is not None:
        if (set(old.train), set(old.test)) != (set(split.train), set(split.test)):
            raise UsageError(f"{existing} holds another split than this run's (other pairs, "
                             "--split-seed, --test-fraction or --split-file); use another --out")
    unknown = split.side("all") - ids
    if unknown:
        raise UsageError(f"the split has {len(unknown)} ids that are not among the loaded pairs "
                         f"(e.g. {sorted(unknown)[:3]}); load the same pairs it was made from")
    return split


def train_rm(
    out: str | os.PathLike[str],
    *,
    task: str,
    labels: str | os.PathLike[str] | None = None,
    human: bool = False,
    pairs: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    split: str | None = None,
    high_confidence: bool = False,
    limit: int | None = None,
    base: str = DEFAULT_POLICY,
    epochs: int = 1,
    lr: float = 1e-5,
    batch_size: int = 8,
    grad_accum: int = 1,
    max_length: int = 512,
    warmup_steps: int = 0,
    weight_decay: float = 0.0,
    seed: int = 0,
    split_seed: int = 0,
    test_fraction: float = 0.1,
    split_file: str | os.PathLike[str] | None = None,
    max_steps: int | None = None,
    save_every: int | None = None,
    keep_training_state: bool = True,
    eval_batch_size: int = 16,
    threads: int | None = None,
    device: str = "cpu",
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = _stderr,
) -> dict[str, Any]:
    """Train a reward model on AI soft labels (``labels``) or on the human choices
    (``human=True``) of the train side of a by-context split; see the module docstring.

    Returns:
        ``{"out", "step", "epochs_completed", "label_source", "metrics"}`` (the last
        epoch's metrics: train loss, held-out accuracy with its CI and N).

    Raises:
        UsageError: neither or both of ``labels``/``human``, an ``out`` that holds a run
            (without ``resume``), bad data, labels or split, labels calibrated on test-side
            pairs.
    """
    if (labels is None) == (not human):
        raise UsageError("give exactly one label source: labels=LABELS.jsonl (AI soft labels) "
                         "or human=True (the human choices)")
    if not 0.0 < test_fraction < 1.0:
        raise UsageError(f"test_fraction must be in (0, 1), got {test_fraction}")
    out = Path(out)
    if (out / "rm_meta.json").is_file() and not resume:
        raise UsageError(f"{out} already holds a reward model; pass --resume to continue it or "
                         "choose another --out")
    loaded = load_task_pairs(task, pairs=pairs, data_dir=data_dir, split=split,
                             high_confidence=high_confidence, limit=limit)
    the_split = split_for(loaded, out, split_file=split_file, test_fraction=test_fraction,
                          split_seed=split_seed, log=log)
    train_ids, test_ids = the_split.side("train"), the_split.side("test")
    train_pairs = [p for p in loaded if str(p.id) in train_ids]
    test_pairs = [p for p in loaded if str(p.id) in test_ids and p.human_choice is not None]

    if labels is not None:
        try:
            ai_labels = read_labels(labels)
            joined = examples_from_labels(train_pairs, ai_labels)
        except (OSError, ValueError) as exc:
            raise UsageError(f"{labels}: {exc}") from exc
        leaked = sorted(str(label.id) for label in ai_labels
                        if label.calibration and label.calibration.get("fit")
                        and str(label.id) in test_ids)
        if leaked:
            raise UsageError(f"{labels}: the labels were calibrated on the human choices of "
                             f"{len(leaked)} test-side pairs (e.g. {leaked[:3]}), so the "
                             "held-out accuracy would not be held out; calibrate again with "
                             "this run's split.json train side as the fit ids, or pass that "
                             "split to train-rm with --split-file")
        examples, label_source = joined.examples, "ai"
        all_ids = {str(p.id) for p in loaded}
        outside = sum(1 for label in ai_labels if str(label.id) not in all_ids)
        if outside:
            log(f"rlaif-gym train-rm: warning: {outside} labels have no pair among the loaded "
                "pairs (other --pairs/--data-dir/--split than for labeling?)")
        note = (f"{len(examples)} labeled train pairs ({joined.pairs_without_label} train "
                "pairs have no label)")
    else:
        try:
            examples = examples_from_human(train_pairs)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        label_source = "human"
        note = f"{len(examples)} human-labeled train pairs"
    out.mkdir(parents=True, exist_ok=True)
    the_split.save(out / SPLIT_FILE)
    log(f"train-rm: {note}; {len(test_pairs)} held-out test pairs with human choices; split "
        f"by context: {len(the_split.train)} train / {len(the_split.test)} test pair ids "
        f"(seed {the_split.seed}) -> {out / SPLIT_FILE}")
    try:
        result = train_reward_model(
            examples, base=base, task=task, label_source=label_source, epochs=epochs, lr=lr,
            batch_size=batch_size, grad_accum=grad_accum, max_length=max_length,
            eval_pairs=test_pairs or None, eval_batch_size=eval_batch_size, out_dir=out,
            seed=seed, resume=resume, progress=progress, num_threads=threads,
            weight_decay=weight_decay, warmup_steps=warmup_steps, max_steps=max_steps,
            save_every=save_every, keep_training_state=keep_training_state, log=log,
            device=device,
        )
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    return {"out": str(out), "step": result.step, "epochs_completed": result.epochs_completed,
            "label_source": label_source,
            "metrics": result.history[-1] if result.history else {}}


def evaluate_rm(
    model_dir: str | os.PathLike[str],
    *,
    task: str | None = None,
    pairs: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    split: str | None = None,
    high_confidence: bool = False,
    limit: int | None = None,
    split_file: str | os.PathLike[str] | None = None,
    side: str | None = None,
    batch_size: int = 16,
    threads: int | None = None,
    device: str = "cpu",
    log: Callable[[str], None] = _stderr,
) -> dict[str, Any]:
    """Pairwise accuracy of the reward model in ``model_dir`` against the human choices.

    Args:
        model_dir: a reward-model folder (from :func:`train_rm`).
        task: default the RM's task. pairs, data_dir, split, high_confidence, limit: which
            pairs (:func:`load_task_pairs`).
        split_file, side: evaluate one side (``"train"``, ``"test"``, ``"all"``) of a split;
            default the side ``"test"`` of ``model_dir/split.json`` when it exists, else all
            loaded pairs.

    Returns:
        ``{"model", "task", "pairs" (which side of which split), "label_source", "accuracy",
        "ci_low", "ci_high", "n", "ties", ...}``.

    Raises:
        UsageError: an unloadable model, bad data, a side without a split file, or no pair
            on the side.
    """
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    model_dir = Path(model_dir)
    if side is not None and side not in ("train", "test", "all"):
        raise UsageError(f"side must be train, test or all, got {side!r}")
    try:
        rm = RewardModel.from_pretrained(model_dir, device=device)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load the reward model: {exc}") from exc
    task = task or rm.task.name
    if task != rm.task.name:
        log(f"rlaif-gym eval-rm: warning: the reward model was trained for task "
            f"{rm.task.name!r}, evaluating on {task!r}")
    loaded = load_task_pairs(task, pairs=pairs, data_dir=data_dir, split=split,
                             high_confidence=high_confidence, limit=limit)
    if split_file is None and (model_dir / SPLIT_FILE).is_file() and side != "all":
        split_file = model_dir / SPLIT_FILE
    side = side or ("test" if split_file is not None else "all")
    selected = list(loaded)
    if side != "all":
        if split_file is None:
            raise UsageError(f"--side {side} needs a split file (--split-file)")
        try:
            the_split = PairSplit.load(split_file)
        except (OSError, ValueError) as exc:
            raise UsageError(str(exc)) from exc
        keep = the_split.side(side)
        selected = [p for p in loaded if str(p.id) in keep]
        if not selected:
            raise UsageError(f"no loaded pair is on side {side!r} of {split_file}; load the "
                             "pairs the split was made from, or pass --side all to evaluate "
                             "every loaded pair")
    try:
        acc = evaluate_pairwise(rm, selected, batch_size=batch_size)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    where = f"{split_file} side {side}" if side != "all" else "all pairs"
    return {"model": str(model_dir), "task": task, "pairs": where,
            "label_source": rm.label_source, **acc.to_dict()}
