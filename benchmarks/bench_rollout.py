"""Rollout throughput: ``collect_episodes`` through the vector env vs ``model.generate``.

Both contenders sample completions for the same B prompts with the same model, the same
sampling distribution (temperature 0.9, no top-k, no top-p) and the same number of new
tokens per sequence:

* ``env``: :func:`agents.rollout.collect_episodes` over
  ``gym.make_vec(..., vectorization_mode="vector_entry_point",
  autoreset_mode=AutoresetMode.DISABLED, reward="none", stop_token_ids=())``: with no stop
  tokens every episode runs exactly ``max_new_tokens`` steps; the time includes the env
  steps, the final decoding and the (zero) reward call.
* ``generate``: ``model.generate`` on the same prompt ids, left-padded, with
  ``min_new_tokens = max_new_tokens`` (EOS masked until the end, so every row generates
  exactly ``max_new_tokens`` tokens), ``do_sample=True, temperature=0.9, top_k=0,
  top_p=1.0``.

The contenders alternate within each repetition (warm-up run first, not timed); tokens/s
is ``B * max_new_tokens / seconds`` (prefill included in both). Medians over ``--reps``,
and the median of the per-repetition ratios (robust to load drifting on a shared machine).

Run from the repo root::

    PYTHONPATH=. python benchmarks/bench_rollout.py                    # smollm2, B=16, 64 tokens
    PYTHONPATH=. python benchmarks/bench_rollout.py --profile          # cProfile the env rollout
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from gymnasium.vector import AutoresetMode  # noqa: E402

import rlaif_gym  # noqa: E402, F401 - registers the ids
from agents.rollout import collect_episodes  # noqa: E402
from rlaif_gym.envs.registration import TASK_ENV_IDS  # noqa: E402
from rlaif_gym.models import load_causal_lm, load_tokenizer  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def left_pad(prompts: list[np.ndarray], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` int64 ``(B, max_len)``, prompts right-aligned."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(np.asarray(p))
        mask[i, width - len(p):] = 1
    return ids, mask


def _sync(device: torch.device) -> None:
    """Wait for queued GPU work so wall-clock timers measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_env(model, envs, indices: list[int], seed: int) -> tuple[float, int]:
    """Seconds for one ``collect_episodes`` batch; number of generated tokens."""
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    _sync(device)
    start = time.perf_counter()
    batch = collect_episodes(model, envs, temperature=0.9, seed=seed, generator=gen,
                             reset_options={"index": indices})
    _sync(device)
    seconds = time.perf_counter() - start
    return seconds, int(batch.completion_lengths.sum())


def time_generate(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  max_new_tokens: int, pad_id: int, seed: int) -> tuple[float, int]:
    """Seconds for one ``model.generate`` batch; number of generated tokens."""
    torch.manual_seed(seed)
    device = next(model.parameters()).device
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    _sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            input_ids=input_ids, attention_mask=attention_mask, do_sample=True,
            temperature=0.9, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
            min_new_tokens=max_new_tokens, pad_token_id=pad_id,
        )
    _sync(device)
    seconds = time.perf_counter() - start
    return seconds, int((out.shape[1] - input_ids.shape[1]) * out.shape[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", default="smollm2-135m-instruct")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--max-prompt-tokens", type=int, default=512)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--task", default="tldr")
    parser.add_argument("--data-dir", default=str(SHARED_DATA) if SHARED_DATA.is_dir() else None)
    parser.add_argument("--split", default=None,
                        help="default: 'test' with --data-dir, else 'sample'")
    parser.add_argument("--profile", action="store_true", help="cProfile one env rollout")
    parser.add_argument("--device", default="cpu", help="torch device (%(default)s)")
    parser.add_argument("--dtype", default=None, help="model dtype (default: the loader's)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    model = load_causal_lm(args.policy, dtype=args.dtype, device=args.device)
    tokenizer = load_tokenizer(args.policy)
    split = args.split or ("test" if args.data_dir else "sample")
    envs = gym.make_vec(
        TASK_ENV_IDS[args.task], num_envs=args.batch_size,
        vectorization_mode="vector_entry_point", autoreset_mode=AutoresetMode.DISABLED,
        reward="none", tokenizer=tokenizer, split=split, data_dir=args.data_dir,
        max_prompt_tokens=args.max_prompt_tokens, max_new_tokens=args.max_new_tokens,
        stop_token_ids=(), vocab_size=model.config.vocab_size,
    )
    core = envs.unwrapped.core
    indices = list(range(args.batch_size))
    prompts = [core.prompt_ids(i) for i in indices]
    pad_id = core.pad_token_id
    input_ids, attention_mask = left_pad(prompts, pad_id)
    print(f"model {args.policy} on {args.device} ({model.dtype}), "
          f"torch threads {torch.get_num_threads()}, B={args.batch_size}, "
          f"max_new_tokens={args.max_new_tokens}, prompt lengths "
          f"{min(map(len, prompts))}-{max(map(len, prompts))} ({core.data_source})")

    if args.profile:
        import cProfile
        import pstats

        time_env(model, envs, indices, 0)
        profiler = cProfile.Profile()
        profiler.enable()
        time_env(model, envs, indices, 1)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return

    # warm-up (allocator, kernels), not timed
    time_env(model, envs, indices, 0)
    time_generate(model, input_ids, attention_mask, args.max_new_tokens, pad_id, 0)
    rates: dict[str, list[float]] = {"env": [], "generate": []}
    for rep in range(args.reps):
        seconds, tokens = time_env(model, envs, indices, rep)
        assert tokens == args.batch_size * args.max_new_tokens, tokens
        rates["env"].append(tokens / seconds)
        seconds, tokens = time_generate(model, input_ids, attention_mask, args.max_new_tokens,
                                        pad_id, rep)
        assert tokens == args.batch_size * args.max_new_tokens, tokens
        rates["generate"].append(tokens / seconds)
        print(f"rep {rep}: env {rates['env'][-1]:8.1f} tok/s   "
              f"generate {rates['generate'][-1]:8.1f} tok/s")
    env_median = statistics.median(rates["env"])
    gen_median = statistics.median(rates["generate"])
    print(f"median env      : {env_median:8.1f} tok/s")
    print(f"median generate : {gen_median:8.1f} tok/s")
    paired = [e / g for e, g in zip(rates["env"], rates["generate"], strict=True)]
    print(f"ratio env / generate: {env_median / gen_median:.2f}x (ratio of medians), "
          f"{statistics.median(paired):.2f}x (median of per-repetition ratios)")


if __name__ == "__main__":
    main()
