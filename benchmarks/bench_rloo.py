"""One training step: ours (``collect_episodes`` + ``reinforce_step``) vs TRL's ``RLOOTrainer``
or ``GRPOTrainer``.

Two comparisons (flags ``--baseline`` and ``--trl-trainer``):

* ``--baseline value --trl-trainer rloo`` (default, the README's row): ours with the paper's
  value model against TRL's RLOO.
* ``--baseline loo --trl-trainer grpo`` (issue #19): ``rlaif-gym train --baseline loo``
  (the leave-one-out baseline over the k samples of a prompt, no value model; the env's
  ``group_size=k``) against TRL's ``GRPOTrainer`` whose reward is the same rlaif-gym reward
  through :func:`rlaif_gym.trl_reward.as_trl_reward`. The GRPO side runs like the RLOO side
  below (same batch mapping, lengths, sampling, optimizer; GRPO's own advantage: group mean
  and std).

The reward (``--reward``) is the same function on both sides: ``lowercase`` (default, a
cheap rule, so the step time is the trainers') or a registered rlaif-gym reward such as
``pairwise`` or ``direct`` with ``--judge`` (then both sides also spend the judge's time:
ours through the env, TRL through ``as_trl_reward`` with the dataset's ``task_input`` and
``reference`` columns).

One command runs both contenders with the same model (``--policy``, float32, CPU), the same
tokenizer, the same prompt tokens, the same number of completions per step, the same
completion length, temperature, reward function, beta, learning rate, optimizer and gradient
clipping, and reports the ratio of steps per second.

Process layout (memory)
-----------------------
Each contender runs in its own worker process (this script with ``--worker``), one after the
other, so only one of them is in memory at a time: ours holds policy + reference + value
model and two AdamW states (max RSS 6.5 GB for SmolLM2-135M in float32, B=4, L=16), TRL
holds policy + reference and one AdamW state (4.1 GB); both at once did not fit next to the
other jobs of a 24 GB machine (a first version with both in one process was OOM-killed at
7.8 GB). The blocks alternate: ``--rounds R`` runs ours, TRL, ours, TRL, ... (R blocks
each); every block loads its models, runs one untimed warm-up step and ``--reps`` timed
steps. The per-repetition ratio pairs the i-th timed step of the two blocks of a round.
Loading time is never timed.

Batch mapping (``--batch-size B``, ``--rloo-k k``; B must be a multiple of k)
----------------------------------------------------------------------------
RLOO needs k >= 2 completions of the same prompt (leave-one-out baseline). Both sides
generate exactly B completions per step:

* TRL: ``per_device_train_batch_size = B`` (TRL counts completions, not prompts),
  ``num_generations = k``, ``gradient_accumulation_steps = 1``, ``steps_per_generation = 1``,
  ``num_iterations = 1``: one generation batch of B completions = B / k distinct prompts x k,
  and one optimizer step per training step. The dataset holds exactly the B / k prompts
  (``shuffle_dataset=False``), so every step sees the same prompts.
* ours: a vector env with ``num_envs = B``, reset with ``options={"index": [0]*k + [1]*k +
  ...}``: the same B / k prompts, each k times, in TRL's order (its ``RepeatSampler`` repeats
  each prompt k times consecutively).

The TL;DR prompts are the env's chat-formatted prompts (test split of ``--data-dir``,
truncated to ``--max-prompt-tokens``); TRL gets them as plain strings (decoded from the
env's token ids) and re-tokenizes them with the same tokenizer. The script checks that
TRL's prompt ids equal the env's, token for token.

Completion length: exactly L = ``--max-new-tokens`` new tokens per completion on both sides
(ours: ``stop_token_ids=()``, so no episode ends before L; TRL: ``max_completion_length=L``
and ``generation_kwargs={"min_new_tokens": L}``, which masks EOS until L tokens). Both are
checked at every step.

Sampling: temperature 0.9, no top-k/top-p on both sides; both compute the loss log-probs at
the same temperature. Reward: the plain callable :func:`lowercase_fraction` (a cheap
rule, so the step time is the trainer's, not a judge's), wrapped for TRL's
``reward_funcs`` signature. beta (``--beta``, 0.05) and lr (``--lr``, 1e-5) are the same;
both use ``torch.optim.AdamW`` (weight decay 0, constant lr; TRL: ``optim="adamw_torch"``,
``lr_scheduler_type="constant"``) and clip the gradient norm to 1.0.

What one step contains
----------------------
* ours (``agents.train`` loop body): rollout through the vector env with the policy's KV
  cache (prefill + L decode steps, env step and decode, one reward call), then
  ``reinforce_step``: reference forward (no grad), policy forward + value-model forward
  (with grad), one backward through both, gradient clipping, TWO AdamW steps (policy and
  the separate value model, a full backbone copy, as in the paper).
* TRL (``RLOOTrainer``, timed from ``on_step_begin`` to ``on_step_end``): ``model.generate``,
  decoding, an extra no-grad policy forward (``old_logps``, needed for the PPO-style ratio
  even with ``num_iterations=1``), reference forward (no grad), reward, leave-one-out
  advantages, policy forward with grad (fused chunked log-prob head) + backward, gradient
  clipping, ONE AdamW step, lr-scheduler step, ``zero_grad``.

So ours does a value-model forward/backward/optimizer step that RLOO does not; RLOO does a
second no-grad policy forward that ours does not. TRL's defaults that only change speed or
precision are set to match ours: ``bf16=False`` (TRL defaults to bf16 autocast),
``gradient_checkpointing=False`` (TRL defaults to True: recomputes the forward in the
backward; ``--trl-gradient-checkpointing`` keeps it), ``disable_dropout=True`` (ours runs in
eval mode). Trainer setup (``RLOOTrainer(...)``, ``trainer.train()`` start-up, optimizer
creation) is outside the timed window: TRL runs ``max_steps = 1 + reps`` steps in one
``train()`` call and a callback times each step between ``on_step_begin`` (called after the
dataloader yields the prompts, before generation) and ``on_step_end`` (after the optimizer
step, lr-scheduler step and ``zero_grad``; before logging). The first step is the warm-up.

TRL comes with the ``trl`` extra (``pip install -e '.[trl]'``); ``--trl-site DIR`` prepends
another installation to ``sys.path``. Run from the repo root::

    PYTHONPATH=. python benchmarks/bench_rloo.py --batch-size 4 --max-new-tokens 16 --threads 1
    PYTHONPATH=. python benchmarks/bench_rloo.py --baseline loo --trl-trainer grpo \
        --batch-size 4 --rloo-k 2 --max-new-tokens 16 --threads 1

Only the TRL worker imports TRL, so ``--help`` and ``--worker ours`` work without it.

Output: per-repetition seconds per step (and the generation part of each), medians, and
the ratio of steps per second ours / TRL (ratio of medians and median of per-repetition
ratios); > 1 means ours is faster.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # TRL loads the policy/reference from a local path
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_TRL_SITE = Path("/work/trl-site")


# --------------------------------------------------------------------------------------------
# the shared reward


def lowercase_fraction(prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
    """Reward in [0, 1]: the fraction of a completion's characters that are lowercase letters
    (0.0 for an empty completion). ``prompts`` are ignored."""
    return [sum(ch.islower() for ch in text) / len(text) if text else 0.0 for text in completions]


def trl_lowercase_fraction(prompts: list[str], completions: list[str],
                           **kwargs: Any) -> list[float]:
    """:func:`lowercase_fraction` with TRL's ``reward_funcs`` signature (extra keyword
    arguments such as ``completion_ids`` and ``trainer_state`` are ignored)."""
    return lowercase_fraction(prompts, completions)


def reward_options(args: argparse.Namespace) -> dict[str, Any]:
    """Options of a named ``--reward`` (judge, dtype, threads, anchor)."""
    options: dict[str, Any] = {"judge": args.judge, "num_threads": args.threads}
    if args.judge != "tiny-random":
        options["dtype"] = args.judge_dtype
    if args.reward == "pairwise":
        options["anchor"] = args.anchor
    return options


def make_env_reward(args: argparse.Namespace):
    """Our side's reward: the rule, or the named rlaif-gym reward."""
    if args.reward == "lowercase":
        return lowercase_fraction
    from rlaif_gym.reward_registry import make_reward

    return make_reward(args.reward, context={"task": "tldr"}, **reward_options(args))


