"""Benchmark: a judge's forward passes in bfloat16 vs float32 on this CPU, side by side.

Why: the Qwen judges default to bfloat16, which only pays on a CPU that computes bf16 natively
(AVX512-BF16, AMX). Elsewhere oneDNN emulates it. :func:`rlaif_gym.models.load_causal_lm`
therefore loads them in float32 on such CPUs (:func:`rlaif_gym.models.cpu_has_native_bf16`);
this script measures the case.

Per dtype (one process, float32 first, then bfloat16): a prefill of ``--batch`` random
sequences of ``--tokens`` tokens (median of ``--repeats``), and ``--decode-steps`` one-token
decode steps with the KV cache (mean per step). Prints the bf16/float32 time ratios.

Example::

    PYTHONPATH=. python benchmarks/bench_cpu_dtype.py --judge qwen2.5-coder-1.5b-instruct \\
        --threads 2 --out reports/cpu_dtype_qwen1.5b.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from _report import write_json  # benchmarks/ is first on sys.path

from rlaif_gym.models import cpu_has_native_bf16, load_causal_lm


def measure(spec: str, dtype: str, batch: int, tokens: int, repeats: int,
            decode_steps: int, seed: int) -> dict[str, float]:
    """Median prefill seconds and mean seconds per decode step for one dtype."""
    model = load_causal_lm(spec, dtype=dtype)
    generator = torch.Generator().manual_seed(seed)
    high = min(5000, model.config.vocab_size)
    ids = torch.randint(high // 50, high, (batch, tokens), generator=generator)
    prefill: list[float] = []
    with torch.no_grad():
        model(ids[:2, :16])  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            model(ids)
            prefill.append(time.perf_counter() - start)
        cache = model(ids, use_cache=True).past_key_values
        token = ids[:, -1:]
        start = time.perf_counter()
        for _ in range(decode_steps):
            cache = model(token, past_key_values=cache, use_cache=True).past_key_values
        decode = (time.perf_counter() - start) / decode_steps
    return {"prefill_s_median": statistics.median(prefill), "prefill_s_all": prefill,
            "decode_s_per_step": decode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judge", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--decode-steps", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = {"judge": args.judge, "batch": args.batch, "tokens": args.tokens,
              "threads": args.threads, "cpu_has_native_bf16": cpu_has_native_bf16()}
    for dtype in ("float32", "bfloat16"):
        result[dtype] = measure(args.judge, dtype, args.batch, args.tokens, args.repeats,
                                args.decode_steps, args.seed)
        print(dtype, result[dtype], flush=True)
    result["prefill_ratio_bf16_over_fp32"] = (result["bfloat16"]["prefill_s_median"]
                                              / result["float32"]["prefill_s_median"])
    result["decode_ratio_bf16_over_fp32"] = (result["bfloat16"]["decode_s_per_step"]
                                             / result["float32"]["decode_s_per_step"])
    print(f"native bf16: {result['cpu_has_native_bf16']}; bf16/float32 time: prefill "
          f"{result['prefill_ratio_bf16_over_fp32']:.2f}x, decode "
          f"{result['decode_ratio_bf16_over_fp32']:.2f}x")
    if args.out is not None:
        write_json(args.out, result, indent=2)


if __name__ == "__main__":
    main()
