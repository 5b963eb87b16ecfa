"""Benchmark: one greedy decoding step of the judge from a batch-sized KV cache, the cache grown
by ``torch.cat`` (``DynamicLayer``) vs written into buffers allocated once (``_GrowingLayer``,
``TransformersJudge.preallocate``).

The cache is filled with random keys and values of the shape a chain-of-thought labeling step
has (``--rows`` prompts, 2 per pair, of ``--width`` padded positions), so no prefill is paid;
the decoding steps run the real model on it. Both variants alternate, ``--steps`` steps each
per round, ``--rounds`` rounds; the median seconds per step of each is reported, and their
ratio. The preallocated variant's one copy of the cache into its buffers (once per labeling
step, before ``--max-tokens`` decoding steps) is timed apart. Rows are left-padded (row ``r``
masks its first ``r / (2 rows)`` of the positions), so attention takes the masked path of a
labeling step. The tokens decoded are meaningless (random cache): this measures time only. That the
texts and scores do not change is tested (``tests/test_judge.py``) and checked on real pairs
by ``bench_judge_batch.py --compare preallocate``.

Example::

    PYTHONPATH=. python benchmarks/bench_decode_cache.py --rows 40 --width 1000 --steps 8 \\
        --rounds 3 --threads 2 --out reports/decode_cache_qwen1.5b.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from _report import command_line, write_json  # benchmarks/ is first on sys.path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--judge", default="qwen2.5-coder-1.5b-instruct")
    p.add_argument("--rows", type=int, default=40, help="prompts decoded together (default 40)")
    p.add_argument("--width", type=int, default=1500, help="cached positions (default 1500)")
    p.add_argument("--steps", type=int, default=8, help="decoding steps per round (default 8)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--profile", action="store_true",
                   help="also profile one preallocated run (torch.profiler) and print the ops "
                        "that took the most time, grouped by input shape")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)

    import torch
    from transformers import DynamicCache

    from rewards.judges import load_judge
    from rewards.judges.transformers_judge import _make_room

    torch.set_num_threads(args.threads)
    judge = load_judge(args.judge, num_threads=args.threads)
    config = judge.model.config
    heads = getattr(config, "num_key_value_heads", config.num_attention_heads)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    shape = (args.rows, heads, args.width, head_dim)

    def random_cache() -> DynamicCache:  # the same every time; built anew, not kept (memory)
        generator = torch.Generator().manual_seed(0)
        cache = DynamicCache(config=config)
        for layer in range(config.num_hidden_layers):
            cache.update(torch.randn(shape, generator=generator, dtype=judge.model.dtype),
                         torch.randn(shape, generator=generator, dtype=judge.model.dtype), layer)
        return cache

    generator = torch.Generator().manual_seed(1)
    mask = torch.ones((args.rows, args.width), dtype=torch.long)
    for row in range(args.rows):  # left padding as in a labeling step: row r pads r/(2 rows)
        mask[row, :row * args.width // (2 * args.rows)] = 0
    logits = torch.randn((args.rows, config.vocab_size), generator=generator)

    def decode(cache: DynamicCache) -> torch.Tensor:
        """``args.steps`` decoding steps, no row stopping early (no stop ids meanwhile)."""
        judge._stop_ids, stops = [], judge._stop_ids
        try:
            return judge._greedy_from(cache, mask, logits, args.steps + 1)
        finally:
            judge._stop_ids = stops

    per_step: dict[str, list[float]] = {"cat": [], "preallocated": []}
    setup: list[float] = []  # the one copy into the preallocated buffers, per batch
    with torch.inference_mode():
        for r in range(args.rounds):
            order = ["cat", "preallocated"] if r % 2 == 0 else ["preallocated", "cat"]
            for name in order:
                cache = random_cache()
                judge.preallocate = name == "preallocated"
                if judge.preallocate:  # once per batch, not per step: timed apart
                    t = time.perf_counter()
                    _make_room(cache, judge._decode_room(args.steps + 1))
                    setup.append(time.perf_counter() - t)
                t = time.perf_counter()
                tokens = decode(cache)
                per_step[name].append((time.perf_counter() - t) / args.steps)
                assert tokens.shape == (args.rows, args.steps + 1)
                del cache
                print(f"  round {r + 1} {name}: {per_step[name][-1]:.3f} s/step", flush=True)
    med = {name: statistics.median(v) for name, v in per_step.items()}
    result = {
        "judge": args.judge, "dtype": judge.weights_dtype, "rows": args.rows,
        "width": args.width, "steps": args.steps, "rounds": args.rounds,
        "threads": args.threads, "s_per_step": per_step, "median_s_per_step": med,
        "median_s_copy_into_buffers": statistics.median(setup),
        "speedup": med["cat"] / med["preallocated"],
        "command": command_line(__file__, argv),
    }
    print(f"median s/step: torch.cat {med['cat']:.3f}, preallocated {med['preallocated']:.3f} "
          f"-> {result['speedup']:.2f}x (plus {result['median_s_copy_into_buffers']:.2f} s once "
          "per batch to copy the cache into the buffers)")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        cache = random_cache()
        _make_room(cache, judge._decode_room(args.steps + 1))
        judge.preallocate = True
        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU],
                                             record_shapes=True) as prof:
            decode(cache)
        print(f"profile of {args.steps} preallocated steps:")
        print(prof.key_averages(group_by_input_shape=True).table(
            sort_by="self_cpu_time_total", row_limit=10, max_name_column_width=40,
            max_shapes_column_width=80))
    if args.out:
        write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