def make_trl_reward(args: argparse.Namespace):
    """TRL's side: the same reward through :func:`rlaif_gym.trl_reward.as_trl_reward` (for
    ``--trl-trainer grpo``; the RLOO comparison keeps its plain wrapper of the rule)."""
    if args.reward == "lowercase" and args.trl_trainer == "rloo":
        return trl_lowercase_fraction
    from rlaif_gym.trl_reward import as_trl_reward

    if args.reward == "lowercase":
        return as_trl_reward(lowercase_fraction, task="tldr", name="lowercase_fraction")
    return as_trl_reward(args.reward, task="tldr", num_generations=args.rloo_k,
                         **reward_options(args))


# --------------------------------------------------------------------------------------------
# results


@dataclass
class StepTimes:
    """Seconds of the timed steps of one contender: whole step and its generation part."""

    step: list[float] = field(default_factory=list)
    generation: list[float] = field(default_factory=list)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _check_lengths(who: str, lengths: Sequence[int], expected: int) -> None:
    if any(n != expected for n in lengths):
        raise RuntimeError(f"{who}: completion lengths {list(lengths)}, expected all {expected}; "
                           "the comparison would not be equal")


# --------------------------------------------------------------------------------------------
# ours


@dataclass
class Ours:
    """Our trainer state (policy, value model, reference, optimizers, env) and its step."""

    policy: torch.nn.Module
    value_model: torch.nn.Module | None
    reference: torch.nn.Module
    policy_opt: torch.optim.Optimizer
    value_opt: torch.optim.Optimizer | None
    envs: Any
    indices: list[int]
    expected_prompts: list[list[int]]
    args: argparse.Namespace
    generator: torch.Generator
    times: StepTimes = field(default_factory=StepTimes)

    def step(self, record: bool) -> None:
        """One training step as in :func:`agents.train.train` (rollout + ``reinforce_step``);
        appends its times when ``record``."""
        from agents.reinforce import reinforce_step
        from agents.rollout import collect_episodes

        device = next(self.policy.parameters()).device
        core = self.envs.unwrapped.core
        _sync(device)
        t0 = time.perf_counter()
        batch = collect_episodes(self.policy, self.envs, temperature=self.args.temperature,
                                 generator=self.generator,
                                 reset_options={"index": self.indices})
        _sync(device)
        t1 = time.perf_counter()
        reinforce_step(
            self.policy, self.value_model, self.reference, self.policy_opt, self.value_opt,
            batch.prompt_ids, batch.completion_ids, batch.rewards,
            kl_coef=self.args.beta, temperature=self.args.temperature,
            n_actions=int(self.envs.single_action_space.n), pad_id=int(core.pad_token_id),
            max_grad_norm=self.args.max_grad_norm, baseline=self.args.baseline,
            group_size=self.args.rloo_k,
        )
        self.policy_opt.zero_grad(set_to_none=True)  # free the gradients (TRL does the same)
        if self.value_opt is not None:
            self.value_opt.zero_grad(set_to_none=True)
        _sync(device)
        t2 = time.perf_counter()
        _check_lengths("ours", batch.completion_lengths.tolist(), self.args.max_new_tokens)
        if [p.tolist() for p in batch.prompt_ids] != self.expected_prompts:
            raise RuntimeError("ours: the env's prompt ids changed between steps")
        if record:
            self.times.step.append(t2 - t0)
            self.times.generation.append(t1 - t0)


