"""Native TextGenerationVectorEnv vs gymnasium's SyncVectorEnv over single envs.

Three contenders step the same pre-drawn action stream: token ids uniform over the
vocabulary, except that each action is replaced by EOS with probability ``--eos-prob``
(default 0.01), so that episodes end both by EOS and by the ``max_new_tokens`` limit:

* ``native``: :class:`TextGenerationVectorEnv` (``gym.make_vec(..., "vector_entry_point")``);
* ``sync``: ``gymnasium.vector.SyncVectorEnv`` over 64 bare :class:`TextGenerationEnv`;
* ``sync-make_vec``: ``gym.make_vec(..., vectorization_mode="sync")``, the same with
  Gymnasium's default wrappers (PassiveEnvChecker, OrderEnforcing) on each env.

All use the same seeds, the same tokenizer object and reward ``"none"``; prompt
tokenization is warmed up beforehand (the single envs share the native env's prompt cache)
so only stepping is timed.

Run from the repo root::

    PYTHONPATH=. python benchmarks/bench_vector_env.py            # B=64, max_new_tokens=128
    PYTHONPATH=. python benchmarks/bench_vector_env.py --no-copy  # both sides copy=False

Prints env-steps/s (sub-env steps per second) of each, medians over ``--reps`` repetitions,
and their ratio (also per repetition). ``--clock cpu`` times with this thread's CPU time
instead of the wall clock, so that other processes taking the CPU do not count (cache
sharing still does).
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
from gymnasium.vector import SyncVectorEnv  # noqa: E402

import rlaif_gym  # noqa: E402, F401 - registers the ids
from rlaif_gym.envs.registration import TASK_ENV_IDS  # noqa: E402
from rlaif_gym.envs.text_env import TextGenerationEnv  # noqa: E402
from rlaif_gym.envs.vector_env import TextGenerationVectorEnv  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def load_policy_tokenizer(spec: str):
    """The policy tokenizer, or the tiny byte tokenizer when it cannot be loaded."""
    try:
        from rlaif_gym.models import load_tokenizer

        return load_tokenizer(spec), spec
    except Exception as exc:  # noqa: BLE001 - fall back and say so
        from rlaif_gym.testing import make_tiny_tokenizer

        print(f"could not load {spec!r} ({exc}); using the tiny tokenizer")
        return make_tiny_tokenizer(), "tiny-random"


def action_stream(steps: int, num_envs: int, vocab: int, eos: int, eos_prob: float,
                  seed: int) -> np.ndarray:
    """(steps, num_envs) int64 token ids, uniform over the vocab, EOS with prob eos_prob."""
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, vocab, size=(steps, num_envs))
    actions[rng.random((steps, num_envs)) < eos_prob] = eos
    return actions


#: ``--clock`` choices: wall-clock time, or the CPU time of this thread (not counting the
#: time other processes hold the CPU: steadier on a shared machine).
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def run(envs, actions: np.ndarray, seed: int, clock=time.perf_counter) -> tuple[float, int]:
    """Seconds (of ``clock``) to step through ``actions`` after a seeded reset; episodes
    ended."""
    envs.reset(seed=seed)
    flags: list[np.ndarray] = [None] * len(actions)  # type: ignore[list-item]
    start = clock()
    for i, batch in enumerate(actions):
        flags[i] = envs.step(batch)[2]
    seconds = clock() - start
    # episodes are counted outside the timed loop (summing inside it cost ~1 us per vector
    # step: 8% of the native env's time, 0.5% of SyncVectorEnv's)
    if len({id(f) for f in flags}) != len(flags):
        raise RuntimeError("the env returned the same terminated array twice: cannot count "
                           "episodes after the loop")
    return seconds, int(sum(int(f.sum()) for f in flags))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--max-prompt-tokens", type=int, default=512)
    parser.add_argument("--steps", type=int, default=400, help="vector steps per repetition")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--eos-prob", type=float, default=0.01)
    parser.add_argument("--policy", default="smollm2-135m-instruct")
    parser.add_argument("--task", default="tldr")
    parser.add_argument("--data-dir", default=str(SHARED_DATA) if SHARED_DATA.is_dir() else None)
    parser.add_argument("--split", default=None,
                        help="default: 'test' with --data-dir, else 'sample'")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall: time.perf_counter; cpu: time.thread_time (this thread's "
                             "CPU time, steadier when other jobs share the CPU)")
    parser.add_argument("--profile", action="store_true", help="cProfile the native env")
    parser.add_argument("--no-copy", action="store_true",
                        help="observations without copies on BOTH sides: the native env's "
                             "copy=False (read-only views of its buffers) and "
                             "SyncVectorEnv(copy=False) / make_vec vector_kwargs copy=False")
    args = parser.parse_args()

    tokenizer, policy = load_policy_tokenizer(args.policy)
    split = args.split or ("test" if args.data_dir else "sample")
    kwargs = dict(task=args.task, tokenizer=tokenizer, reward="none", split=split,
                  data_dir=args.data_dir, max_prompt_tokens=args.max_prompt_tokens,
                  max_new_tokens=args.max_new_tokens)
    env_id = TASK_ENV_IDS[args.task]
    make_kwargs = {k: v for k, v in kwargs.items() if k != "task"}
    copy = not args.no_copy
    native = gym.make_vec(env_id, num_envs=args.num_envs, vectorization_mode="vector_entry_point",
                          copy=copy, **make_kwargs)
    assert isinstance(native, TextGenerationVectorEnv)
    core = native.core
    for index in range(len(core.prompts)):  # warm the shared prompt cache
        core.prompt_ids(index)
    singles = [TextGenerationEnv(**kwargs) for _ in range(args.num_envs)]
    sync = SyncVectorEnv([lambda env=env: env for env in singles], copy=copy)
    sync_make_vec = gym.make_vec(env_id, num_envs=args.num_envs, vectorization_mode="sync",
                                 vector_kwargs={"copy": copy}, **make_kwargs)
    for env in [*singles, *(e.unwrapped for e in sync_make_vec.envs)]:
        env.core._prompt_cache = core._prompt_cache
    contenders = {"native": native, "sync": sync, "sync-make_vec": sync_make_vec}

    eos = core.stop_token_ids[0]
    print(f"policy tokenizer: {policy} (vocab {core.vocab_size}), task {args.task}, "
          f"{len(core.prompts)} prompts from {core.data_source}")
    print(f"B={args.num_envs}, max_new_tokens={args.max_new_tokens}, "
          f"max_prompt_tokens={args.max_prompt_tokens}, {args.steps} steps x {args.reps} reps, "
          f"EOS prob {args.eos_prob}, copy observations: {copy}")

    if args.profile:
        import cProfile
        import pstats

        actions = action_stream(args.steps, args.num_envs, core.vocab_size, eos,
                                args.eos_prob, 0)
        profiler = cProfile.Profile()
        profiler.enable()
        run(native, actions, 0)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
        return

    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for rep in range(args.reps):
        actions = action_stream(args.steps, args.num_envs, core.vocab_size, eos,
                                args.eos_prob, rep)
        for name, envs in contenders.items():
            seconds, ended = run(envs, actions, seed=rep, clock=CLOCKS[args.clock])
            rates[name].append(args.num_envs * args.steps / seconds)
            print(f"rep {rep} {name:13s}: {rates[name][-1]:12,.0f} env-steps/s "
                  f"({ended} episodes ended)")
    medians = {name: statistics.median(values) for name, values in rates.items()}
    for name, rate in medians.items():
        print(f"median {name:13s}: {rate:12,.0f} env-steps/s")
    for name in ("sync", "sync-make_vec"):
        print(f"ratio native / {name}: {medians['native'] / medians[name]:.1f}x")
    per_rep = [a / b for a, b in zip(rates["native"], rates["sync"], strict=True)]
    print("ratio native / sync per rep (run back to back): "
          + ", ".join(f"{r:.1f}x" for r in per_rep)
          + f"; median {statistics.median(per_rep):.1f}x ({args.clock} clock)")


if __name__ == "__main__":
    main()
