"""Run :func:`agents.sft.train_sft` from the command line (the flags proposed for
``rlaif-gym sft``; this script stands in until the CLI wires them).

Example (the measured SmolLM2 run of research/sft/README.md)::

    PYTHONPATH=. python research/sft/run_sft.py --task tldr --policy smollm2-135m-instruct \\
        --data-dir ../shared/data --exclude-eval-n 250 --heldout-n 25 --epochs 2 --lr 5e-5 \\
        --threads 1 --out runs/sft/smollm2-tldr-lr5e-5

``--exclude-eval-n N`` excludes the first N prompts of the ``--eval-seed`` permutation of the
split, i.e. the prompts ``rlaif-gym evaluate --n N --seed S`` and ``rlaif-gym reproduce
--eval-n N --seed S`` evaluate on (:func:`agents.sft_data.seeded_eval_ids`); ``--exclude-ids``
adds the ids of a JSON list file (e.g. reproduce's ``data/eval_ids.json``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path


def _ids_file(path: str) -> list[str]:
    ids = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(ids, list):
        raise argparse.ArgumentTypeError(f"{path} must hold a JSON list of prompt ids")
    return [str(i) for i in ids]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="tldr", choices=("tldr", "helpful", "harmless"))
    p.add_argument("--policy", default="smollm2-135m-instruct", help="start policy spec")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--split", default="test")
    p.add_argument("--source", default="auto", choices=("auto", "local", "hub", "sample"))
    p.add_argument("--exclude-eval-n", type=int, default=0, metavar="N",
                   help="exclude the first N prompts of the --eval-seed permutation")
    p.add_argument("--eval-seed", type=int, default=None, help="default: --seed")
    p.add_argument("--exclude-ids", type=_ids_file, default=[], metavar="FILE",
                   help="JSON list of prompt ids never trained on")
    p.add_argument("--heldout-n", type=int, default=25)
    p.add_argument("--heldout-ids", type=_ids_file, default=None, metavar="FILE")
    p.add_argument("--max-train", type=int, default=None)
    p.add_argument("--train-last-layers", type=int, default=None, metavar="N",
                   help="fine-tune only the last N decoder blocks (default: all parameters)")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--lr-scheduler", default="linear")
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--grad-accum", type=int, default=4)
    p.add_argument("--max-prompt-tokens", type=int, default=384)
    p.add_argument("--max-completion-tokens", type=int, default=128)
    p.add_argument("--eval-max-new-tokens", type=int, nargs="+", default=[48, 64])
    p.add_argument("--temperature", type=float, default=0.9)
    p.add_argument("--sample-batch-size", type=int, default=16)
    p.add_argument("--no-eval-before", action="store_true")
    p.add_argument("--heldout-every", type=int, default=None)
    p.add_argument("--save-every", type=int, default=None)
    p.add_argument("--keep-checkpoints", action="store_true")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", required=True)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)
    from agents.sft import SFTConfig, train_sft
    from agents.sft_data import seeded_eval_ids
    from rlaif_gym.tasks import get_task

    exclude = list(args.exclude_ids)
    if args.exclude_eval_n:
        records = get_task(args.task).load_prompts(split=args.split, data_dir=args.data_dir,
                                                   source=args.source)
        seed = args.seed if args.eval_seed is None else args.eval_seed
        exclude += seeded_eval_ids(records, args.exclude_eval_n, seed=seed)
    config = SFTConfig(
        out_dir=args.out, task=args.task, policy=args.policy, data_dir=args.data_dir,
        split=args.split, source=args.source, exclude_ids=tuple(dict.fromkeys(exclude)),
        heldout_ids=args.heldout_ids, heldout_n=args.heldout_n, max_train=args.max_train,
        train_last_layers=args.train_last_layers,
        epochs=args.epochs, lr=args.lr, lr_scheduler=args.lr_scheduler,
        warmup_ratio=args.warmup_ratio, weight_decay=args.weight_decay,
        batch_size=args.batch_size, grad_accum=args.grad_accum,
        max_prompt_tokens=args.max_prompt_tokens,
        max_completion_tokens=args.max_completion_tokens,
        eval_max_new_tokens=tuple(args.eval_max_new_tokens), temperature=args.temperature,
        sample_batch_size=args.sample_batch_size, eval_before=not args.no_eval_before,
        heldout_every=args.heldout_every, save_every=args.save_every,
        keep_checkpoints=args.keep_checkpoints, bf16=args.bf16, seed=args.seed,
        threads=args.threads, device=args.device, resume=args.resume,
        progress=not args.no_progress)
    try:
        result = train_sft(config)
    except (FileExistsError, ValueError) as exc:
        print(f"run_sft: error: {exc}", file=sys.stderr)
        return 2
    m = result.metrics
    loss = m["heldout_loss"]
    print(f"held-out loss: {loss['before']} -> {loss['after']} ({loss['unit']})")
    for phase in ("before", "after"):
        for key, entry in (m["samples"][phase] or {}).items():
            print(f"{phase:6s} {key}: stop {entry['stop_rate']['rate']:.3f} "
                  f"tokens {entry['length']['mean_tokens']:.1f} words "
                  f"{entry['length']['mean_words']:.1f} ROUGE-L "
                  f"{(entry['rouge_l'] or {}).get('fmeasure')}")
    print(f"references: {m['references']['length'] if m['references'] else None}")
    print(f"wall: {m['wall_s']}; policy: {result.policy_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
