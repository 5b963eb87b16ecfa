"""Benchmark: first load of a packaged model (join + sha256 + GGUF dequantization + safetensors
conversion) against loads from the safetensors cache.

Usage (from the repo root)::

    PYTHONPATH=. python benchmarks/bench_model_load.py --threads 1 --repeats 5
    PYTHONPATH=. python benchmarks/bench_model_load.py --model qwen2.5-coder-0.5b-instruct \\
        --repeats 1
    PYTHONPATH=. python benchmarks/bench_model_load.py --warm-default-cache   # all models

Each model starts from an empty temporary cache folder (deleted afterwards), so the first load
always converts; the later loads read the cache (the OS page cache is warm by then, as it is
in any later run on the same machine).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from rlaif_gym.models import (  # noqa: E402
    MODEL_REGISTRY,
    default_cache_dir,
    load_causal_lm,
    load_tokenizer,
    resolve_model_path,
)


def _timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def bench(name: str, repeats: int, threads: int) -> None:
    """Print first-load and cached-load times (seconds) of ``name`` from an empty cache."""
    with tempfile.TemporaryDirectory(prefix="rlaif-gym-bench-") as cache:
        first, model = _timed(lambda: load_causal_lm(name, cache_dir=cache, num_threads=threads))
        dtype = model.dtype
        del model
        tok_first, _ = _timed(lambda: load_tokenizer(name, cache_dir=cache))
        cached, forward = [], []
        ids = torch.arange(8).unsqueeze(0) + 1000  # (1, 8) token ids
        for _ in range(repeats):
            seconds, model = _timed(
                lambda: load_causal_lm(name, cache_dir=cache, num_threads=threads)
            )
            cached.append(seconds)
            with torch.no_grad():  # weights may be memory-mapped: the first forward pays for it
                forward.append(_timed(lambda model=model: model(ids))[0])
            del model
        tok_cached, _ = _timed(lambda: load_tokenizer(name, cache_dir=cache))
        size = sum(f.stat().st_size for f in Path(cache).rglob("*") if f.is_file())
    median = statistics.median(cached)
    print(f"model={name} dtype={dtype} torch_threads={threads} cache_bytes={size}")
    print(f"  first load (join/verify/convert + load): {first:.2f} s")
    print(f"  cached loads: {', '.join(f'{s:.3f}' for s in cached)} s")
    print(f"  cached median: {median:.3f} s   first/median ratio: {first / median:.1f}x")
    print(f"  first forward (1x8 tokens) after each cached load: "
          f"{', '.join(f'{s:.3f}' for s in forward)} s")
    print(f"  tokenizer: first {tok_first:.3f} s (cache already built), cached {tok_cached:.3f} s")


def warm_default_cache(names: list[str]) -> None:
    """Build the default cache entries (``default_cache_dir()``) for ``names``."""
    print(f"warming {default_cache_dir()}")
    for name in names:
        seconds, folder = _timed(lambda name=name: resolve_model_path(name))
        print(f"  {name}: {folder} ({seconds:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", choices=sorted(MODEL_REGISTRY),
                        help="model to benchmark (repeatable); default smollm2-135m-instruct")
    parser.add_argument("--repeats", type=int, default=5, help="cached loads per model")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads value")
    parser.add_argument("--warm-default-cache", action="store_true",
                        help="only build the default cache for every packaged model")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.warm_default_cache:
        warm_default_cache(args.model or list(MODEL_REGISTRY))
        return
    for name in args.model or ["smollm2-135m-instruct"]:
        bench(name, args.repeats, args.threads)


if __name__ == "__main__":
    main()
