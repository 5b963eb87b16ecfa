"""Reward models trained on different label sources, compared pair by pair on the same
held-out pairs.

Every reward model scores both responses of every test-side pair of ``--split-file`` (all
of them must have been trained on its train side); the script prints and writes, per model,
its pairwise accuracy against the human choices (95% Wilson interval), and per couple of
models the paired accuracy difference with a percentile bootstrap interval over pairs (the
same pairs, so most of the pair-to-pair noise cancels). With ``--labels NAME=FILE`` it also
reports each labeler's own alignment on those pairs and how often each RM agrees with it.

    PYTHONPATH=. python research/rm_label_source.py --data-dir ../shared/data \\
        --split-file RUN/rm-stack/split.json --rm stack=RUN/rm-stack --rm base=RUN/rm-base \\
        --rm human=RUN/rm-human --untrained init=smollm2-135m-instruct \\
        --labels stack=STACK.jsonl \\
        --labels base=reports/labels/tldr_hc-base-0shot-qwen1.5b.jsonl --out R.json
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

from benchmarks._report import command_line, write_json  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rewards.alignment import (  # noqa: E402
    alignment_report,
    read_labels_jsonl,
    wilson_interval,
)
from rewards.reward_model import PairSplit, RewardModel  # noqa: E402
from rlaif_gym.data import load_preference_pairs  # noqa: E402


def _named(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, value


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int = 10_000,
                     seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``a - b`` (per-pair credits in {0, 0.5, 1}) and its 95% percentile bootstrap
    interval, resampling pairs."""
    d = np.asarray(a, float) - np.asarray(b, float)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    return float(d.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--split-file", required=True, help="the RMs' split.json")
    parser.add_argument("--rm", action="append", type=_named, default=[], metavar="NAME=DIR",
                        help="a reward model trained by train-rm on --split-file's train side")
    parser.add_argument("--untrained", action="append", type=_named, default=[],
                        metavar="NAME=SPEC",
                        help="also score the untrained start of training: this backbone with "
                             "the score head train-rm initialises (seed 0, max length 512)")
    parser.add_argument("--labels", action="append", type=_named, default=[],
                        metavar="NAME=LABELS.jsonl",
                        help="the labels an RM was trained on (same NAME), for agreement")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if not args.rm and not args.untrained:
        parser.error("give at least one --rm or --untrained")

    import torch

    torch.set_num_threads(args.threads)
    split = PairSplit.load(args.split_file)
    test = set(split.test)
    pairs = [p for p in load_preference_pairs("tldr", data_dir=args.data_dir,
                                              high_confidence=True)
             if str(p.id) in test and p.human_choice is not None]
    human = np.array([p.human_choice for p in pairs])
    credit: dict[str, np.ndarray] = {}
    first: dict[str, np.ndarray] = {}  # 1.0 where the model prefers responses[0]
    result: dict = {"command": command_line(__file__, argv), "split_file": args.split_file,
                    "n_pairs": len(pairs), "rms": {}, "labelers": {}, "paired": {}}
    models = [(name, path, False) for name, path in args.untrained]
    models += [(name, path, True) for name, path in args.rm]
    for name, path, trained in models:
        if trained:
            own = Path(path) / "split.json"
            if own.is_file() and set(PairSplit.load(own).test) != test:
                raise SystemExit(f"{path} was trained with another split than "
                                 f"{args.split_file}")
            rm = RewardModel.from_pretrained(path)
        else:
            rm = RewardModel.from_base(path, task="tldr", max_length=512, seed=0)
        ctx = [p.context for p in pairs]
        scores = rm.score(ctx * 2, [p.responses[0] for p in pairs] +
                          [p.responses[1] for p in pairs], batch_size=args.batch_size)
        a, b = scores[: len(pairs)], scores[len(pairs):]
        first[name] = np.where(a == b, 0.5, (a > b).astype(float))
        credit[name] = np.where(human == 0, first[name], 1.0 - first[name])
        acc = float(credit[name].mean())
        low, high = wilson_interval(float(credit[name].sum()), len(pairs))
        result["rms"][name] = {"dir": path, "trained": trained, "accuracy": acc,
                               "ci": [low, high], "label_source": rm.label_source}
        print(f"RM {name}: {100 * acc:.1f}% [{100 * low:.1f}, {100 * high:.1f}], "
              f"N={len(pairs)}", flush=True)
    for name, path in args.labels:
        by_id = {str(r["id"]): r for r in read_labels_jsonl(path).records}
        missing = [str(p.id) for p in pairs if str(p.id) not in by_id]
        if missing:
            raise SystemExit(f"{path}: no label for {len(missing)} test pairs, e.g. {missing[:3]}")
        records = [by_id[str(p.id)] for p in pairs]
        z = float(alignment_report(records, source=path).z_acc)
        p_first = np.array([float(r["p_first"]) for r in records])
        ai_first = np.where(p_first == 0.5, 0.5, (p_first > 0.5).astype(float))
        entry = {"file": path, "z_acc": z}
        if name in first:
            agree = np.where((ai_first == 0.5) | (first[name] == 0.5), 0.5,
                             (ai_first == first[name]).astype(float))
            entry["rm_agreement"] = float(agree.mean())
        result["labelers"][name] = entry
        print(f"labeler {name}: z_acc {100 * z:.1f}% on the same pairs"
              + (f"; its RM agrees with it on {100 * entry['rm_agreement']:.1f}%"
                 if "rm_agreement" in entry else ""), flush=True)
    for x, y in itertools.combinations(credit, 2):
        mean, low, high = paired_bootstrap(credit[x], credit[y])
        result["paired"][f"{x} - {y}"] = {"difference": mean, "ci": [low, high]}
        print(f"{x} - {y}: {100 * mean:+.1f} points [{100 * low:+.1f}, {100 * high:+.1f}] "
              "(paired bootstrap over pairs)")
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
