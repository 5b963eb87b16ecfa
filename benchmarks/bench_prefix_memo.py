"""Benchmark: preference labeling of consecutive pairs with and without the judge's memo of
the last shared prefix (``TransformersJudge(reuse_prefix=...)``).

Non-CoT labeling runs, per pair, the prefix shared by both orders (chat header, preamble,
few-shot exemplars, ``Text - {post}``) and then the two order suffixes from its KV cache.
Consecutive pairs share everything before the post: with the memo the judge copies that part
of the previous pair's cache and runs only from the post on. The gain grows with what pairs
share: a few hundred tokens of header and preamble at 0-shot, plus the exemplars with
``--shots``.

Both settings label the same run of ``--pairs`` consecutive pairs with the same judge object,
side by side in one process, alternating which goes first; each run is timed ``--repeats``
times per setting and the fastest counts (the memo is cleared before each run, so the first
pair of a run starts cold as in a fresh labeling job). Reports pairs/s of both, the speed-up,
the tokens the pairs share, and the max abs difference of the soft labels (the same token
ids run either way; only float rounding differs).

Example::

    PYTHONPATH=. python benchmarks/bench_prefix_memo.py --task tldr --shots 2 --pairs 6 \\
        --threads 2 --judge qwen2.5-coder-1.5b-instruct --out reports/prefix_memo_2shot.json
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
    p.add_argument("--task", default="tldr", choices=["tldr", "helpful", "harmless"])
    p.add_argument("--prompt", default="base")
    p.add_argument("--shots", type=int, default=0)
    p.add_argument("--pairs", type=int, default=6, help="consecutive pairs per run (default 6)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", default=None, help="judge dtype (default: the loader's)")
    p.add_argument("--data-dir", default=os.environ.get("RLAIF_GYM_DATA",
                                                        str(REPO.parent / "shared" / "data")))
    p.add_argument("--out", default=None, help="write the results as JSON here")
    return p.parse_args(argv)


def shared_tokens(judge, pairs, prompt: str, shots: int) -> tuple[float, float]:
    """Mean tokens of each pair's shared prefix, and mean tokens it has in common with the
    previous pair's (what the memo saves)."""
    from rewards.preference import shared_rendered_prefix
    from rewards.prompts import load_template, render_preference_messages

    ids = []
    for pair in pairs:
        a, b = pair.responses
        chats = [render_preference_messages(load_template(pair.task), pair.context, x, y,
                                            prompt=prompt, shots=shots)
                 for x, y in ((a, b), (b, a))]
        ids.append(judge.encode(shared_rendered_prefix(judge, chats)))
    common = []
    for prev, cur in zip(ids, ids[1:], strict=False):
        n = 0
        for x, y in zip(prev, cur, strict=False):
            if x != y:
                break
            n += 1
        common.append(n)
    return float(np.mean([len(i) for i in ids])), float(np.mean(common))


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
    extra = {"high_confidence": True} if args.task == "tldr" else {}
    pairs = load_preference_pairs(args.task, data_dir=args.data_dir, limit=args.pairs + 41,
                                  **extra)
    pairs = [p for p in pairs if pair_problem(p) is None]
    warm, pairs = pairs[0], pairs[1:args.pairs + 1]

    def run(memo: bool) -> list:
        judge.reuse_prefix = memo
        judge.clear_prefix_cache()
        return list(label_pairs(judge, pairs, prompt=args.prompt, shots=args.shots,
                                progress=False))

    judge.reuse_prefix = False
    list(label_pairs(judge, [warm], prompt=args.prompt, shots=args.shots, progress=False))
    best = {"memo": float("inf"), "no_memo": float("inf")}
    labels: dict[str, list] = {}
    for r in range(args.repeats):
        for name in (("memo", "no_memo") if r % 2 == 0 else ("no_memo", "memo")):
            t = time.perf_counter()
            labels[name] = run(name == "memo")
            best[name] = min(best[name], time.perf_counter() - t)
        print(f"  repeat {r + 1}: memo {best['memo']:.1f}s, no memo {best['no_memo']:.1f}s "
              "(fastest so far)", flush=True)
    diff = max(max(abs(a.p_order_ab - b.p_order_ab), abs(a.p_order_ba - b.p_order_ba))
               for a, b in zip(labels["memo"], labels["no_memo"], strict=True))
    prefix_tokens, common_tokens = shared_tokens(judge, pairs, args.prompt, args.shots)
    n = len(pairs)
    result = {
        "judge": args.judge, "task": args.task, "prompt": args.prompt, "shots": args.shots,
        "pairs": n, "threads": args.threads, "repeats": args.repeats,
        "dtype": judge.weights_dtype,
        "memo_pairs_per_s": n / best["memo"], "no_memo_pairs_per_s": n / best["no_memo"],
        "speedup": best["no_memo"] / best["memo"],
        "mean_shared_prefix_tokens": prefix_tokens,
        "mean_tokens_in_common_with_previous_pair": common_tokens,
        "max_abs_diff_soft_label": float(diff),
        "command": command_line(__file__, argv),
    }
    print(f"memo: {result['memo_pairs_per_s']:.4f} pairs/s, no memo: "
          f"{result['no_memo_pairs_per_s']:.4f} pairs/s -> {result['speedup']:.2f}x; prefix "
          f"{prefix_tokens:.0f} tokens, {common_tokens:.0f} in common with the previous pair; "
          f"max |dP| {diff:.2e}")
    if args.out:
        write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
