"""Benchmark: chain-of-thought labeling, scoring from the decoding's KV cache vs running the
prompts again.

CoT labeling (Lee et al. 2023, section 2.1.2) decodes a rationale after each prompt (both
orders of each pair), then scores "1"/"2" after ``prompt + rationale + "\\n" + ending``.

* ``cached``: :meth:`TransformersJudge.generate_and_score`: the decoding's KV cache is cut
  back to the prompts and only ``rationale + ending`` runs again.
* ``plain``: the two-call default (:meth:`rewards.judges.base.Judge.generate_and_score`):
  ``generate``, then a full forward pass over ``prompt + rationale + ending``.

Both run the same batches of ``--batch-size`` pairs (2 prompts per pair), alternating which
goes first, side by side in one process; each batch is timed ``--repeats`` times per method
and the fastest repeat counts. Reports pairs/s of both, the speed-up, whether the rationales
are identical, and the max abs difference of the soft labels P(label "1") per prompt.

Example::

    PYTHONPATH=. python benchmarks/bench_cot_cache.py --task helpful --pairs 20 --threads 2 \\
        --judge qwen2.5-coder-1.5b-instruct --out reports/cot_cache_qwen1.5b.json
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
    p.add_argument("--task", default="helpful", choices=["tldr", "helpful", "harmless"])
    p.add_argument("--prompt", default="base")
    p.add_argument("--pairs", type=int, default=20, help="pairs to time (default 20)")
    p.add_argument("--batch-size", type=int, default=10, help="pairs per batch (default 10)")
    p.add_argument("--max-tokens", type=int, default=128, help="rationale tokens (default 128)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", default=None, help="judge dtype (default: the loader's, bf16)")
    p.add_argument("--data-dir", default=os.environ.get("RLAIF_GYM_DATA",
                                                        str(REPO.parent / "shared" / "data")))
    p.add_argument("--out", default=None, help="write the results as JSON here")
    return p.parse_args(argv)


def step1_prompts(judge, pairs, task: str, prompt: str) -> tuple[list[str], str, tuple]:
    """Both orders of every pair as rendered CoT prompts, the ending and the label tokens."""
    from rewards.prompts import load_template, render_preference_messages

    template = load_template(task)
    tpl = template.require_preference()
    prompts = []
    for pair in pairs:
        a, b = pair.responses
        for x, y in ((a, b), (b, a)):
            prompts.append(judge.render_chat(render_preference_messages(
                template, pair.context, x, y, prompt=prompt, cot=True)))
    return prompts, tpl.ending, tuple(tpl.labels)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import torch

    from rewards.judges import load_judge
    from rewards.judges.base import Judge
    from rewards.normalization import preference_from_logprobs
    from rewards.preference import _clean_rationale
    from rlaif_gym.data import load_preference_pairs

    torch.set_num_threads(args.threads)
    options = {"batch_size": 2 * args.batch_size}
    if args.dtype:
        options["dtype"] = args.dtype
    judge = load_judge(args.judge, **options)
    pairs = load_preference_pairs(args.task, data_dir=args.data_dir, limit=args.pairs + 40)
    from rewards.preference import pair_problem

    pairs = [p for p in pairs if pair_problem(p) is None][:args.pairs]
    prompts, ending, labels = step1_prompts(judge, pairs, args.task, args.prompt)

    def follow(i: int, generated: str) -> str:
        return f"{_clean_rationale(generated, ending)}\n{ending}"

    methods = {
        "cached": lambda batch: judge.generate_and_score(batch, args.max_tokens, follow, labels),
        "plain": lambda batch: Judge.generate_and_score(judge, batch, args.max_tokens, follow,
                                                        labels),
    }
    methods["cached"](prompts[:2])  # warm-up, not timed
    step = 2 * args.batch_size
    best = {name: 0.0 for name in methods}
    texts = {name: [] for name in methods}
    p_one = {name: [] for name in methods}
    for k, start in enumerate(range(0, len(prompts), step)):
        batch = prompts[start:start + step]
        order = list(methods) if k % 2 == 0 else list(methods)[::-1]
        fastest = {name: float("inf") for name in methods}
        for repeat in range(args.repeats):
            for name in order:
                t = time.perf_counter()
                generated, logp = methods[name](batch)
                fastest[name] = min(fastest[name], time.perf_counter() - t)
                if repeat == args.repeats - 1:  # keep the last repeat's outputs
                    texts[name].extend(generated)
                    p_one[name].extend(preference_from_logprobs(logp[:, 0], logp[:, 1]))
        for name in methods:
            best[name] += fastest[name]
        print(f"  batch {k + 1}: cached {fastest['cached']:.1f}s plain {fastest['plain']:.1f}s",
              flush=True)
    diff = np.abs(np.asarray(p_one["cached"]) - np.asarray(p_one["plain"]))
    n = len(pairs)
    result = {
        "judge": args.judge, "task": args.task, "prompt": args.prompt, "pairs": n,
        "batch_size_pairs": args.batch_size, "max_tokens": args.max_tokens,
        "threads": args.threads, "dtype": args.dtype or "loader default (bfloat16)",
        "repeats": args.repeats,
        "cached_pairs_per_s": n / best["cached"], "plain_pairs_per_s": n / best["plain"],
        "speedup": best["plain"] / best["cached"],
        "identical_rationales": sum(a == b for a, b in zip(texts["cached"], texts["plain"],
                                                            strict=True)),
        "n_prompts": len(prompts),
        "max_abs_diff_p_label1": float(diff.max()), "mean_abs_diff_p_label1": float(diff.mean()),
        "command": command_line(__file__, argv),
    }
    print(f"cached: {result['cached_pairs_per_s']:.3f} pairs/s, plain: "
          f"{result['plain_pairs_per_s']:.3f} pairs/s -> {result['speedup']:.2f}x; identical "
          f"rationales {result['identical_rationales']}/{len(prompts)}; max |dP(1)| "
          f"{result['max_abs_diff_p_label1']:.2e} (mean {result['mean_abs_diff_p_label1']:.2e})")
    if args.out:
        write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