def build_envs(args: argparse.Namespace, tokenizer, vocab_size: int, reward=None):
    """Our vector env: B sub-envs in groups of k (``group_size``), TL;DR prompts, exactly L
    steps (no stop tokens), the shared reward (``None``: the rule)."""
    import gymnasium as gym
    from gymnasium.vector import AutoresetMode

    import rlaif_gym  # noqa: F401 - registers the ids
    from rlaif_gym.envs.registration import TASK_ENV_IDS

    return gym.make_vec(
        TASK_ENV_IDS["tldr"], num_envs=args.batch_size,
        vectorization_mode="vector_entry_point", autoreset_mode=AutoresetMode.DISABLED,
        reward=lowercase_fraction if reward is None else reward, tokenizer=tokenizer,
        split=args.split, data_dir=args.data_dir, max_prompt_tokens=args.max_prompt_tokens,
        max_new_tokens=args.max_new_tokens, stop_token_ids=(), vocab_size=vocab_size,
        group_size=args.rloo_k,
    )


def group_indices(batch_size: int, k: int) -> list[int]:
    """Prompt index of each of the B episodes: ``[0]*k + [1]*k + ...`` (B / k prompts)."""
    return [i // k for i in range(batch_size)]


def prompt_texts(envs, tokenizer, n_prompts: int) -> tuple[list[str], list[list[int]]]:
    """The first ``n_prompts`` env prompts as text (for TRL) and as the env's token ids.

    Raises:
        SystemExit: a decoded prompt does not re-tokenize to the env's ids.
    """
    core = envs.unwrapped.core
    ids = [core.prompt_ids(i).tolist() for i in range(n_prompts)]
    texts = [tokenizer.decode(p, skip_special_tokens=False) for p in ids]
    for i, (text, p) in enumerate(zip(texts, ids, strict=True)):
        again = tokenizer(text)["input_ids"]
        if again != p:
            raise SystemExit(f"prompt {i}: decoding and re-tokenizing changes the ids "
                             f"({len(p)} -> {len(again)} tokens); TRL would see other tokens")
    return texts, ids


def build_ours(args: argparse.Namespace, envs, model_path: Path) -> Ours:
    """Our policy and frozen reference (both loaded from ``model_path``), value model (copy
    of the initial backbone, as in :func:`agents.train.train`; none with ``--baseline loo``)
    and optimizers."""
    from agents.reinforce import ValueModel
    from rlaif_gym.models import load_causal_lm

    policy = load_causal_lm(str(model_path), dtype="float32", device=args.device)
    value_model = None
    if args.baseline == "value":
        value_model = ValueModel.from_policy(policy)  # before any update: initial weights
    reference = load_causal_lm(str(model_path), dtype="float32", device=args.device)
    reference.requires_grad_(False)
    reference.eval()
    policy.requires_grad_(True)
    policy.eval()
    value_opt = None
    if value_model is not None:
        value_model.requires_grad_(True)
        value_model.eval()
        value_opt = torch.optim.AdamW(value_model.parameters(), lr=args.lr, weight_decay=0.0)
    policy_opt = torch.optim.AdamW(policy.parameters(), lr=args.lr, weight_decay=0.0)
    indices = group_indices(args.batch_size, args.rloo_k)
    core = envs.unwrapped.core
    expected = [core.prompt_ids(i).tolist() for i in indices]
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    return Ours(policy, value_model, reference, policy_opt, value_opt, envs, indices, expected,
                args, generator)


# --------------------------------------------------------------------------------------------
# TRL


def import_trl(site: str | None):
    """Import ``trl`` (after prepending ``site`` to ``sys.path``); a clear error if missing."""
    if site:
        sys.path.insert(0, str(site))
    try:
        import trl
    except ImportError as exc:
        raise SystemExit(
            f"TRL is not importable ({exc}); install it outside the project venv, e.g. "
            "`.venv/bin/pip install --no-deps --target /work/trl-site trl accelerate psutil`, "
            "and pass --trl-site /work/trl-site"
        ) from exc
    return trl


def build_trl(args: argparse.Namespace, tokenizer, model_path: Path, texts: list[str],
              expected_ids: list[list[int]], out_dir: str,
              records: Sequence[Any] = ()) -> tuple[Any, StepTimes]:
    """An ``RLOOTrainer`` or ``GRPOTrainer`` (``--trl-trainer``) for ``1 + reps`` steps whose
    callback times each step after the first (warm-up) one. ``records``: the env's
    :class:`PromptRecord` of each prompt (``task_input`` / ``reference`` columns)."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    Config, Trainer = (GRPOConfig, GRPOTrainer) if args.trl_trainer == "grpo" else (
        RLOOConfig, RLOOTrainer)

    times = StepTimes()
    pending_generation: list[float] = []
    device = torch.device(args.device)

    class StepTimer(TrainerCallback):
        """Times each optimizer step between ``on_step_begin`` and ``on_step_end``."""

        def __init__(self) -> None:
            self.start = 0.0

        def on_step_begin(self, _args, state, control, **kwargs):
            pending_generation.clear()
            _sync(device)
            self.start = time.perf_counter()

        def on_step_end(self, _args, state, control, **kwargs):
            _sync(device)
            seconds = time.perf_counter() - self.start
            if state.global_step >= 2:  # global_step is already incremented: step 1 = warm-up
                times.step.append(seconds)
                times.generation.append(sum(pending_generation))

    config = Config(
        output_dir=out_dir,
        per_device_train_batch_size=args.batch_size,
        num_generations=args.rloo_k,
        gradient_accumulation_steps=1,
        num_iterations=1,
        max_steps=1 + args.reps,
        max_completion_length=args.max_new_tokens,
        generation_kwargs={"min_new_tokens": args.max_new_tokens},
        temperature=args.temperature, top_p=1.0, top_k=0,
        beta=args.beta,
        learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0,
        optim="adamw_torch", weight_decay=0.0, max_grad_norm=args.max_grad_norm,
        bf16=False, fp16=False,
        activation_checkpointing=args.trl_gradient_checkpointing,
        disable_dropout=True,
        shuffle_dataset=False,
        model_init_kwargs={"dtype": "float32"},
        use_cpu=args.device == "cpu",
        seed=args.seed,
        report_to="none", save_strategy="no", logging_strategy="no", disable_tqdm=True,
        dataloader_num_workers=0,
    )
    columns: dict[str, list[Any]] = {"prompt": texts}
    if records:
        columns["task_input"] = [r.text for r in records]
        columns["reference"] = [r.reference for r in records]
    dataset = Dataset.from_dict(columns)
    trainer = Trainer(model=str(model_path), reward_funcs=make_trl_reward(args),
                      args=config, train_dataset=dataset, processing_class=tokenizer,
                      callbacks=[StepTimer()])

    # Time the generation part (tokenize + generate + decode) and check prompts and lengths.
    generate = trainer._generate
    expected_batch = [p for p in expected_ids for _ in range(args.rloo_k)]

    def timed_generate(prompts: list):
        _sync(device)
        t0 = time.perf_counter()
        result = generate(prompts)  # RLOO: 3 values, GRPO: 8; the ids come first
        _sync(device)
        pending_generation.append(time.perf_counter() - t0)
        prompt_ids, completion_ids = result[0], result[1]
        if [list(p) for p in prompt_ids] != expected_batch:
            raise RuntimeError("TRL: prompt ids differ from the env's")
        _check_lengths("TRL", [len(c) for c in completion_ids], args.max_new_tokens)
        return result

    trainer._generate = timed_generate
    return trainer, times


# --------------------------------------------------------------------------------------------
# main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--policy", default="smollm2-135m-instruct",
                        help="model spec (rlaif_gym.models); TRL loads its resolved folder")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="completions per step, both sides (multiple of --rloo-k)")
    parser.add_argument("--rloo-k", type=int, default=2,
                        help="TRL num_generations; both sides use batch-size / k prompts")
    parser.add_argument("--max-new-tokens", type=int, default=32,
                        help="exact completion length L, both sides")
    parser.add_argument("--max-prompt-tokens", type=int, default=128)
    parser.add_argument("--reps", type=int, default=3, help="timed steps per block")
    parser.add_argument("--rounds", type=int, default=1,
                        help="blocks per contender, alternating ours, TRL, ours, TRL, ...")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--temperature", type=float, default=0.9)
    parser.add_argument("--beta", type=float, default=0.05, help="KL coefficient, both sides")
    parser.add_argument("--lr", type=float, default=1e-5, help="AdamW lr (ours: policy and value)")
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=str(SHARED_DATA) if SHARED_DATA.is_dir() else None)
    parser.add_argument("--split", default=None,
                        help="default: 'test' with --data-dir, else 'sample'")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--trl-site", default=str(DEFAULT_TRL_SITE)
                        if DEFAULT_TRL_SITE.is_dir() else None,
                        help="folder with trl/accelerate, prepended to sys.path")
    parser.add_argument("--trl-gradient-checkpointing", action="store_true",
                        help="keep TRL's default gradient checkpointing (ours has none)")
    parser.add_argument("--baseline", choices=("value", "loo"), default="value",
                        help="ours: the value model or the leave-one-out baseline")
    parser.add_argument("--trl-trainer", choices=("rloo", "grpo"), default="rloo")
    parser.add_argument("--reward", default="lowercase",
                        help="'lowercase' (a rule) or a registered rlaif-gym reward name")
    parser.add_argument("--judge", default="qwen2.5-coder-0.5b-instruct",
                        help="judge of a named --reward")
    parser.add_argument("--judge-dtype", default="float32")
    parser.add_argument("--anchor", default="group", help="pairwise: group or reference")
    parser.add_argument("--worker", choices=("ours", "trl"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("batch_size", "rloo_k", "max_new_tokens", "max_prompt_tokens", "reps",
                 "rounds", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.rloo_k < 2:
        parser.error("--rloo-k must be >= 2 (RLOO's leave-one-out baseline, GRPO's groups)")
    if args.batch_size % args.rloo_k:
        parser.error(f"--batch-size {args.batch_size} must be a multiple of --rloo-k "
                     f"{args.rloo_k}")
    if args.worker is not None and args.result is None:
        parser.error("--worker needs --result")
    args.split = args.split or ("test" if args.data_dir else "sample")
    return args


def _max_rss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def run_worker(args: argparse.Namespace) -> None:
    """Load one contender, run its warm-up and timed steps, write the times to ``--result``."""
    # TRL first: transformers decides at import whether accelerate (in --trl-site) exists
    trl = import_trl(args.trl_site) if args.worker == "trl" else None
    from transformers import AutoConfig

    from rlaif_gym.models import load_tokenizer, resolve_model_path

    torch.set_num_threads(args.threads)
    model_path = resolve_model_path(args.policy)
    tokenizer = load_tokenizer(args.policy)
    vocab_size = int(AutoConfig.from_pretrained(str(model_path)).vocab_size)
    envs = build_envs(args, tokenizer, vocab_size,
                      make_env_reward(args) if args.worker == "ours" else None)
    texts, ids = prompt_texts(envs, tokenizer, args.batch_size // args.rloo_k)
    info: dict[str, Any] = {"prompt_lengths": [len(p) for p in ids],
                            "model_path": str(model_path)}
    if args.worker == "ours":
        ours = build_ours(args, envs, model_path)
        torch.set_num_threads(args.threads)
        ours.step(record=False)  # warm-up
        for _ in range(args.reps):
            ours.step(record=True)
        times = ours.times
    else:
        import accelerate

        info["versions"] = {"trl": trl.__version__, "accelerate": accelerate.__version__}
        out_dir = tempfile.mkdtemp(prefix="bench_rloo-")
        try:
            records = list(envs.unwrapped.prompts)[: args.batch_size // args.rloo_k]
            trainer, times = build_trl(args, tokenizer, model_path, texts, ids, out_dir,
                                       records)
            torch.set_num_threads(args.threads)  # in case a library changed it
            trainer.train()
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)
    envs.close()
    if len(times.step) != args.reps:
        raise RuntimeError(f"{args.worker}: expected {args.reps} timed steps, got "
                           f"{len(times.step)}")
    info["threads"] = torch.get_num_threads()
    info["max_rss_gb"] = _max_rss_gb()
    Path(args.result).write_text(json.dumps({"times": asdict(times), "info": info}),
                                 encoding="utf-8")


def run_block(kind: str, argv: Sequence[str]) -> tuple[StepTimes, dict[str, Any]]:
    """Run one worker process (``kind`` = ours or trl) and read its times."""
    fd, result = tempfile.mkstemp(prefix=f"bench_rloo-{kind}-", suffix=".json")
    os.close(fd)
    repo = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH")) if p)
    try:
        subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv,
                        "--worker", kind, "--result", result], check=True, env=env)
        data = json.loads(Path(result).read_text(encoding="utf-8"))
    finally:
        os.unlink(result)
    return StepTimes(**data["times"]), data["info"]


def report(ours: StepTimes, trl: StepTimes) -> None:
    """Per-repetition lines, medians and the steps/s ratio ours / TRL."""
    for r, (o, t) in enumerate(zip(ours.step, trl.step, strict=True)):
        print(f"rep {r}: ours {o:7.2f} s/step (rollout {ours.generation[r]:6.2f})   "
              f"TRL {t:7.2f} s/step (generate {trl.generation[r]:6.2f})   ratio {t / o:5.2f}x")
    ours_med, trl_med = statistics.median(ours.step), statistics.median(trl.step)
    print(f"median ours: {ours_med:7.2f} s/step ({1 / ours_med:.3f} steps/s), generation part "
          f"{statistics.median(ours.generation):.2f} s")
    print(f"median TRL : {trl_med:7.2f} s/step ({1 / trl_med:.3f} steps/s), generation part "
          f"{statistics.median(trl.generation):.2f} s")
    paired = [t / o for o, t in zip(ours.step, trl.step, strict=True)]
    print(f"ratio ours / TRL steps per second: {trl_med / ours_med:.2f}x (ratio of medians), "
          f"{statistics.median(paired):.2f}x (median of per-repetition ratios); > 1: ours faster")


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker is not None:
        run_worker(args)
        return
    print(f"ours: baseline {args.baseline}; TRL: {args.trl_trainer}; reward {args.reward}"
          + (f" (judge {args.judge})" if args.reward != "lowercase" else ""))
    print(f"B={args.batch_size} completions/step = {args.batch_size // args.rloo_k} prompts x "
          f"k={args.rloo_k}, L={args.max_new_tokens} new tokens, max prompt tokens "
          f"{args.max_prompt_tokens}, beta={args.beta}, lr={args.lr}, T={args.temperature}, "
          f"{args.rounds} round(s) x {args.reps} reps, {args.threads} thread(s), "
          f"TRL gradient checkpointing {args.trl_gradient_checkpointing}", flush=True)
    ours, trl = StepTimes(), StepTimes()
    for _ in range(args.rounds):
        for kind, times in (("ours", ours), ("trl", trl)):
            block, info = run_block(kind, argv)
            times.step += block.step
            times.generation += block.generation
            print(f"[{kind}] {info}", flush=True)
    print(f"model {args.policy}, float32 on {args.device}, torch {torch.__version__}")
    report(ours, trl)


if __name__ == "__main__":
    main()
