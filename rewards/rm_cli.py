"""``rlaif-gym train-rm`` and ``rlaif-gym eval-rm``: reward models from AI or human labels.

``train-rm`` trains a reward model (:mod:`rewards.reward_model`) on the pairs of a task::

    rlaif-gym train-rm --task tldr --data-dir DATA --labels labels.jsonl --out runs/rm-ai
    rlaif-gym train-rm --task tldr --data-dir DATA --human --out runs/rm-human

``--labels``: AI soft labels written by ``rlaif-gym label`` (target ``p_first``), joined to
the pairs by id, so load the pairs the same way as for labeling (``--task``, ``--pairs``,
``--data-dir``, ``--split``). ``--human``: the pairs' human choices (targets 0/1).

Train/test split: BY CONTEXT (for TL;DR the post, so comparisons of one post stay on one
side; for HH the dialogue), computed over ALL loaded pairs before the labels are joined
(:func:`rewards.reward_model.split_pairs`: groups sorted by content hash, shuffled with
``--split-seed``, ``round(--test-fraction * groups)`` test groups). The same pairs and seed
give the same split, so an AI-RM and a human-RM run on the same data share it; it is written
to ``OUT/split.json`` (``--split-file`` reuses a split file instead). Training uses the
train side; held-out pairwise accuracy against the HUMAN choices of the test side is printed
after every epoch.

``eval-rm DIR`` prints the pairwise accuracy of a trained RM against human preferences with
N and a 95% Wilson interval, on ``--side`` of ``--split-file`` (default: ``DIR/split.json``
when it exists, side ``test``).

Exit codes: 0 success, 2 bad input (files, data, a checkpoint that cannot be resumed),
130 interrupted (the last checkpoint stays; ``--resume`` continues it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rlaif_gym.cli import positive_float, positive_int

TASKS: tuple[str, ...] = ("tldr", "helpful", "harmless")
DEFAULT_BASE = "smollm2-135m-instruct"
SPLIT_FILE = "split.json"


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {value}")
    return value


def _add_data_args(p: argparse.ArgumentParser, task_required: bool) -> None:
    p.add_argument("--task", required=task_required, default=None, choices=TASKS)
    p.add_argument("--pairs", default=None, metavar="PATH",
                   help="pairs file (default: the task's data from --data-dir/RLAIF_GYM_DATA)")
    p.add_argument("--data-dir", default=None, help="data folder (default: $RLAIF_GYM_DATA)")
    p.add_argument("--split", default=None, help="data split (default: the task's default)")
    p.add_argument("--high-confidence", action="store_true",
                   help="keep only high-confidence human comparisons")
    p.add_argument("--limit", type=positive_int, default=None,
                   help="use only the first N loaded pairs (smoke runs; the split is made "
                        "over these)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train-rm`` and ``eval-rm`` subcommands."""
    t = subparsers.add_parser(
        "train-rm",
        help="train a reward model on AI soft labels or human preferences",
        description=("Train a reward model (scalar head on a causal LM) on the train side of a "
                     "by-post split; print held-out pairwise accuracy after every epoch."),
    )
    source = t.add_mutually_exclusive_group(required=True)
    source.add_argument("--labels", metavar="LABELS.jsonl",
                        help="AI labels from `rlaif-gym label` (soft targets p_first)")
    source.add_argument("--human", action="store_true", help="train on the human choices")
    _add_data_args(t, task_required=True)
    t.add_argument("--base", default=DEFAULT_BASE, metavar="SPEC",
                   help=f"backbone model spec (default: {DEFAULT_BASE})")
    t.add_argument("--epochs", type=positive_int, default=1)
    t.add_argument("--lr", type=positive_float, default=1e-5)
    t.add_argument("--batch-size", type=positive_int, default=8, help="pairs per micro-batch")
    t.add_argument("--grad-accum", type=positive_int, default=1,
                   help="micro-batches per optimizer step")
    t.add_argument("--max-length", type=positive_int, default=512,
                   help="tokens per (context, response) sequence")
    t.add_argument("--warmup-steps", type=int, default=0)
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--seed", type=int, default=0, help="head init and pair order")
    t.add_argument("--split-seed", type=int, default=0, help="train/test split seed")
    t.add_argument("--test-fraction", type=_fraction, default=0.1,
                   help="fraction of posts/contexts held out (default 0.1)")
    t.add_argument("--split-file", default=None, metavar="SPLIT.json",
                   help="reuse this split (e.g. OTHER_RUN/split.json) instead of computing one")
    t.add_argument("--max-steps", type=positive_int, default=None,
                   help="stop after this many optimizer steps (a checkpoint is saved)")
    t.add_argument("--save-every", type=positive_int, default=None,
                   help="also save a checkpoint every N optimizer steps")
    t.add_argument("--eval-batch-size", type=positive_int, default=16)
    t.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    t.add_argument("--device", default="cpu", help="torch device, e.g. cuda (%(default)s)")
    t.add_argument("--out", required=True, metavar="DIR", help="output directory")
    t.add_argument("--resume", action="store_true",
                   help="continue the checkpoint in --out (same data and hyperparameters)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=run_train)

    e = subparsers.add_parser(
        "eval-rm",
        help="pairwise accuracy of a reward model against human preferences",
        description="Print pairwise accuracy vs the human choices with N and a 95% CI.",
    )
    e.add_argument("model", metavar="DIR", help="reward model directory")
    _add_data_args(e, task_required=False)
    e.add_argument("--split-file", default=None, metavar="SPLIT.json",
                   help="evaluate one side of this split (default: DIR/split.json if present)")
    e.add_argument("--side", default=None, choices=("train", "test", "all"),
                   help="side of the split (default: test when a split file is used)")
    e.add_argument("--batch-size", type=positive_int, default=16)
    e.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    e.add_argument("--device", default="cpu", help="torch device, e.g. cuda (%(default)s)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=run_eval)


# --------------------------------------------------------------------------- helpers


class CliError(Exception):
    """A user error: printed as one line, exit code 2."""


def _error(command: str, message: str) -> int:
    print(f"rlaif-gym {command}: error: {message}", file=sys.stderr)
    return 2


def _load_pairs(args: argparse.Namespace, task: str) -> Any:
    from rlaif_gym.data import load_preference_pairs

    try:
        return load_preference_pairs(task, path=args.pairs, data_dir=args.data_dir,
                                     split=args.split, high_confidence=args.high_confidence,
                                     limit=args.limit)
    except (OSError, ValueError, KeyError) as exc:
        raise CliError(f"cannot load {task} pairs: {exc}") from exc


def _split_for(args: argparse.Namespace, pairs: Any, out: Path) -> Any:
    """The split to use: ``--split-file``, else the existing ``OUT/split.json`` (must match
    a recomputation when resuming), else a new one. Ids missing from the pairs are errors."""
    from rewards.reward_model import PairSplit, split_pairs

    ids = {str(p.id) for p in pairs}
    if args.split_file is not None:
        try:
            split = PairSplit.load(args.split_file)
        except (OSError, ValueError) as exc:
            raise CliError(str(exc)) from exc
    else:
        try:
            split = split_pairs(pairs, args.test_fraction, args.split_seed,
                                source=str(getattr(pairs, "source", "")))
        except ValueError as exc:
            raise CliError(f"cannot split the pairs: {exc}") from exc
    existing = out / SPLIT_FILE
    if existing.is_file():
        try:
            old = PairSplit.load(existing)
        except ValueError as exc:
            raise CliError(str(exc)) from exc
        if (set(old.train), set(old.test)) != (set(split.train), set(split.test)):
            raise CliError(f"{existing} holds another split than this run's (other pairs, "
                           "--split-seed, --test-fraction or --split-file); use another --out")
    unknown = split.side("all") - ids
    if unknown:
        raise CliError(f"the split has {len(unknown)} ids that are not among the loaded pairs "
                       f"(e.g. {sorted(unknown)[:3]}); load the same pairs it was made from")
    return split


# --------------------------------------------------------------------------- train-rm


def run_train(args: argparse.Namespace) -> int:
    """Train a reward model as described by ``args``; returns the exit code."""
    try:
        return _train(args)
    except CliError as exc:
        return _error("train-rm", str(exc))
    except KeyboardInterrupt:
        print(f"rlaif-gym train-rm: interrupted; the last checkpoint in {args.out} is kept; "
              "re-run with --resume to continue", file=sys.stderr)
        return 130


def _train(args: argparse.Namespace) -> int:
    from rewards.reward_model import (
        examples_from_human,
        examples_from_labels,
        read_labels,
        train_reward_model,
    )

    out = Path(args.out)
    if (out / "rm_meta.json").is_file() and not args.resume:
        raise CliError(f"{out} already holds a reward model; pass --resume to continue it or "
                       "choose another --out")
    pairs = _load_pairs(args, args.task)
    split = _split_for(args, pairs, out)
    train_ids, test_ids = split.side("train"), split.side("test")
    train_pairs = [p for p in pairs if str(p.id) in train_ids]
    test_pairs = [p for p in pairs if str(p.id) in test_ids and p.human_choice is not None]

    if args.labels is not None:
        try:
            labels = read_labels(args.labels)
            joined = examples_from_labels(train_pairs, labels)
        except (OSError, ValueError) as exc:
            raise CliError(f"{args.labels}: {exc}") from exc
        leaked = sorted(str(label.id) for label in labels
                        if label.calibration and label.calibration.get("fit")
                        and str(label.id) in test_ids)
        if leaked:
            raise CliError(f"{args.labels}: the labels were calibrated on the human choices "
                           f"of {len(leaked)} test-side pairs (e.g. {leaked[:3]}), so the "
                           "held-out accuracy would not be held out; re-run `rlaif-gym "
                           "calibrate` with --fit-ids set to this run's split.json (its train "
                           "side), or pass that split to train-rm with --split-file")
        examples, label_source = joined.examples, "ai"
        all_ids = {str(p.id) for p in pairs}
        outside = sum(1 for label in labels if str(label.id) not in all_ids)
        if outside:
            print(f"rlaif-gym train-rm: warning: {outside} labels have no pair among the "
                  "loaded pairs (other --pairs/--data-dir/--split than for labeling?)",
                  file=sys.stderr)
        note = (f"{len(examples)} labeled train pairs ({joined.pairs_without_label} train "
                "pairs have no label)")
    else:
        try:
            examples = examples_from_human(train_pairs)
        except ValueError as exc:
            raise CliError(str(exc)) from exc
        label_source = "human"
        note = f"{len(examples)} human-labeled train pairs"
    out.mkdir(parents=True, exist_ok=True)
    split.save(out / SPLIT_FILE)
    print(f"train-rm: {note}; {len(test_pairs)} held-out test pairs with human choices; "
          f"split by context: {len(split.train)} train / {len(split.test)} test pair ids "
          f"(seed {split.seed}) -> {out / SPLIT_FILE}", file=sys.stderr)

    try:
        result = train_reward_model(
            examples, base=args.base, task=args.task, label_source=label_source,
            epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
            grad_accum=args.grad_accum, max_length=args.max_length,
            eval_pairs=test_pairs or None, eval_batch_size=args.eval_batch_size, out_dir=out,
            seed=args.seed, resume=args.resume, progress=not args.no_progress,
            num_threads=args.threads, weight_decay=args.weight_decay,
            warmup_steps=args.warmup_steps, max_steps=args.max_steps,
            save_every=args.save_every, log=lambda line: print(line, file=sys.stderr),
            device=args.device,
        )
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    print(json.dumps({"out": str(out), "step": result.step,
                      "epochs_completed": result.epochs_completed,
                      "label_source": label_source,
                      "metrics": result.history[-1] if result.history else {}}))
    return 0


# --------------------------------------------------------------------------- eval-rm


def run_eval(args: argparse.Namespace) -> int:
    """Print the pairwise accuracy of a reward model; returns the exit code."""
    try:
        return _eval(args)
    except CliError as exc:
        return _error("eval-rm", str(exc))


def _eval(args: argparse.Namespace) -> int:
    from rewards.reward_model import PairSplit, RewardModel, evaluate_pairwise

    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    model_dir = Path(args.model)
    try:
        rm = RewardModel.from_pretrained(model_dir, device=args.device)
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot load the reward model: {exc}") from exc
    task = args.task or rm.task.name
    if task != rm.task.name:
        print(f"rlaif-gym eval-rm: warning: the reward model was trained for task "
              f"{rm.task.name!r}, evaluating on {task!r}", file=sys.stderr)
    pairs = _load_pairs(args, task)
    split_file = args.split_file
    if split_file is None and (model_dir / SPLIT_FILE).is_file() and args.side != "all":
        split_file = model_dir / SPLIT_FILE
    side = args.side or ("test" if split_file is not None else "all")
    if side != "all":
        if split_file is None:
            raise CliError(f"--side {side} needs a split file (--split-file)")
        try:
            split = PairSplit.load(split_file)
        except (OSError, ValueError) as exc:
            raise CliError(str(exc)) from exc
        keep = split.side(side)
        pairs = [p for p in pairs if str(p.id) in keep]
        if not pairs:
            raise CliError(f"no loaded pair is on side {side!r} of {split_file}; load the "
                           "pairs the split was made from, or pass --side all to evaluate "
                           "every loaded pair")
    try:
        acc = evaluate_pairwise(rm, pairs, batch_size=args.batch_size)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    where = f"{split_file} side {side}" if side != "all" else "all pairs"
    if args.json:
        print(json.dumps({"model": str(model_dir), "task": task, "pairs": where,
                          "label_source": rm.label_source, **acc.to_dict()}))
    else:
        print(f"{model_dir} ({rm.label_source or 'unknown'} labels), task {task}, {where}: "
              f"pairwise accuracy vs human {acc.accuracy:.3f} "
              f"(95% CI {acc.ci_low:.3f}-{acc.ci_high:.3f}), N={acc.n}, ties={acc.ties}")
    return 0
