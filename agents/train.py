"""The REINFORCE training loop: rollouts through the vector env, updates, metrics, checkpoints.

One step::

    batch  = collect_episodes(policy, envs, temperature)      # B episodes (B/k prompts x k)
    stats  = reinforce_step(policy, value, reference, ...)    # see agents/reinforce.py
    metrics.csv  += one row                                    # flushed every step

Groups: with ``samples_per_prompt = k > 1`` the vector env runs ``B / k`` groups of ``k``
sub-envs (``group_size=k``): each group starts from one prompt of the schedule and its k
completions reach the reward in ONE call when the last one ends (what group rewards such
as ``"pairwise"`` need), and the k episodes are consecutive in the batch (what the
leave-one-out baseline, ``baseline="loo"``, needs). ``baseline="value"`` (default) is the
paper's learned value model; ``"loo"`` builds no value model at all.

Run folder ``OUT``::

    OUT/config.json         the run's config (JSON; non-JSON values as their repr)
    OUT/metrics.csv         one row per step (see METRIC_COLUMNS), appended and flushed
    OUT/curves.png          reward / KL / length / entropy / losses vs step
    OUT/checkpoint/         the latest checkpoint, replaced atomically:
        policy/             save_pretrained() weights + tokenizer (load_causal_lm(...) loads it)
        value.safetensors   value model (backbone + scalar head; not with baseline "loo")
        trainer_state.pt    the optimizers, torch RNG states (global, sampling generator);
                            with keep_training_state=False the final checkpoint has neither
                            this nor value.safetensors (it can be evaluated, not extended)
        state.json          step, python/numpy RNG states, prompt-schedule state, config
        metrics.csv         the metrics rows up to this step (restored on resume)

A crash or Ctrl-C loses at most the steps since the last checkpoint; ``resume=True``
reloads the checkpoint, truncates ``metrics.csv`` to its step and continues the same
curve. Prompts are chosen by a stateless schedule (epoch-wise permutations seeded by
``(seed, epoch)``) and completions are sampled from a dedicated generator saved in the
checkpoint, so a resumed run reproduces the uninterrupted one exactly (same device,
same threads).
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.postprocess import PostprocessedReward, get_postprocessor
from agents.reinforce import (
    BASELINES,
    StepStats,
    ValueModel,
    init_value_baseline,
    reinforce_step,
)
from agents.rollout import collect_episodes
from rlaif_gym.defaults import DEFAULT_POLICY
from rlaif_gym.errors import UsageError
from rlaif_gym.files import atomic_path
from rlaif_gym.reward_protocol import RewardFunction, RewardOutput, call_reward

__all__ = [
    "DEFAULT_MICRO_BATCH",
    "METRIC_COLUMNS",
    "PromptSchedule",
    "TrainConfig",
    "TrainResult",
    "build_reward",
    "make_train_envs",
    "plot_curves",
    "read_metrics",
    "train",
    "update_micro_batch",
]

logger = logging.getLogger(__name__)

#: What a judge-based reward spent in a step (summed over the step's episodes, from the
#: ``judge_*`` details of :func:`rewards.judges.stats.counter_details`; 0 for other rewards):
#: HTTP calls, prompt tokens, cache hits, retries, failures, seconds waiting on rate limits.
JUDGE_COLUMNS: tuple[str, ...] = ("judge_calls", "judge_prompt_tokens", "judge_cache_hits",
                                  "judge_retries", "judge_failures", "judge_limit_wait_s")
#: Columns of ``metrics.csv``; ``time*`` columns are wall-clock seconds of the step.
METRIC_COLUMNS: tuple[str, ...] = (
    "step", *(f.name for f in dataclasses.fields(StepStats)),
    "time_rollout", "time_reward", "time_update", "time", *JUDGE_COLUMNS,
)
CHECKPOINT = "checkpoint"
#: Config fields that may change when resuming without a warning.
RESUMABLE_CHANGES = frozenset({"steps", "resume", "checkpoint_every", "threads", "progress",
                               "out_dir", "device", "keep_training_state"})


#: Accepted ``TrainConfig.value_init`` values.
VALUE_INITS: tuple[str, ...] = ("first-batch", "zero")


@dataclass
class TrainConfig:
    """Everything a training run needs (defaults: the paper's settings where it gives them).

    Attributes:
        out_dir: run folder (created).
        env_id: a registered id (``RLAIF-TLDR-v0``, ``RLAIF-HH-Helpful-v0``, ...).
        reward: a reward name (``"direct"``, ``"none"``, names registered in
            :data:`rlaif_gym.reward_registry.REWARD_REGISTRY`), a RewardFunction or a callable
            ``(prompts, completions) -> scores``.
        reward_options: keyword options of a named reward.
        policy: policy model spec (:func:`rlaif_gym.models.load_causal_lm`); also the
            env's tokenizer spec. The frozen reference policy and the value model's
            backbone are copies of it.
        judge: judge model spec, passed as the ``"direct"`` reward's ``judge`` option (None:
            the reward's default judge).
        steps: total updates (one batch of ``batch_size`` episodes each).
        batch_size: episodes per update (= the vector env's ``num_envs``); a multiple of
            ``samples_per_prompt``.
        samples_per_prompt: k, completions per prompt: the batch is ``batch_size / k``
            prompts of the schedule, each sampled k times, and a prompt's k completions are
            scored in one reward call (the vector env's ``group_size``).
        baseline: ``"value"`` (the paper's learned value model) or ``"loo"`` (the
            leave-one-out mean of the other k - 1 returns of the same prompt, as in RLOO;
            needs ``samples_per_prompt >= 2``; no value model is built, stepped or saved:
            ``value_lr`` and ``value_init`` are unused).
        micro_batch_size: sequences per forward/backward in the update (None: at most
            :data:`DEFAULT_MICRO_BATCH`, see :func:`update_micro_batch`); with
            ``baseline="loo"`` a multiple of ``samples_per_prompt``.
        lr, value_lr: AdamW learning rates of the policy and the value model.
        kl_coef: beta of ``(1 - beta) r - beta KL`` (paper: 0.05).
        temperature: sampling temperature, also used for the loss log-probs (paper: 0.9).
        max_new_tokens, max_prompt_tokens: episode limits (env options).
        split: prompt split for training; ``eval_split``: held-out split for ``sample``.
        train_prompts: train on the first N prompts of ``split`` only, so prompts
            ``N, N+1, ...`` of the same split stay held out for evaluation (None: all).
        data_dir: data folder (default ``$RLAIF_GYM_DATA``).
        seed: seeds the prompt schedule, the sampling generator and the global RNGs.
        checkpoint_every: checkpoint (and plot) every N steps; always at the end.
        keep_training_state: save the optimizers, the value model and the RNG states with
            the final checkpoint too, so the run can be extended later (more ``steps``).
            False keeps only the policy there (2.6 GB less for SmolLM2-135M with the value
            baseline); intermediate checkpoints always hold everything.
        threads: ``torch.set_num_threads`` (also the judge's threads); None: unchanged.
        postprocess: ``"none"``, ``"strip-trailing-punctuation"`` or a callable ``str -> str``
            applied to completions before the reward sees them (:mod:`agents.postprocess`).
        value_init: ``"first-batch"`` (default) starts the value baseline at the first
            batch's mean return (:func:`agents.reinforce.init_value_baseline`); ``"zero"``
            starts it at 0 (the head's zero init), which makes the baseline lag for tens of
            updates when rewards are far from 0.
        max_grad_norm: clip each model's gradient norm (None: no clipping).
        weight_decay: AdamW weight decay of both optimizers.
        dtype: parameter dtype of the trained models.
        device: torch device.
        resume: continue from ``out_dir/checkpoint`` (fresh start if there is none).
        env_options: extra keyword arguments of ``gym.make_vec`` (e.g. ``prompts=``,
            ``tokenizer=``, ``stop_token_ids=``).
        progress: show a tqdm progress bar.
    """

    out_dir: str
    env_id: str = "RLAIF-TLDR-v0"
    reward: Any = "direct"
    reward_options: dict[str, Any] = field(default_factory=dict)
    policy: str = DEFAULT_POLICY
    judge: str | None = None
    steps: int = 1000
    batch_size: int = 16
    samples_per_prompt: int = 1
    baseline: str = "value"
    micro_batch_size: int | None = None
    lr: float = 1e-5
    value_lr: float = 1e-5
    kl_coef: float = 0.05
    temperature: float = 0.9
    max_new_tokens: int = 64
    max_prompt_tokens: int = 512
    split: str = "train"
    eval_split: str = "test"
    train_prompts: int | None = None
    data_dir: str | None = None
    seed: int = 0
    checkpoint_every: int = 50
    keep_training_state: bool = True
    threads: int | None = None
    postprocess: Any = "none"
    max_grad_norm: float | None = 1.0
    value_init: str = "first-batch"
    weight_decay: float = 0.0
    dtype: str = "float32"
    device: str = "cpu"
    resume: bool = False
    env_options: dict[str, Any] = field(default_factory=dict)
    progress: bool = True

    def __post_init__(self) -> None:
        """Check every field that needs no file or model (:func:`check_inputs` does the
        rest before anything loads).

        Raises:
            UsageError: a bad value (a :class:`ValueError`).
        """
        for name in ("steps", "batch_size", "samples_per_prompt", "checkpoint_every",
                     "max_new_tokens", "max_prompt_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{name} must be a positive int, got {value!r}")
        for name in ("train_prompts", "micro_batch_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise UsageError(f"{name} must be None or a positive int, got {value!r}")
        for name in ("lr", "value_lr", "kl_coef", "temperature", "weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    math.isfinite(value)):
                raise UsageError(f"{name} must be a finite number, got {value!r}")
        if self.max_grad_norm is not None and not (math.isfinite(self.max_grad_norm)
                                                   and self.max_grad_norm > 0):
            raise UsageError(f"max_grad_norm must be None or a finite number > 0, got "
                             f"{self.max_grad_norm!r}")
        k = self.samples_per_prompt
        if self.batch_size % k:
            raise UsageError(f"batch_size={self.batch_size} must be a multiple of "
                             f"samples_per_prompt={k} (batch_size / k prompts, k samples each)")
        if self.baseline not in BASELINES:
            raise UsageError(f"baseline must be one of {BASELINES}, got {self.baseline!r}")
        if self.baseline == "loo":
            if k < 2:
                raise UsageError("baseline='loo' (leave-one-out) needs samples_per_prompt >= 2: "
                                 "with one sample per prompt there are no other samples to "
                                 f"average (got samples_per_prompt={k}); use "
                                 "baseline='value' or sample k >= 2 per prompt")
            if self.micro_batch_size is not None and self.micro_batch_size % k:
                raise UsageError(f"baseline='loo': micro_batch_size={self.micro_batch_size} "
                                 f"must be a multiple of samples_per_prompt={k} (a group's "
                                 "returns are needed together)")
        if not 0.0 <= self.kl_coef <= 1.0:
            raise UsageError(f"kl_coef must be in [0, 1], got {self.kl_coef}")
        if self.temperature <= 0:
            raise UsageError(f"temperature must be > 0, got {self.temperature}")
        for name in ("lr", "value_lr"):
            if getattr(self, name) <= 0:
                raise UsageError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.weight_decay < 0:
            raise UsageError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.value_init not in VALUE_INITS:
            raise UsageError(f"value_init must be one of {VALUE_INITS}, got "
                             f"{self.value_init!r}")
        try:
            get_postprocessor(self.postprocess)  # fail early on an unknown name
        except (KeyError, ValueError) as exc:
            raise UsageError(str(exc)) from exc

    def to_json(self) -> dict[str, Any]:
        """The config as JSON-safe values (non-JSON values become their ``repr``)."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=repr))


@dataclass
class TrainResult:
    """What :func:`train` returns: the run folder, the step the run is at (its checkpoint's
    step when that is past ``config.steps``) and every metrics row."""

    out_dir: Path
    step: int
    metrics: list[dict[str, float]]


# --------------------------------------------------------------------------------------------
# prompts, reward, envs


@dataclass(frozen=True)
class PromptSchedule:
    """Which prompt each episode starts from: epoch-wise permutations of the prompt set.

    Episode ``k`` (counted over the whole run) uses prompt ``perm_e[k % n]`` with
    ``e = k // n`` and ``perm_e = default_rng([seed, e]).permutation(n)``: every prompt is
    seen once per epoch, and the schedule has no state beyond the step count (resuming
    needs nothing else).
    """

    num_prompts: int
    seed: int

    def indices(self, step: int, batch_size: int, samples_per_prompt: int = 1) -> list[int]:
        """Prompt indices of the ``batch_size`` episodes of update ``step`` (0-based): the
        schedule's next ``batch_size / k`` prompts, each repeated ``k = samples_per_prompt``
        times in a row (``[p0] * k + [p1] * k + ...``; k = 1: one prompt per episode)."""
        if samples_per_prompt > 1:
            per_step = batch_size // samples_per_prompt
            return [i for i in self.indices(step, per_step) for _ in range(samples_per_prompt)]
        if self.num_prompts < 1:
            raise ValueError("the prompt set is empty")
        out: list[int] = []
        for k in range(step * batch_size, (step + 1) * batch_size):
            epoch, pos = divmod(k, self.num_prompts)
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_prompts)
            out.append(int(perm[pos]))
        return out


def _env_task(env_id: str) -> str | None:
    from rlaif_gym.envs.registration import ENV_IDS

    return ENV_IDS.get(env_id)


def reward_context(config: TrainConfig) -> dict[str, Any]:
    """What a run offers its named reward (:func:`rlaif_gym.reward_registry.make_reward`'s
    ``context``): the env's task, the run's judge and threads."""
    return {"task": _env_task(config.env_id), "judge": config.judge,
            "num_threads": config.threads}


class TimedReward(RewardFunction):
    """``inner`` unchanged, adding up the seconds its calls take (``seconds``): the judging
    time inside a rollout, ``metrics.csv``'s ``time_reward``."""

    def __init__(self, inner: RewardFunction) -> None:
        self.inner = inner
        self.name = inner.name
        self.seconds = 0.0

    @property
    def needs_references(self) -> bool:  # type: ignore[override]
        """The inner reward's: references are passed through to it."""
        return bool(getattr(self.inner, "needs_references", False))

    def score(self, prompts: Sequence[str], completions: Sequence[str],
              references: Sequence[str | None] | None = None) -> RewardOutput:
        start = time.perf_counter()
        try:
            return call_reward(self.inner, prompts, completions, references)
        finally:
            self.seconds += time.perf_counter() - start


#: Sequences per forward/backward of the update when ``micro_batch_size`` is None. The
#: update's activations grow with B x (prompt + completion) tokens: SmolLM2 at B=16 x ~450
#: tokens beside the 1.5B judge went past 16 GiB; the summed gradient does not depend on it.
DEFAULT_MICRO_BATCH = 8


def update_micro_batch(config: TrainConfig) -> int:
    """Sequences per forward/backward in the update: ``config.micro_batch_size``, or by
    default at most :data:`DEFAULT_MICRO_BATCH`, rounded down to a multiple of the group size
    with ``baseline="loo"`` (at least one group)."""
    if config.micro_batch_size is not None:
        return config.micro_batch_size
    k = config.samples_per_prompt if config.baseline == "loo" else 1
    return min(config.batch_size, max(k, DEFAULT_MICRO_BATCH // k * k))


def build_reward(config: TrainConfig):
    """The run's :class:`~rlaif_gym.reward_protocol.RewardFunction`: ``config.reward`` built
    with its options and :func:`reward_context` (a judge-based reward such as ``"direct"``
    gets ``judge``, the env's task and ``num_threads``), wrapped in
    :class:`PostprocessedReward` unless ``postprocess`` is ``"none"``/None."""
    from rlaif_gym.reward_registry import accepts_option, make_reward

    if config.judge is not None and not accepts_option(config.reward, "judge"):
        warnings.warn(f"judge={config.judge!r} is ignored by reward {config.reward!r}",
                      stacklevel=2)
    reward = make_reward(config.reward, context=reward_context(config),
                         **config.reward_options)
    if config.postprocess is None or config.postprocess == "none":
        return reward
    return PostprocessedReward(reward, get_postprocessor(config.postprocess))


def make_train_envs(config: TrainConfig, reward: Any, vocab_size: int, num_envs: int,
                    split: str, policy_spec: str | None = None):
    """``gym.make_vec(env_id, num_envs, "vector_entry_point", autoreset DISABLED, ...)``."""
    import gymnasium as gym
    from gymnasium.vector import AutoresetMode

    import rlaif_gym  # noqa: F401  (registers the ids)

    kwargs: dict[str, Any] = dict(
        reward=reward, policy=policy_spec or config.policy, split=split,
        data_dir=config.data_dir, max_prompt_tokens=config.max_prompt_tokens,
        max_new_tokens=config.max_new_tokens, vocab_size=vocab_size,
    )
    if config.samples_per_prompt > 1:
        kwargs["group_size"] = config.samples_per_prompt
    kwargs.update(config.env_options)
    return gym.make_vec(config.env_id, num_envs=num_envs,
                        vectorization_mode="vector_entry_point",
                        autoreset_mode=AutoresetMode.DISABLED, **kwargs)


# --------------------------------------------------------------------------------------------
# metrics and curves


def read_metrics(path: str | os.PathLike) -> list[dict[str, float]]:
    """The rows of a ``metrics.csv`` as dicts of floats (``step`` as int).

    A torn last row (no final newline: the power went off mid-write) is left out; the
    rows are appended one complete line at a time, so only the last one can be torn.

    Raises:
        UsageError: a row other than a torn last one is not a row of numbers.
    """
    path = Path(path)
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # drop the torn last row
    rows = []
    for line_no, row in enumerate(csv.DictReader(text.splitlines()), start=2):
        try:
            parsed: dict[str, float] = {k: float(v) for k, v in row.items()}
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{path}: row {line_no} is not a row of numbers ({exc})") from exc
        parsed["step"] = int(parsed["step"])
        rows.append(parsed)
    return rows


def _write_metrics(path: Path, rows: list[dict[str, float]]) -> None:
    """Rewrite ``metrics.csv`` with ``rows`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=METRIC_COLUMNS, restval=0)  # older runs: 0
        writer.writeheader()
        writer.writerows(rows)


class MetricsWriter:
    """Appends one row per step to ``metrics.csv`` and flushes it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        new = not path.is_file() or path.stat().st_size == 0
        self._fh = open(path, "a", newline="", encoding="utf-8")  # noqa: SIM115
        self._writer = csv.DictWriter(self._fh, fieldnames=METRIC_COLUMNS)
        if new:
            self._writer.writeheader()
            self._fh.flush()

    def write(self, row: dict[str, float]) -> None:
        self._writer.writerow(row)
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


#: (column, title) of each panel of curves.png.
CURVE_PANELS = (
    ("reward", "mean reward (raw, before KL)"),
    ("kl", "KL(policy || reference) per sequence"),
    ("completion_length", "completion length (tokens)"),
    ("entropy", "entropy per token (nats)"),
    ("value_loss", "value loss"),
    ("pg_loss", "policy-gradient loss"),
)


def plot_curves(metrics_csv: str | os.PathLike, out_png: str | os.PathLike) -> Path | None:
    """Plot the training curves of ``metrics_csv`` to ``out_png`` (Agg, no display).

    Returns the image path, or None when there are no rows yet.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = read_metrics(metrics_csv)
    if not rows:
        return None
    steps = [r["step"] for r in rows]
    fig = Figure(figsize=(13, 7), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3)
    for ax, (column, title) in zip(axes.flat, CURVE_PANELS, strict=True):
        values = [r[column] for r in rows]
        ax.plot(steps, values, lw=1, alpha=0.5 if len(rows) > 20 else 1.0)
        if len(rows) > 20:  # a moving average on top of the noisy per-step values
            width = max(2, len(rows) // 20)
            smooth = np.convolve(values, np.ones(width) / width, mode="valid")
            ax.plot(steps[width - 1 :], smooth, lw=2)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100)
    return out_png


# --------------------------------------------------------------------------------------------
# checkpoints


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())


def _rng_json() -> dict[str, Any]:
    version, state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(state), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }


def _restore_rng_json(states: dict[str, Any]) -> None:
    version, state, gauss = states["python"]
    random.setstate((version, tuple(state), gauss))
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_checkpoint(out_dir: Path, *, step: int, config: TrainConfig, policy, tokenizer,
                    value_model: ValueModel | None, policy_opt, value_opt,
                    generator: torch.Generator, schedule: PromptSchedule,
                    training_state: bool = True) -> Path:
    """Write ``out_dir/checkpoint`` atomically: build it in a temporary folder, then swap
    it in with renames (the previous one is kept as ``checkpoint.old`` until the swap is
    done, and :func:`find_checkpoint` falls back to it).

    ``training_state=False`` writes the policy, ``state.json`` (with ``"training_state":
    false``) and the metrics only: no value model, optimizers or RNG states."""
    from safetensors.torch import save_file

    final = out_dir / CHECKPOINT
    tmp = Path(tempfile.mkdtemp(prefix=f"{CHECKPOINT}.tmp-", dir=out_dir))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a run folder is meant to be shared
    try:
        policy.save_pretrained(tmp / "policy")
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp / "policy")
        if value_model is not None and training_state:  # baseline "loo" has none
            save_file({k: v.detach().contiguous().cpu()
                       for k, v in value_model.state_dict().items()},
                      str(tmp / "value.safetensors"))
            os.chmod(tmp / "value.safetensors", 0o644)
        if training_state:
            cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
            torch.save({
                "policy_optimizer": policy_opt.state_dict(),
                "value_optimizer": None if value_opt is None else value_opt.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": cuda_states,
                "generator": generator.get_state(),
            }, tmp / "trainer_state.pt")
        state = {
            "step": step,
            "training_state": training_state,
            "rng": _rng_json(),
            "schedule": {"num_prompts": schedule.num_prompts, "seed": schedule.seed,
                         "episodes_done": step * config.batch_size},
            "config": config.to_json(),
        }
        (tmp / "state.json").write_text(json.dumps(state), encoding="utf-8")
        # the metrics up to this step travel with the checkpoint: a torn or lost
        # OUT/metrics.csv is restored from here on resume
        _write_metrics(tmp / "metrics.csv", [r for r in read_metrics(out_dir / "metrics.csv")
                                             if r["step"] <= step])
        _fsync_tree(tmp)
        old = out_dir / f"{CHECKPOINT}.old"
        if old.exists():
            shutil.rmtree(old)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        if old.exists():
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def find_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """``out_dir/checkpoint`` if complete, else ``checkpoint.old`` (a swap was
    interrupted), else None. Complete: ``state.json`` and ``trainer_state.pt``, or a final
    checkpoint saved without its training state (``keep_training_state=False``)."""
    for name in (CHECKPOINT, f"{CHECKPOINT}.old"):
        folder = Path(out_dir) / name
        if not (folder / "state.json").is_file():
            continue
        if (folder / "trainer_state.pt").is_file() or not has_training_state(folder):
            return folder
    return None


def has_training_state(checkpoint: str | os.PathLike) -> bool:
    """Whether a checkpoint folder was saved with its optimizers and RNG states (every
    checkpoint but a final one of a run with ``keep_training_state=False``)."""
    state = json.loads((Path(checkpoint) / "state.json").read_text(encoding="utf-8"))
    return bool(state.get("training_state", True))


def load_policy_weights(model: torch.nn.Module, folder: Path) -> None:
    """Load the ``*.safetensors`` written by ``save_pretrained`` into ``model`` in place.

    Keys missing from the files must be tied to a loaded parameter (e.g. ``lm_head.weight``
    tied to the embeddings); anything else is an error.
    """
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors weights in {folder}")
    weights: dict[str, torch.Tensor] = {}
    for path in files:
        weights.update(load_file(str(path)))
    result = model.load_state_dict(weights, strict=False)
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded_ptrs = {params[k].data_ptr() for k in weights if k in params}
    untied = [k for k in result.missing_keys
              if k not in params or params[k].data_ptr() not in loaded_ptrs]
    if untied or result.unexpected_keys:
        raise RuntimeError(f"checkpoint {folder} does not match the policy: missing {untied}, "
                           f"unexpected {result.unexpected_keys}")


# --------------------------------------------------------------------------------------------
# the loop


def _check_resume_config(config: TrainConfig, saved: dict[str, Any]) -> None:
    current = config.to_json()
    changed = sorted(k for k in current if k not in RESUMABLE_CHANGES
                     and k in saved and current[k] != saved[k])
    if changed:
        details = ", ".join(f"{k}: {saved[k]!r} -> {current[k]!r}" for k in changed)
        warnings.warn(f"resuming with a changed config ({details}); the run will not "
                      "reproduce an uninterrupted one", stacklevel=3)


def _prepare_out_dir(config: TrainConfig) -> tuple[Path, Path | None]:
    out = Path(config.out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the run folder {out}: {exc}") from exc
    if not os.access(out, os.W_OK):
        raise UsageError(f"the run folder {out} is not writable")
    checkpoint = find_checkpoint(out)
    # a metrics.csv without a step (a run that failed before its first step) holds nothing
    has_steps = bool(read_metrics(out / "metrics.csv"))
    if not config.resume and (checkpoint is not None or has_steps):
        raise FileExistsError(
            f"{out} already holds a run (metrics.csv or checkpoint/); pass resume=True "
            "(--resume) to continue it or choose another out_dir"
        )
    if config.resume and checkpoint is None:
        logger.warning("resume requested but %s has no checkpoint: starting from step 0", out)
    if checkpoint is None:
        (out / "metrics.csv").unlink(missing_ok=True)
    return out, checkpoint


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_inputs(config: TrainConfig) -> None:
    """Check everything about a run that needs no model, before anything slow starts: the
    env id, device and dtype, the policy spec and a judge spec (resolved, not loaded), the
    reward's options against its signature, a reward model's path, that the prompt split
    exists (and holds ``train_prompts``), that the run folder is writable, and that it
    holds no run unless ``resume``.

    Raises:
        UsageError: any of these fails (the message names the option and the fix).
        FileExistsError: ``out_dir`` holds a run and ``resume`` is False.
    """
    from rlaif_gym.envs.registration import ENV_IDS
    from rlaif_gym.models import check_model_spec
    from rlaif_gym.reward_registry import accepts_option, check_reward_options
    from rlaif_gym.tasks import get_task

    if config.env_id not in ENV_IDS:
        raise UsageError(f"unknown env {config.env_id!r}; valid: {', '.join(ENV_IDS)}")
    try:
        device = torch.device(config.device)
    except RuntimeError as exc:
        raise UsageError(f"device {config.device!r}: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {config.device!r}: CUDA is not available on this machine")
    if not isinstance(getattr(torch, str(config.dtype), None), torch.dtype):
        raise UsageError(f"dtype {config.dtype!r} is not a torch dtype (float32, bfloat16...)")
    context = reward_context(config)
    specs = [("policy", config.policy)]
    try:
        check_reward_options(config.reward, config.reward_options, context=context)
        if accepts_option(config.reward, "judge"):
            specs.append(("judge", config.reward_options.get("judge", config.judge)))
    except (ValueError, TypeError) as exc:
        raise UsageError(f"reward {config.reward!r}: {exc}") from exc
    for what, spec in specs:
        if isinstance(spec, (str, os.PathLike)):
            try:
                check_model_spec(spec)
            except (ValueError, TypeError, OSError) as exc:
                raise UsageError(f"{what} {spec!r}: {exc}") from exc
    path = config.reward_options.get("path")
    if isinstance(path, str) and not Path(path).expanduser().is_dir():
        raise UsageError(f"reward {config.reward!r}: path {path!r} is not a folder (a reward "
                         "model from `rlaif-gym train-rm --out DIR`)")
    if "prompts" not in config.env_options:
        task = ENV_IDS[config.env_id]
        try:
            n_prompts = len(get_task(task).load_prompts(split=config.split,
                                                        data_dir=config.data_dir))
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot load the {task} prompts of split {config.split!r}: "
                             f"{exc}") from exc
        if config.train_prompts is not None and config.train_prompts > n_prompts:
            raise UsageError(f"train_prompts={config.train_prompts} but split "
                             f"{config.split!r} has only {n_prompts} prompts")
    out = Path(config.out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"the run folder {out} is a file")
    if not os.access(_nearest_existing(out), os.W_OK):
        raise UsageError(f"cannot write the run folder {out}: "
                         f"{_nearest_existing(out)} is not writable")
    if not config.resume and out.is_dir() and (find_checkpoint(out) is not None
                                               or read_metrics(out / "metrics.csv")):
        raise FileExistsError(f"{out} already holds a run (metrics.csv or checkpoint/); pass "
                              "resume=True (--resume) to continue it or choose another "
                              "out_dir")


def _set_seeds(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(config: TrainConfig,
          on_step: Callable[[int, dict[str, float]], None] | None = None) -> TrainResult:
    """Train ``config.policy`` with REINFORCE on ``config.env_id`` (see the module doc).

    Args:
        config: the run's :class:`TrainConfig`.
        on_step: optional callback ``(step, metrics_row)`` after each update's row is written.

    Returns:
        :class:`TrainResult` with every metrics row of the run (resumed rows included).

    Raises:
        UsageError: bad input, found by :func:`check_inputs` before any model loads.
        FileExistsError: ``out_dir`` holds a run and ``resume`` is False.
        KeyboardInterrupt: re-raised after the curves are plotted (the last checkpoint
            stays the resume point).
    """
    from tqdm.auto import tqdm

    from rlaif_gym.models import load_causal_lm

    check_inputs(config)
    # a judge-based reward checks its judge here and loads nothing yet
    reward = TimedReward(build_reward(config))
    out, checkpoint = _prepare_out_dir(config)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    device = torch.device(config.device)
    saved_state: dict[str, Any] | None = None
    trainable = False  # the checkpoint holds the optimizers and RNG states
    if checkpoint is not None:
        saved_state = json.loads((checkpoint / "state.json").read_text(encoding="utf-8"))
        _check_resume_config(config, saved_state["config"])
        trainable = bool(saved_state.get("training_state", True))
        if not trainable and saved_state["step"] < config.steps:
            raise UsageError(f"{checkpoint} is the final checkpoint of a run saved without its "
                             f"training state (keep_training_state=False) at step "
                             f"{saved_state['step']}; it cannot be extended to {config.steps} "
                             "steps. Start a new run from its policy "
                             f"(policy={checkpoint / 'policy'}) instead")

    # models: reference (frozen initial policy), policy, value (backbone copy + head; none
    # with the leave-one-out baseline)
    reference = load_causal_lm(config.policy, dtype=config.dtype, device=device)
    reference.requires_grad_(False)
    reference.eval()
    policy = copy.deepcopy(reference)
    policy.requires_grad_(True)
    value_model: ValueModel | None = None
    if config.baseline == "value":
        value_model = ValueModel.from_policy(reference)
        value_model.requires_grad_(True)
        value_model.eval()
    if checkpoint is not None:
        from safetensors.torch import load_file

        load_policy_weights(policy, checkpoint / "policy")
        if value_model is not None and trainable:
            value_file = checkpoint / "value.safetensors"
            if not value_file.is_file():
                raise FileNotFoundError(f"{value_file} is missing: the checkpoint was saved "
                                        "by a run with baseline='loo'")
            value_model.load_state_dict(load_file(str(value_file), device=str(device)))
    policy_opt = torch.optim.AdamW(policy.parameters(), lr=config.lr,
                                   weight_decay=config.weight_decay)
    value_opt = None if value_model is None else torch.optim.AdamW(
        value_model.parameters(), lr=config.value_lr, weight_decay=config.weight_decay)

    envs = make_train_envs(config, reward, int(policy.config.vocab_size), config.batch_size,
                           config.split)
    unwrapped = envs.unwrapped
    n_actions = int(envs.single_action_space.n)
    pad_id = int(unwrapped.core.pad_token_id)
    n_prompts = len(unwrapped.prompts)
    if config.train_prompts is not None:
        if config.train_prompts > n_prompts:
            envs.close()
            raise UsageError(f"train_prompts={config.train_prompts} but split "
                             f"{config.split!r} has only {n_prompts} prompts")
        n_prompts = config.train_prompts
    schedule = PromptSchedule(n_prompts, config.seed)
    generator = torch.Generator(device=device)

    _set_seeds(config.seed)
    generator.manual_seed(config.seed)
    start = 0
    if checkpoint is not None and saved_state is not None:
        if trainable:  # else: a finished run (steps <= its step, checked above)
            # RNG states must stay on the CPU; the optimizers move their states to the params
            trainer = torch.load(checkpoint / "trainer_state.pt", map_location="cpu",
                                 weights_only=True)
            policy_opt.load_state_dict(trainer["policy_optimizer"])
            if value_opt is not None and trainer["value_optimizer"] is not None:
                value_opt.load_state_dict(trainer["value_optimizer"])
            torch.set_rng_state(trainer["torch_rng"])
            if trainer["cuda_rng"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(trainer["cuda_rng"])
            generator.set_state(trainer["generator"])
        _restore_rng_json(saved_state["rng"])
        start = int(saved_state["step"])
        saved_rows = checkpoint / "metrics.csv"  # the checkpoint's copy wins over a torn file
        source = saved_rows if saved_rows.is_file() else out / "metrics.csv"
        rows = [r for r in read_metrics(source) if r["step"] <= start]
        _write_metrics(out / "metrics.csv", rows)
    (out / "config.json").write_text(json.dumps(config.to_json(), indent=2), encoding="utf-8")

    writer = MetricsWriter(out / "metrics.csv")
    last_saved = start

    def checkpoint_now(step: int) -> None:
        nonlocal last_saved
        save_checkpoint(out, step=step, config=config, policy=policy,
                        tokenizer=unwrapped.tokenizer, value_model=value_model,
                        policy_opt=policy_opt, value_opt=value_opt, generator=generator,
                        schedule=schedule,
                        training_state=config.keep_training_state or step < config.steps)
        plot_curves(out / "metrics.csv", out / "curves.png")
        last_saved = step

    bar = tqdm(total=config.steps, initial=start, disable=not config.progress,
               desc="train", dynamic_ncols=True)
    step = start
    try:
        for step in range(start, config.steps):
            t0, reward_seconds = time.perf_counter(), reward.seconds
            batch = collect_episodes(
                policy, envs, temperature=config.temperature, generator=generator,
                reset_options={"index": schedule.indices(step, config.batch_size,
                                                         config.samples_per_prompt)},
            )
            t1 = time.perf_counter()
            if step == 0 and config.value_init == "first-batch" and value_model is not None:
                init_value_baseline(value_model, batch.rewards, config.kl_coef)
            stats = reinforce_step(
                policy, value_model, reference, policy_opt, value_opt,
                batch.prompt_ids, batch.completion_ids, batch.rewards,
                kl_coef=config.kl_coef, temperature=config.temperature, n_actions=n_actions,
                pad_id=pad_id, micro_batch_size=update_micro_batch(config),
                max_grad_norm=config.max_grad_norm, baseline=config.baseline,
                group_size=config.samples_per_prompt,
            )
            t2 = time.perf_counter()
            row = {"step": step + 1, **dataclasses.asdict(stats),
                   "time_rollout": t1 - t0, "time_reward": reward.seconds - reward_seconds,
                   "time_update": t2 - t1, "time": t2 - t0,
                   **{k: sum(float(info.get(k, 0.0)) for info in batch.final_infos)
                      for k in JUDGE_COLUMNS}}
            writer.write(row)
            bar.update(1)
            bar.set_postfix(reward=f"{stats.reward:+.3f}", kl=f"{stats.kl:.3f}",
                            len=f"{stats.completion_length:.0f}")
            if on_step is not None:
                on_step(step + 1, row)
            if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
                checkpoint_now(step + 1)
        step = config.steps
    except KeyboardInterrupt:
        logger.warning("interrupted at step %d; the last checkpoint is step %d (resume "
                       "continues from there)", step, last_saved)
        plot_curves(out / "metrics.csv", out / "curves.png")
        raise
    finally:
        bar.close()
        writer.close()
        envs.close()
    if last_saved != config.steps:  # steps <= the checkpoint's step: nothing was run
        plot_curves(out / "metrics.csv", out / "curves.png")
    # a resume past config.steps trains nothing: the run stays at its checkpoint's step
    return TrainResult(out_dir=out, step=max(start, config.steps),
                       metrics=read_metrics(out / "metrics.csv"))
