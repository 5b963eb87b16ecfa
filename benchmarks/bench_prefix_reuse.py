"""Benchmark: two-order preference labeling with prefix reuse vs the straightforward loop.

Both methods use the same judge and the same pairs, side by side in one run (alternating
pair by pair, so load on a shared machine affects both alike; each pair is timed
``--repeats`` times per method and the fastest repeat counts, which filters out
interference from other processes):

* ``reuse``: :func:`rewards.preference.label_pairs` (non-CoT): per pair, the prompt prefix
  shared by both orders (chat template, preamble, exemplars, ``Text - {post}``) runs once
  and the two order-specific suffixes run from its KV cache in one batch of 2. The judge's
  cache of the previous pair's prefix is cleared before each timed call, so nothing is
  carried from pair to pair (that is ``benchmarks/bench_prefix_memo.py``).
* ``plain``: two full forward passes per pair (batch 1), one per order, each prompt
  tokenized as one string.

Reports pairs/s for both, the speed-up (target >= 1.5x) and the max abs difference of the
soft labels (target < 1e-3). In bfloat16 the two paths round differently (different matmul
shapes), so ``--noise-floor`` also reports how much the plain path alone moves when the same
prompts run left-padded in a batch: that is bf16 noise, not a prefix-reuse error; in
float32 (``--dtype float32``) both paths agree to ~1e-6. With ``--alignment-pairs N`` it also
labels N pairs and reports the agreement of the judge's choice with the human choice (AI
labeler alignment).

Example::

    PYTHONPATH=. python benchmarks/bench_prefix_reuse.py --threads 2            # 0.5B judge
    PYTHONPATH=. python benchmarks/bench_prefix_reuse.py --threads 2 --large    # 1.5B judge
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from _report import write_json  # benchmarks/ is first on sys.path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_DATA = REPO.parent / "shared" / "data"
SMALL_JUDGE = "qwen2.5-coder-0.5b-instruct"
LARGE_JUDGE = "qwen2.5-coder-1.5b-instruct"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--judge", default=SMALL_JUDGE, help=f"judge model spec (default {SMALL_JUDGE})")
    p.add_argument("--large", action="store_true", help=f"use {LARGE_JUDGE}")
    p.add_argument("--pairs", type=int, default=20, help="pairs to time (default 20)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--dtype", default=None, help="judge dtype (default: loader default, bf16)")
    p.add_argument("--data-dir", default=os.environ.get("RLAIF_GYM_DATA", str(DEFAULT_DATA)))
    p.add_argument("--prompt", default="base", help="preamble variant (default base)")
    p.add_argument("--shots", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3,
                   help="time each pair this many times per method, keep the fastest")
    p.add_argument("--noise-floor", action="store_true",
                   help="also report plain batch-1 vs plain left-padded batch differences")
    p.add_argument("--alignment-pairs", type=int, default=0,
                   help="also report agreement with human choice on this many pairs")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    return p.parse_args(argv)


def load_pairs(data_dir: str, n: int):
    from rlaif_gym.data import load_preference_pairs

    return load_preference_pairs("tldr", data_dir=data_dir, high_confidence=True,
                                 source="local", limit=n)


def plain_label(judge, pair, prompt: str, shots: int) -> tuple[float, float]:
    """(p_order_ab, p_order_ba) from two full batch-1 forward passes."""
    from rewards.normalization import preference_from_logprobs
    from rewards.prompts import render_preference_messages

    a, b = pair.responses
    out = []
    for first, second in ((a, b), (b, a)):
        text = judge.render_chat(
            render_preference_messages("tldr", pair.context, first, second, prompt=prompt,
                                       shots=shots)
        )
        lp = judge.next_token_logprobs([text], ["1", "2"])[0]
        out.append(float(preference_from_logprobs(lp[0], lp[1])))
    return out[0], 1.0 - out[1]


def padded_batch_diff(judge, pair, other, prompt: str, shots: int,
                      ab: float, ba: float) -> float:
    """Max |difference| of the plain-path soft labels when the two orders run left-padded in
    one batch with a longer prompt (only the numerics change: the noise floor)."""
    from rewards.normalization import preference_from_logprobs
    from rewards.prompts import render_preference_messages

    a, b = pair.responses
    texts = [judge.render_chat(render_preference_messages("tldr", pair.context, x, y,
                                                          prompt=prompt, shots=shots))
             for x, y in ((a, b), (b, a))]
    filler = judge.render_chat(render_preference_messages(
        "tldr", other.context + "\n" + pair.context, *other.responses, prompt=prompt,
        shots=shots))
    lp = judge.next_token_logprobs(texts + [filler], ["1", "2"])
    p1 = preference_from_logprobs(lp[:2, 0], lp[:2, 1])
    return float(max(abs(p1[0] - ab), abs(1.0 - p1[1] - ba)))


def token_stats(judge, pairs, prompt: str, shots: int) -> dict[str, float]:
    """Mean prefix/suffix token counts, and whether segment tokenization equals joint."""
    from rewards.preference import shared_rendered_prefix
    from rewards.prompts import render_preference_messages

    prefix_len, suffix_len, same_ids = [], [], 0
    for pair in pairs:
        a, b = pair.responses
        chats = [render_preference_messages("tldr", pair.context, x, y, prompt=prompt,
                                            shots=shots) for x, y in ((a, b), (b, a))]
        prefix = shared_rendered_prefix(judge, chats)
        full = [judge.render_chat(c) for c in chats]
        prefix_len.append(len(judge.encode(prefix)))
        suffix_len.append(np.mean([len(judge.encode(f[len(prefix):])) for f in full]))
        same_ids += all(judge.encode(f) == judge.encode((prefix, f[len(prefix):])) for f in full)
    return {"mean_prefix_tokens": float(np.mean(prefix_len)),
            "mean_suffix_tokens": float(np.mean(suffix_len)),
            "pairs_with_identical_token_ids": int(same_ids)}


def time_methods(judge, pairs, args: argparse.Namespace) -> dict:
    """Time both methods on ``args.pairs`` pairs (after one warm-up pair); print and return
    the speed and agreement numbers."""
    from rewards.preference import label_pairs

    warm, timed = pairs[0], pairs[1:args.pairs + 1]
    plain_label(judge, warm, args.prompt, args.shots)  # warm-up, not timed
    list(label_pairs(judge, [warm], prompt=args.prompt, shots=args.shots, progress=False))

    t_reuse = t_plain = 0.0
    diffs, noise = [], []
    for i, pair in enumerate(timed):
        best_reuse = best_plain = float("inf")
        for r in range(args.repeats):
            for method in (("reuse", "plain") if r % 2 == 0 else ("plain", "reuse")):
                # Only the reuse WITHIN a pair is timed here: the judge's memo of the last
                # prefix would otherwise hand a repeat the whole prefix of the same pair
                # (reuse ACROSS pairs: benchmarks/bench_prefix_memo.py).
                judge.clear_prefix_cache()
                t = time.perf_counter()
                if method == "reuse":
                    (label,) = label_pairs(judge, [pair], prompt=args.prompt,
                                           shots=args.shots, progress=False)
                    best_reuse = min(best_reuse, time.perf_counter() - t)
                else:
                    ab, ba = plain_label(judge, pair, args.prompt, args.shots)
                    best_plain = min(best_plain, time.perf_counter() - t)
        t_reuse += best_reuse
        t_plain += best_plain
        diffs.append(max(abs(label.p_order_ab - ab), abs(label.p_order_ba - ba),
                         abs(label.p_first - (ab + ba) / 2)))
        if args.noise_floor:
            noise.append(padded_batch_diff(judge, pair, pairs[0], args.prompt, args.shots,
                                           ab, ba))
        print(f"  pair {i + 1}/{len(timed)}: reuse {best_reuse:.2f}s plain {best_plain:.2f}s "
              f"|dp| {diffs[-1]:.2e}" + (f" noise {noise[-1]:.2e}" if noise else ""),
              flush=True)

    n = len(timed)
    result = {
        "pairs": n,
        "reuse_pairs_per_s": n / t_reuse,
        "plain_pairs_per_s": n / t_plain,
        "speedup": t_plain / t_reuse,
        "repeats": args.repeats,
        "max_abs_diff_soft_label": float(max(diffs)),
        "mean_abs_diff_soft_label": float(np.mean(diffs)),
        **token_stats(judge, timed, args.prompt, args.shots),
    }
    print(f"prefix reuse : {result['reuse_pairs_per_s']:.3f} pairs/s ({t_reuse:.1f}s)")
    print(f"plain loop   : {result['plain_pairs_per_s']:.3f} pairs/s ({t_plain:.1f}s)")
    print(f"speed-up     : {result['speedup']:.2f}x (target >= 1.5x)")
    print(f"max |diff|   : {result['max_abs_diff_soft_label']:.2e} (target < 1e-3; mean "
          f"{result['mean_abs_diff_soft_label']:.2e})")
    if noise:
        result["max_abs_diff_plain_padded_vs_batch1"] = float(max(noise))
        print(f"noise floor  : plain path, left-padded batch vs batch 1: max |diff| "
              f"{max(noise):.2e}")
    print(f"tokens       : prefix {result['mean_prefix_tokens']:.0f}, suffix "
          f"{result['mean_suffix_tokens']:.0f} per order; identical ids (segments vs joint) "
          f"in {result['pairs_with_identical_token_ids']}/{n} pairs")

    return result


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import torch

    from rewards.judges import load_judge
    from rewards.preference import label_pairs

    torch.set_num_threads(args.threads)
    spec = LARGE_JUDGE if args.large else args.judge
    n_load = max(args.pairs + 1 if args.pairs > 0 else 0, args.alignment_pairs, 1)
    pairs = load_pairs(args.data_dir, n_load)
    t0 = time.perf_counter()
    judge = load_judge(spec, dtype=args.dtype, num_threads=args.threads)
    load_s = time.perf_counter() - t0
    dtype = str(next(judge.model.parameters()).dtype)
    print(f"judge {spec} ({dtype}) loaded in {load_s:.1f}s; torch threads "
          f"{torch.get_num_threads()}; {len(pairs)} high-confidence TL;DR pairs from "
          f"{pairs.source}", flush=True)

    result: dict = {"judge": spec, "dtype": dtype, "threads": torch.get_num_threads(),
                    "prompt": args.prompt, "shots": args.shots}
    if args.pairs > 0:
        result.update(time_methods(judge, pairs, args))

    if args.alignment_pairs:
        subset = pairs[:args.alignment_pairs]
        t = time.perf_counter()
        labels = list(label_pairs(judge, subset, prompt=args.prompt, shots=args.shots,
                                  progress=False))
        agree = [lab.ai_choice == lab.human_choice for lab in labels]
        same_position = [
            (lab.p_order_ab >= 0.5) != (lab.p_order_ba >= 0.5) for lab in labels
        ]  # prefers the same POSITION in both orders
        result.update({
            "alignment_pairs": len(labels),
            "alignment": float(np.mean(agree)),
            "same_position_preferred": float(np.mean(same_position)),
            "alignment_seconds": time.perf_counter() - t,
        })
        print(f"alignment    : {result['alignment']:.3f} on {len(labels)} pairs "
              f"({args.prompt} {args.shots}-shot); same position preferred in "
              f"{result['same_position_preferred']:.0%}")
    if args.out:
        write_json(args.out, result, indent=2)
    return result


if __name__ == "__main__":
    main()
