"""VLLMJudge vs TransformersJudge on one GPU: labeling throughput and agreement, side by side.

One script for a GPU machine with vLLM installed (``pip install 'rlaif-gym[vllm]'``); it runs
in one go and prints a table (and ``--out`` JSON):

* preference labeling (TL;DR template, 0-shot, both orders): pairs/s when all prompts go to
  the judge in one call (``batched``: what a batched labeler can reach) and through
  :func:`rewards.preference.label_pairs` pair by pair (``label_pairs``: what ``rlaif-gym
  label`` does today, two prompts per call), and the agreement of the soft labels (mean/max
  |P(first) difference|, same AI choice);
* d-RLAIF scores (post + reference summary): prompts/s and the agreement of the expected
  scores (mean/max |difference|, Pearson, Spearman).

Both judges load the same weights (the packaged GGUF dequantized by
:mod:`rlaif_gym.models`) in ``--dtype``. Run from the repo root::

    PYTHONPATH=. python benchmarks/bench_vllm.py --judge qwen2.5-coder-1.5b-instruct \\
        --pairs 300 --posts 300 --out reports/vllm_vs_transformers.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from rewards.direct import direct_scores  # noqa: E402
from rewards.judges import Judge  # noqa: E402
from rewards.normalization import preference_from_logprobs  # noqa: E402
from rewards.preference import label_pairs  # noqa: E402
from rewards.prompts import load_template, render_preference_messages  # noqa: E402
from rlaif_gym.data import (  # noqa: E402
    PreferencePair,
    format_tldr_post,
    load_preference_pairs,
    load_tldr_posts,
)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_json  # noqa: E402
from _stats import pearson, spearman  # noqa: E402


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def batched_soft_labels(judge: Judge, pairs: Sequence[PreferencePair]) -> np.ndarray:
    """P(responses[0] preferred), both orders averaged, ``(n,)``: all 2n prompts in ONE
    ``next_token_logprobs`` call (same prompts and math as ``label_pairs``, non-CoT)."""
    template = load_template("tldr")
    tpl = template.require_preference()
    prompts = []
    for pair in pairs:
        a, b = pair.responses
        prompts.append(judge.render_chat(render_preference_messages(template, pair.context, a, b)))
        prompts.append(judge.render_chat(render_preference_messages(template, pair.context, b, a)))
    logprobs = judge.next_token_logprobs(prompts, tpl.labels)
    p_label_1 = preference_from_logprobs(logprobs[:, 0], logprobs[:, 1])
    p_shown_first = p_label_1 if tpl.label_selects == "better" else 1.0 - p_label_1
    return (p_shown_first[0::2] + 1.0 - p_shown_first[1::2]) / 2.0


def measure(judge: Judge, pairs: Sequence[PreferencePair], sequential_pairs: int,
            contexts: list[str], references: list[str], score_batch: int) -> dict[str, Any]:
    """Throughputs and outputs of one judge (each part after a small warm-up)."""
    batched_soft_labels(judge, pairs[:2])
    p_first, t_batched = timed(lambda: batched_soft_labels(judge, pairs))
    subset = list(pairs[:sequential_pairs])
    labels, t_sequential = timed(lambda: list(label_pairs(judge, subset, progress=False)))
    direct_scores(judge, "tldr", contexts[:2], references[:2], batch_size=2)
    scores, t_scores = timed(lambda: direct_scores(judge, "tldr", contexts, references,
                                                   batch_size=score_batch))
    return {
        "pairs_per_s_batched": len(pairs) / t_batched,
        "pairs_per_s_label_pairs": len(subset) / t_sequential,
        "score_prompts_per_s": len(contexts) / t_scores,
        "p_first": p_first,
        "p_first_label_pairs": np.array([x.p_first for x in labels]),
        "expected": scores.expected,
    }


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    """Agreement of judge ``a`` with judge ``b``."""
    dp = np.abs(a["p_first"] - b["p_first"])
    de = np.abs(a["expected"] - b["expected"])
    return {
        "soft_label_mean_abs_diff": float(dp.mean()),
        "soft_label_max_abs_diff": float(dp.max()),
        "ai_choice_agreement": float(np.mean((a["p_first"] >= 0.5) == (b["p_first"] >= 0.5))),
        "batched_vs_label_pairs_max_abs_diff_a": float(np.abs(
            a["p_first"][: len(a["p_first_label_pairs"])] - a["p_first_label_pairs"]).max()),
        "expected_score_mean_abs_diff": float(de.mean()),
        "expected_score_max_abs_diff": float(de.max()),
        "expected_score_pearson": pearson(a["expected"], b["expected"]),
        "expected_score_spearman": spearman(a["expected"], b["expected"]),
    }


def print_table(names: tuple[str, str], a: dict[str, Any], b: dict[str, Any],
                agreement: dict[str, float]) -> None:
    rows = [("pairs/s (batched)", "pairs_per_s_batched"),
            ("pairs/s (label_pairs)", "pairs_per_s_label_pairs"),
            ("score prompts/s", "score_prompts_per_s")]
    print(f"\n{'':26}{names[0]:>14}{names[1]:>14}{'ratio':>8}")
    for title, key in rows:
        print(f"{title:26}{a[key]:14.2f}{b[key]:14.2f}{a[key] / b[key]:8.2f}")
    print("\nagreement (vLLM vs transformers):")
    for key, value in agreement.items():
        print(f"  {key}: {value:.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--judge", default="qwen2.5-coder-1.5b-instruct")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--pairs", type=int, default=300, help="TL;DR comparisons to label")
    ap.add_argument("--sequential-pairs", type=int, default=50,
                    help="of those, labeled pair by pair through label_pairs")
    ap.add_argument("--posts", type=int, default=300, help="TL;DR posts to score")
    ap.add_argument("--score-batch", type=int, default=64, help="prompts per direct_scores call")
    ap.add_argument("--hf-batch-size", type=int, default=16, help="TransformersJudge batch")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.45)
    ap.add_argument("--out", default=None, help="also write the numbers as JSON here")
    args = ap.parse_args()

    import torch

    from rewards.judges.transformers_judge import TransformersJudge
    from rewards.judges.vllm_judge import VLLMJudge

    if not torch.cuda.is_available():
        raise SystemExit("bench_vllm.py needs a CUDA GPU")
    pairs = list(load_preference_pairs("tldr", data_dir=args.data_dir, source="local",
                                       limit=args.pairs))
    posts = list(load_tldr_posts(data_dir=args.data_dir, source="local"))[: args.posts]
    contexts = [format_tldr_post(p.subreddit, p.title, p.post) for p in posts]
    references = [p.summary for p in posts]
    print(f"{len(pairs)} pairs, {len(posts)} posts; judge {args.judge} ({args.dtype}) on "
          f"{torch.cuda.get_device_name(0)}", flush=True)

    start = time.perf_counter()
    vllm_judge = VLLMJudge(args.judge, dtype=args.dtype,
                           gpu_memory_utilization=args.gpu_memory_utilization)
    vllm_load = time.perf_counter() - start
    print(f"vLLM engine ready in {vllm_load:.1f} s "
          f"(logprob_token_ids: {vllm_judge._by_token_ids})", flush=True)
    vllm_out = measure(vllm_judge, pairs, args.sequential_pairs, contexts, references,
                       args.score_batch)
    print("vLLM done", flush=True)

    hf_judge = TransformersJudge(args.judge, dtype=args.dtype, device="cuda",
                                 batch_size=args.hf_batch_size)
    hf_out = measure(hf_judge, pairs, args.sequential_pairs, contexts, references,
                     args.score_batch)
    agreement = compare(vllm_out, hf_out)
    print_table(("vLLM", "transformers"), vllm_out, hf_out, agreement)

    if args.out:
        keys = ("pairs_per_s_batched", "pairs_per_s_label_pairs", "score_prompts_per_s")
        result = {
            "judge": args.judge, "dtype": args.dtype, "pairs": len(pairs),
            "posts": len(posts), "gpu": torch.cuda.get_device_name(0),
            "vllm_load_s": vllm_load,
            "vllm": {k: vllm_out[k] for k in keys},
            "transformers": {k: hf_out[k] for k in keys},
            "agreement": agreement,
        }
        write_json(args.out, result, indent=2)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
