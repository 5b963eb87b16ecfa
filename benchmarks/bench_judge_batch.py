"""Benchmark: chain-of-thought labeling with the judge's forward batch at its default (8
prompts) vs one forward batch for all prompts of a labeling step (2 per pair); or, with
``--compare shared-prefix``, each CoT prompt prefilled in full (left-padded batch,
``model.generate``) vs the prefix that both orders of a pair share (preamble + context) run
once per pair and the decoding batched over all prompts
(:meth:`TransformersJudge.generate_and_score`); or, with ``--compare prefill``, both sharing
that prefix, the three prefill costs it left: the prompts' own suffixes (the two responses in
each order) in one forward padded to the longest (about 60% padding on HH pairs), every pair's
prefix run in full (the preamble again each time) and the rationale run again to score the
ending, against suffixes in length buckets, the template part of the prefixes run once (the
prefix memo) and the rationale tokens kept in the decoding's cache.

``label_pairs(batch_size=N)`` hands the judge 2N CoT prompts per step (both orders of N
pairs). Before this benchmark the ``rlaif-gym label`` CLI did not pass ``--batch-size`` to
the judge, whose own batch stayed at 8: with ``--batch-size 10`` the 20 prompts were decoded
as three greedy runs (8 + 8 + 4 prompts, each up to ``--max-tokens`` steps). With the judge
batch at 2N they are one run.

Both settings label the same pairs with the same judge object, side by side in one process,
alternating which goes first per step; each step is timed ``--repeats`` times and the
fastest counts. Reports pairs/s of both, the speed-up, how many rationales are identical,
and the max abs difference of the soft labels (the batch composition changes the padding,
so float rounding may differ slightly).

Example::

    PYTHONPATH=. python benchmarks/bench_judge_batch.py --task harmless --pairs 10 \\
        --batch-size 10 --threads 2 --out reports/judge_batch_qwen1.5b.json
    PYTHONPATH=. python benchmarks/bench_judge_batch.py --task harmless --pairs 10 \\
        --batch-size 10 --threads 2 --compare shared-prefix \\
        --out reports/cot_shared_prefix_qwen1.5b.json
    PYTHONPATH=. python benchmarks/bench_judge_batch.py --task helpful --prompt detailed \\
        --pairs 10 --batch-size 10 --threads 2 --compare prefill \\
        --out reports/cot_prefill_qwen1.5b.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from _report import command_line, write_json  # benchmarks/ is first on sys.path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--judge", default="qwen2.5-coder-1.5b-instruct")
    p.add_argument("--task", default="harmless", choices=["tldr", "helpful", "harmless"])
    p.add_argument("--prompt", default="base")
    p.add_argument("--pairs", type=int, default=10, help="pairs to time (default 10)")
    p.add_argument("--batch-size", type=int, default=10,
                   help="pairs per labeling step (default 10)")
    p.add_argument("--small-batch", type=int, default=8,
                   help="the judge's forward batch of the slow setting (default 8, the "
                        "TransformersJudge default)")
    p.add_argument("--compare", default="batch",
                   choices=["batch", "shared-prefix", "prefill", "preallocate"],
                   help="batch: judge batch --small-batch vs 2 x --batch-size; shared-prefix: "
                        "both at 2 x --batch-size, each prompt prefilled in full (left-padded "
                        "batch, model.generate) vs each pair's shared prefix run once "
                        "(TransformersJudge.min_shared_prefix); prefill: both sharing the prefix, "
                        "the suffixes in one forward padded to the longest, every group's "
                        "prefix run in full and the rationale run again for scoring vs "
                        "suffixes in length buckets, the template part of the prefixes run "
                        "once and the rationale kept in the cache (suffix_buckets, "
                        "reuse_prefix, reuse_generated); preallocate: all of those, the decoding "
                        "cache grown by torch.cat per token vs written into buffers allocated "
                        "once (TransformersJudge.preallocate)")
    p.add_argument("--max-tokens", type=int, default=128, help="rationale tokens (default 128)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", default=None, help="judge dtype (default: the loader's)")
    p.add_argument("--data-dir", default=os.environ.get("RLAIF_GYM_DATA",
                                                        str(REPO.parent / "shared" / "data")))
    p.add_argument("--out", default=None, help="write the results as JSON here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import torch

    from rewards.judges import load_judge
    from rewards.preference import label_pairs, pair_problem
    from rlaif_gym.data import load_preference_pairs

    torch.set_num_threads(args.threads)
    options = {"num_threads": args.threads}
    if args.dtype:
        options["dtype"] = args.dtype
    judge = load_judge(args.judge, **options)
    pairs = load_preference_pairs(args.task, data_dir=args.data_dir, limit=args.pairs + 40)
    pairs = [p for p in pairs if pair_problem(p) is None][:args.pairs]
    # the judge attributes of each setting; the savings of --compare prefill and preallocate
    # are off unless named
    two = 2 * args.batch_size
    old = {"min_shared_prefix": 16, "suffix_buckets": False, "reuse_prefix": False,
           "reuse_generated": False, "preallocate": False}
    prefill = {"suffix_buckets": True, "reuse_prefix": True, "reuse_generated": True}
    if args.compare == "batch":
        settings = {"small": {**old, "batch_size": args.small_batch},
                    "one_batch": {**old, "batch_size": two}}
    elif args.compare == "shared-prefix":  # min_shared_prefix beyond any prompt: no groups
        settings = {"small": {**old, "batch_size": two, "min_shared_prefix": 10**9},
                    "one_batch": {**old, "batch_size": two}}
    elif args.compare == "prefill":
        settings = {"small": {**old, "batch_size": two},
                    "one_batch": {**old, "batch_size": two, **prefill}}
    else:
        settings = {"small": {**old, "batch_size": two, **prefill},
                    "one_batch": {**old, "batch_size": two, **prefill, "preallocate": True}}

    def run(name: str, chunk: list) -> list:
        for attribute, value in settings[name].items():
            setattr(judge, attribute, value)
        judge.clear_prefix_cache()  # time each step on its own, no prefix kept from the last
        return list(label_pairs(judge, chunk, prompt=args.prompt, cot=True,
                                cot_max_tokens=args.max_tokens, batch_size=len(chunk),
                                progress=False))

    if args.compare == "batch":
        names = {k: f"judge batch {v['batch_size']}" for k, v in settings.items()}
    elif args.compare == "shared-prefix":
        names = {"small": "full prefill", "one_batch": "shared prefix"}
    elif args.compare == "prefill":
        names = {"small": "padded suffixes, prefixes in full, rationale re-run",
                 "one_batch": "length buckets, prefix memo, rationale kept"}
    else:
        names = {"small": "cache grown by torch.cat", "one_batch": "cache preallocated"}
    run("one_batch", pairs[:1])  # warm-up, not timed
    total = {name: 0.0 for name in settings}
    labels: dict[str, list] = {name: [] for name in settings}
    for k, start in enumerate(range(0, len(pairs), args.batch_size)):
        chunk = pairs[start:start + args.batch_size]
        order = list(settings) if k % 2 == 0 else list(settings)[::-1]
        fastest = {name: float("inf") for name in settings}
        for repeat in range(args.repeats):
            for name in order:
                t = time.perf_counter()
                out = run(name, chunk)
                fastest[name] = min(fastest[name], time.perf_counter() - t)
                if repeat == args.repeats - 1:
                    labels[name].extend(out)
        for name in settings:
            total[name] += fastest[name]
        print(f"  step {k + 1}: {names['small']}: {fastest['small']:.1f}s, "
              f"{names['one_batch']}: {fastest['one_batch']:.1f}s", flush=True)
    p_small = np.array([x.p_first for x in labels["small"]])
    p_one = np.array([x.p_first for x in labels["one_batch"]])
    same = sum(a.rationales == b.rationales
               for a, b in zip(labels["small"], labels["one_batch"], strict=True))
    n = len(pairs)
    result = {
        "judge": args.judge, "task": args.task, "prompt": args.prompt, "pairs": n,
        "pairs_per_step": args.batch_size, "max_tokens": args.max_tokens,
        "threads": args.threads, "dtype": str(judge.model.dtype).removeprefix("torch."),
        "compare": args.compare, "settings": names,
        "judge_batch_small": settings["small"]["batch_size"],
        "judge_batch_one": settings["one_batch"]["batch_size"],
        "repeats": args.repeats,
        "small_pairs_per_s": n / total["small"], "one_batch_pairs_per_s": n / total["one_batch"],
        "speedup": total["small"] / total["one_batch"],
        "pairs_with_identical_rationales": same,
        "max_abs_diff_p_first": float(np.abs(p_small - p_one).max()),
        "same_ai_choice": int(((p_small > 0.5) == (p_one > 0.5)).sum()),
        "command": command_line(__file__, argv),
    }
    print(f"{names['small']}: {result['small_pairs_per_s']:.4f} pairs/s; "
          f"{names['one_batch']}: {result['one_batch_pairs_per_s']:.4f} pairs/s -> "
          f"{result['speedup']:.2f}x; identical rationales {same}/{n} pairs; same AI choice "
          f"{result['same_ai_choice']}/{n}; max |dP| {result['max_abs_diff_p_first']:.2e}")
    if args.out:
        write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
