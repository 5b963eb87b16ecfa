"""Supervised fine-tuning (SFT) of a policy on a task's reference completions.

The paper (Lee et al. 2023) starts every RL run from a policy fine-tuned on the task. This
module trains one with TRL's ``SFTTrainer``: the prompt is what the envs show the policy
(:meth:`rlaif_gym.tasks.Task.render_prompt`), the completion the human reference followed by
the stop token the envs end episodes on, and only the completion carries loss (see
:mod:`agents.sft_data`). It never trains on ``exclude_ids`` (pass the evaluation prompts)
and reports, before and after training, on held-out prompts:

* the held-out loss: mean negative log-likelihood in nats per completion token (stop token
  included) over all held-out completions, in the training precision;
* sampled completions exactly as RL and ``rlaif-gym evaluate`` sample them
  (:func:`agents.sampling.sample_completions`, temperature 0.9 by default), at every
  ``eval_max_new_tokens`` limit: the share that end at the stop token within the limit
  (95% Wilson CI), their mean length in policy tokens / words / characters against the
  references', ROUGE-L against the references and the copy overlap with the post
  (:mod:`rewards.evaluation`).

Run folder ``OUT``::

    OUT/config.json      the SFTConfig (a resume with other settings is refused)
    OUT/split.json       train / held-out / excluded ids
    OUT/before.json      the start policy's held-out metrics (computed once)
    OUT/checkpoints/     Trainer checkpoints (weights, optimizer, RNG); the latest is
                         kept, and removed once the run has finished (keep_checkpoints=False)
    OUT/policy/          the fine-tuned policy and its tokenizer (written atomically):
                         rlaif_gym.models.load_causal_lm(OUT / "policy") loads it
    OUT/train_log.json   the trainer's log history, updates, training wall time
    OUT/samples.jsonl    held-out completions before and after SFT
    OUT/metrics.json     every number reported, settings, wall times, the log history
    OUT/loss.png         training loss per step and held-out loss

An existing non-empty ``OUT`` is never overwritten: without ``resume=True`` the run is
refused; with it, training continues from the latest checkpoint (a finished run returns its
metrics without training again).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.sampling import SampledCompletion, sample_completions
from agents.sft_data import SFTExample, build_examples, seeded_eval_ids, split_records
from rewards.evaluation import copy_overlap, length_stats, proportion, rouge_l
from rlaif_gym.data.records import PromptRecord
from rlaif_gym.files import read_json, write_json
from rlaif_gym.tasks import TASK_NAMES

__all__ = [
    "SFTConfig",
    "SFTResult",
    "completion_metrics",
    "completion_nll",
    "freeze_all_but_last_layers",
    "plot_loss",
    "reference_metrics",
    "train_sft",
]

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
SPLIT_FILE = "split.json"
BEFORE_FILE = "before.json"
METRICS_FILE = "metrics.json"
SAMPLES_FILE = "samples.jsonl"
TRAIN_LOG_FILE = "train_log.json"
PLOT_FILE = "loss.png"
POLICY_DIR = "policy"
CHECKPOINT_DIR = "checkpoints"
#: Config fields that may differ when resuming (they change neither the data nor training).
RESUMABLE_CHANGES = frozenset({"out_dir", "resume", "threads", "progress", "device",
                               "save_every", "keep_checkpoints"})


@dataclass
class SFTConfig:
    """Everything an SFT run needs.

    Attributes:
        out_dir: run folder (see the module docstring); never overwritten.
        task: ``"tldr"``, ``"helpful"`` or ``"harmless"``.
        policy: start policy spec (:func:`rlaif_gym.models.load_causal_lm`).
        data_dir, split, source: where the task's prompts come from
            (:meth:`rlaif_gym.tasks.Task.load_prompts`).
        exclude_ids: prompt ids never trained on nor held out: every evaluation prompt
            (e.g. :func:`agents.sft_data.seeded_eval_ids`, or reproduce's
            ``data/eval_ids.json``).
        exclude_eval_n: also exclude the first N prompts of the ``seed`` permutation of the
            split: the prompts ``rlaif-gym evaluate --n N --seed S`` evaluates on
            (:func:`agents.sft_data.seeded_eval_ids`).
        heldout_ids: prompts held out for the held-out loss and sampling metrics; None: the
            first ``heldout_n`` of a seeded permutation of the non-excluded prompts.
        heldout_n: see ``heldout_ids`` (0: no held-out metrics).
        max_train: train on at most this many of the remaining prompts (None: all).
        train_last_layers: fine-tune only the last N decoder blocks and the final norm
            (the embeddings and the output layer stay frozen, and the backward pass stops
            at the lowest trained block: about half the compute of full fine-tuning with a
            third of the blocks); None: every parameter.
        epochs: passes over the training prompts (may be fractional).
        lr: peak AdamW learning rate; ``lr_scheduler`` (a transformers scheduler name)
            after ``warmup_ratio`` of the steps of linear warm-up.
        weight_decay, max_grad_norm: AdamW weight decay, gradient clipping.
        batch_size, grad_accum: sequences per forward/backward, and forwards per update
            (an update sees ``batch_size * grad_accum`` sequences).
        max_prompt_tokens: prompt limit (as the envs cut prompts; use the RL setting).
        max_completion_tokens: references of this many tokens or more are cut (no stop).
        eval_max_new_tokens: episode limits at which sampled completions are reported
            (one sampling run at the largest; see :mod:`agents.sampling`).
        temperature: sampling temperature of the metrics (RL and evaluation use 0.9).
        sample_batch_size: prompts sampled together (same as ``evaluate --batch-size`` to
            get its completions).
        eval_before: also measure the start policy (held-out loss and samples).
        heldout_every: held-out loss every N updates (None: once per epoch), and at the end.
        save_every: checkpoint every N updates (None: once per epoch).
        keep_checkpoints: keep ``OUT/checkpoints`` after the run finished.
        logging_steps: training loss logged every N updates.
        bf16: bfloat16 autocast (mixed precision; weights stay float32). None: on where
            the device computes bf16 natively (CUDA with bf16, a CPU with AVX512-BF16/AMX).
        seed: data order, sampling and the held-out choice.
        threads: ``torch.set_num_threads`` (None: unchanged).
        device: ``"cpu"`` or ``"cuda"``.
        resume: continue the run in ``out_dir`` (see the module docstring).
        progress: progress bars.
    """

    out_dir: str
    task: str = "tldr"
    policy: str = "smollm2-135m-instruct"
    data_dir: str | None = None
    split: str = "test"
    source: str = "auto"
    exclude_ids: Sequence[str] = ()
    exclude_eval_n: int = 0
    heldout_ids: Sequence[str] | None = None
    heldout_n: int = 25
    max_train: int | None = None
    train_last_layers: int | None = None
    epochs: float = 2.0
    lr: float = 5e-5
    lr_scheduler: str = "linear"
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    batch_size: int = 2
    grad_accum: int = 4
    max_prompt_tokens: int = 384
    max_completion_tokens: int = 128
    eval_max_new_tokens: Sequence[int] = (48, 64)
    temperature: float = 0.9
    sample_batch_size: int = 16
    eval_before: bool = True
    heldout_every: int | None = None
    save_every: int | None = None
    keep_checkpoints: bool = False
    logging_steps: int = 1
    bf16: bool | None = None
    seed: int = 0
    threads: int | None = None
    device: str = "cpu"
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        self.exclude_ids = tuple(str(i) for i in self.exclude_ids)
        if self.heldout_ids is not None:
            self.heldout_ids = tuple(str(i) for i in self.heldout_ids)
        if isinstance(self.eval_max_new_tokens, int):
            self.eval_max_new_tokens = (self.eval_max_new_tokens,)
        self.eval_max_new_tokens = tuple(sorted(set(self.eval_max_new_tokens)))
        if self.task not in TASK_NAMES:
            raise ValueError(f"unknown task {self.task!r}; valid tasks: {', '.join(TASK_NAMES)}")
        if not self.out_dir:
            raise ValueError("out_dir is empty")
        for name in ("batch_size", "grad_accum", "max_prompt_tokens", "max_completion_tokens",
                     "sample_batch_size", "logging_steps"):
            _check_positive_int(name, getattr(self, name))
        for name in ("heldout_every", "save_every", "threads", "max_train",
                     "train_last_layers"):
            if getattr(self, name) is not None:
                _check_positive_int(name, getattr(self, name))
        if isinstance(self.exclude_eval_n, bool) or not isinstance(self.exclude_eval_n, int) \
                or self.exclude_eval_n < 0:
            raise ValueError(f"exclude_eval_n must be an int >= 0, got {self.exclude_eval_n!r}")
        if isinstance(self.heldout_n, bool) or not isinstance(self.heldout_n, int) or \
                self.heldout_n < 0:
            raise ValueError(f"heldout_n must be an int >= 0, got {self.heldout_n!r}")
        if not self.eval_max_new_tokens:
            raise ValueError("eval_max_new_tokens is empty")
        for limit in self.eval_max_new_tokens:
            _check_positive_int("eval_max_new_tokens", limit)
        for name in ("epochs", "lr", "temperature"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if self.weight_decay < 0 or self.max_grad_norm <= 0:
            raise ValueError("weight_decay must be >= 0 and max_grad_norm > 0")
        if torch.device(self.device).type not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda[:n]', got {self.device!r}")

    @property
    def update_batch(self) -> int:
        """Sequences per optimizer update (``batch_size * grad_accum``)."""
        return self.batch_size * self.grad_accum

    def to_json(self) -> dict[str, Any]:
        """The config as JSON values (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=repr))


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


@dataclass
class SFTResult:
    """What :func:`train_sft` returns.

    Attributes:
        out_dir: the run folder. policy_dir: the fine-tuned policy (``OUT/policy``).
        metrics: the content of ``OUT/metrics.json``.
    """

    out_dir: Path
    policy_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def heldout_loss_before(self) -> float | None:
        return (self.metrics.get("heldout_loss") or {}).get("before")

    @property
    def heldout_loss_after(self) -> float | None:
        return (self.metrics.get("heldout_loss") or {}).get("after")


# =========================================================================== metrics


@torch.no_grad()
def completion_nll(model: torch.nn.Module, examples: Sequence[SFTExample], *,
                   bf16: bool = False) -> tuple[float, int]:
    """Mean negative log-likelihood of the completions given their prompts.

    One sequence per forward (no padding); only the logits that predict completion tokens
    are computed. Runs in eval mode (restored afterwards), under bf16 autocast if ``bf16``.

    Returns:
        ``(nats per completion token, number of completion tokens)``: the sum over all
        completion tokens (stop token included) divided by their count.

    Raises:
        ValueError: no examples.
    """
    if not examples:
        raise ValueError("completion_nll needs at least one example")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    keep_arg = _accepts_logits_to_keep(model)
    total, count = 0.0, 0
    try:
        for ex in examples:
            ids = torch.tensor([ex.input_ids], dtype=torch.long, device=device)
            keep = ex.completion_len + 1
            kwargs = {"logits_to_keep": keep} if keep_arg else {}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(input_ids=ids, **kwargs).logits
            logits = logits[0, -keep:-1].float()  # positions predicting the completion
            target = ids[0, ex.prompt_len:]
            total += float(torch.nn.functional.cross_entropy(logits, target, reduction="sum"))
            count += int(target.numel())
    finally:
        model.train(was_training)
    return total / count, count


def _accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    import inspect

    return "logits_to_keep" in inspect.signature(model.forward).parameters


def reference_metrics(records: Sequence[PromptRecord], tokenizer: Any) -> dict[str, Any]:
    """Lengths of the references (policy tokens without a stop token, words, characters) and
    their own copy overlap with the post (the human baseline of :func:`copy_overlap`)."""
    refs = [(r.reference or "").strip() for r in records]
    tokens = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in refs]
    return {"n": len(refs), "length": length_stats(refs, tokens).to_dict(),
            "copy_overlap": copy_overlap(refs, [r.text for r in records]).to_dict()}


def completion_metrics(samples: Sequence[SampledCompletion], decode: Any,
                       records: Sequence[PromptRecord], limits: Sequence[int], *,
                       seed: int = 0, n_bootstrap: int = 1000) -> dict[str, Any]:
    """Per episode limit ``L`` in ``limits``: the share of completions that end at the stop
    token within ``L`` tokens (a :class:`rewards.evaluation.Rate` with a 95% Wilson
    interval), their lengths (tokens without the stop token, words, characters), ROUGE-L
    against ``records[i].reference`` (None when rouge-score is missing) and the copy overlap
    with ``records[i].text``.

    Returns:
        ``{"max_new_tokens=L": {...}, ...}``.
    """
    if len(samples) != len(records):
        raise ValueError(f"{len(samples)} samples but {len(records)} records")
    refs = [(r.reference or "").strip() for r in records]
    posts = [r.text for r in records]
    out: dict[str, Any] = {}
    for limit in limits:
        views = [s.at_limit(limit, decode) for s in samples]
        texts = [v.text for v in views]
        entry: dict[str, Any] = {
            "stop_rate": proportion(sum(v.stopped for v in views), len(views)).to_dict(),
            "length": length_stats(texts, [v.n_tokens for v in views]).to_dict(),
            "copy_overlap": copy_overlap(texts, posts).to_dict(),
        }
        try:
            entry["rouge_l"] = rouge_l(texts, refs, n_bootstrap=n_bootstrap,
                                       seed=seed).to_dict()
        except ImportError as exc:
            logger.warning("%s; ROUGE-L left out", exc)
            entry["rouge_l"] = None
        out[f"max_new_tokens={limit}"] = entry
    return out


def _phase_metrics(model: torch.nn.Module, tokenizer: Any, config: SFTConfig,
                   heldout: Sequence[PromptRecord], examples: Sequence[SFTExample],
                   bf16: bool, phase: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Held-out loss and sampled-completion metrics of one policy (``phase`` labels it)."""
    t0 = time.perf_counter()
    loss, n_tokens = completion_nll(model, examples, bf16=bf16)
    t1 = time.perf_counter()
    samples, decode = sample_completions(
        model, tokenizer, config.task, heldout, max_new_tokens=max(config.eval_max_new_tokens),
        max_prompt_tokens=config.max_prompt_tokens, temperature=config.temperature,
        seed=config.seed, batch_size=config.sample_batch_size, progress=config.progress,
        desc=f"sample ({phase})")
    t2 = time.perf_counter()
    metrics = {"heldout_loss": loss, "heldout_tokens": n_tokens,
               "samples": completion_metrics(samples, decode, heldout,
                                             config.eval_max_new_tokens, seed=config.seed),
               "wall_s": {"heldout_loss": t1 - t0, "sampling": t2 - t1}}
    rows = [{"phase": phase, "prompt_id": s.prompt_id, "completion": s.text,
             "tokens": int(s.body_ids.size), "stopped": s.stopped,
             "max_new_tokens": s.max_new_tokens, "reference": (r.reference or "").strip()}
            for s, r in zip(samples, heldout, strict=True)]
    return metrics, rows


# =========================================================================== plot


def plot_loss(log_history: Sequence[dict[str, Any]], out_png: str | os.PathLike,
              title: str = "") -> Path | None:
    """Training loss per logged update and held-out loss (entries with ``heldout_loss``)
    against the update step; returns the PNG path (None when nothing was logged)."""
    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    held = [(e["step"], e["heldout_loss"]) for e in log_history if "heldout_loss" in e]
    if not train and not held:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    if train:
        ax.plot(*zip(*train, strict=True), lw=1, alpha=0.8, label="train loss (per update)")
    if held:
        ax.plot(*zip(*held, strict=True), "o-", color="C3",
                label="held-out loss (nats / completion token)")
    ax.set_xlabel("update step")
    ax.set_ylabel("loss")
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out_png)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


# =========================================================================== the run


def _prepare_out_dir(config: SFTConfig) -> tuple[Path, bool]:
    """Check ``out_dir``; returns ``(out, is_resume)``.

    Raises:
        FileExistsError: a non-empty folder without ``resume``, or a folder that is not an
            SFT run with ``resume``.
        ValueError: ``resume`` with settings that differ from the saved run's.
    """
    out = Path(config.out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    has_content = out.is_dir() and any(out.iterdir())
    if not has_content:
        return out, False
    if not config.resume:
        raise FileExistsError(f"{out} is not empty; pass resume=True (--resume) to continue "
                              "the SFT run in it, or choose another out_dir")
    if not (out / CONFIG_FILE).is_file():
        raise FileExistsError(f"{out} is not empty and holds no SFT run ({CONFIG_FILE} "
                              "missing); choose another out_dir")
    saved = read_json(out / CONFIG_FILE)
    current = config.to_json()
    changed = sorted(k for k in current if k not in RESUMABLE_CHANGES
                     and current.get(k) != saved.get(k))
    if changed:
        details = "; ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed)
        raise ValueError(f"cannot resume {out} with other settings ({details}); use the "
                         "saved settings or another out_dir")
    return out, True


def _resolve_bf16(config: SFTConfig) -> bool:
    if config.bf16 is not None:
        return bool(config.bf16)
    device = torch.device(config.device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    from rlaif_gym.models import cpu_has_native_bf16

    return cpu_has_native_bf16()


def _import_trl() -> tuple[Any, Any]:
    try:
        from trl import SFTConfig as TrlSFTConfig
        from trl import SFTTrainer
    except ImportError as exc:
        raise ImportError("SFT needs TRL: pip install 'rlaif-gym[trl]' (trl, accelerate)"
                          ) from exc
    return TrlSFTConfig, SFTTrainer


def freeze_all_but_last_layers(model: torch.nn.Module, n_layers: int) -> tuple[int, int]:
    """Leave only the last ``n_layers`` decoder blocks and the final norm trainable.

    Works for decoder-only models whose base model has ``layers`` and ``norm`` (Llama,
    SmolLM2, Qwen2, Mistral, ...); embeddings and the (often tied) output layer are frozen.

    Returns:
        ``(trainable parameters, all parameters)``.

    Raises:
        ValueError: the model has no ``layers``/``norm``, or fewer than ``n_layers`` blocks.
    """
    base = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(base, "layers", None)
    norm = getattr(base, "norm", None)
    if layers is None or norm is None:
        raise ValueError(f"train_last_layers: {type(model).__name__} has no decoder "
                         "layers/norm to select; use train_last_layers=None")
    if n_layers > len(layers):
        raise ValueError(f"train_last_layers={n_layers} but the model has {len(layers)} "
                         "decoder blocks")
    model.requires_grad_(False)
    for module in [*layers[len(layers) - n_layers:], norm]:
        module.requires_grad_(True)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def _no_activation_checkpointing(config_cls: Any) -> dict[str, bool]:
    """Recomputing activations costs ~20% time and saves memory we do not need at our sizes
    (TRL enables it by default); transformers >= 5.2x renames the option."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    if "activation_checkpointing" in names:
        return {"activation_checkpointing": False}
    return {"gradient_checkpointing": False}


def _steps_per_epoch(n_train: int, config: SFTConfig) -> int:
    """Optimizer updates per epoch, as ``transformers.Trainer`` counts them."""
    batches = math.ceil(n_train / config.batch_size)
    return max(batches // config.grad_accum + int(batches % config.grad_accum > 0), 1)


def _heldout_callback(examples: Sequence[SFTExample], every: int, bf16: bool) -> Any:
    from transformers import TrainerCallback

    class HeldoutLoss(TrainerCallback):
        """Appends ``{"step", "epoch", "heldout_loss"}`` to the trainer's log history every
        ``every`` updates and at the last one (before that step's checkpoint is saved, so a
        resumed run keeps the curve)."""

        def on_step_end(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
            step = state.global_step
            if examples and model is not None and (step % every == 0 or
                                                   step == state.max_steps):
                loss, _ = completion_nll(model, examples, bf16=bf16)
                state.log_history.append({"step": step, "epoch": state.epoch,
                                          "heldout_loss": loss})
                logger.info("step %d: held-out loss %.4f", step, loss)
            return control

    return HeldoutLoss()


def _data_summary(records: Sequence[PromptRecord], split: Any, train_ex: Sequence[SFTExample],
                  held_ex: Sequence[SFTExample], source: str) -> dict[str, Any]:
    def mean(values: Sequence[int]) -> float | None:
        return float(np.mean(values)) if values else None

    return {
        "source": source, "records": len(records), "excluded": len(split.excluded),
        "excluded_not_in_data": len(split.excluded_missing),
        "no_reference": len(split.no_reference), "train": len(train_ex),
        "heldout": len(held_ex),
        "train_prompts_truncated": sum(e.prompt_truncated for e in train_ex),
        "train_completions_truncated": sum(e.completion_truncated for e in train_ex),
        "train_mean_prompt_tokens": mean([e.prompt_len for e in train_ex]),
        "train_mean_completion_tokens": mean([e.completion_len for e in train_ex]),
        "train_tokens": sum(len(e.input_ids) for e in train_ex),
        "train_completion_tokens": sum(e.completion_len for e in train_ex),
    }


def train_sft(config: SFTConfig, callbacks: Sequence[Any] = ()) -> SFTResult:
    """Fine-tune ``config.policy`` on the task's references (see the module docstring).

    Everything that can be checked is checked before a model is loaded: the config, the
    output folder, TRL being installed, the policy spec, the data split and every example's
    token ids.

    Args:
        config: the run's :class:`SFTConfig`.
        callbacks: extra ``transformers.TrainerCallback`` objects for the trainer.

    Returns:
        :class:`SFTResult` (also written to ``OUT/metrics.json``).

    Raises:
        FileExistsError: ``out_dir`` is not empty and ``resume`` is False (or it holds no
            SFT run). ValueError: bad settings, ids or data; a resume with other settings.
        ImportError: TRL is missing (the message names the ``trl`` extra).
        KeyboardInterrupt: re-raised; the latest checkpoint stays the resume point.
    """
    t_start = time.perf_counter()
    trl_config_cls, trainer_cls = _import_trl()
    out, resuming = _prepare_out_dir(config)
    if resuming and (out / METRICS_FILE).is_file() and (out / POLICY_DIR).is_dir():
        metrics = read_json(out / METRICS_FILE)
        if metrics.get("finished"):
            logger.info("%s holds a finished SFT run; nothing to do", out)
            return SFTResult(out_dir=out, policy_dir=out / POLICY_DIR, metrics=metrics)
    if config.threads is not None:
        torch.set_num_threads(config.threads)

    from rlaif_gym.models import load_causal_lm, load_tokenizer
    from rlaif_gym.tasks import get_task

    tokenizer = load_tokenizer(config.policy)
    records = get_task(config.task).load_prompts(split=config.split, data_dir=config.data_dir,
                                                 source=config.source)
    source = str(getattr(records, "source", ""))
    exclude = list(config.exclude_ids)
    if config.exclude_eval_n:
        exclude += seeded_eval_ids(records, config.exclude_eval_n, seed=config.seed)
    split = split_records(records, exclude_ids=exclude,
                          heldout_ids=config.heldout_ids, heldout_n=config.heldout_n,
                          max_train=config.max_train, seed=config.seed)
    if not exclude:
        logger.warning("exclude_ids is empty: SFT may train on prompts you later evaluate on")
    if split.excluded_missing:
        logger.warning("%d of %d exclude_ids are not in the %s data (%s)",
                       len(split.excluded_missing), len(config.exclude_ids), config.task, source)
    limits = {"max_prompt_tokens": config.max_prompt_tokens,
              "max_completion_tokens": config.max_completion_tokens}
    train_ex = build_examples(config.task, split.train, tokenizer, **limits)
    held_ex = build_examples(config.task, split.heldout, tokenizer, **limits)
    data = _data_summary(records, split, train_ex, held_ex, source)
    bf16 = _resolve_bf16(config)

    out.mkdir(parents=True, exist_ok=True)
    if not resuming:
        write_json(out / CONFIG_FILE, config.to_json())
        write_json(out / SPLIT_FILE, split.to_json())
    elif read_json(out / SPLIT_FILE)["train_ids"] != [r.id for r in split.train]:
        raise ValueError(f"the data changed since {out} was started (other training ids); "
                         "use another out_dir")

    model = load_causal_lm(config.policy, dtype="float32", device=config.device)
    trainable, n_params = (freeze_all_but_last_layers(model, config.train_last_layers)
                           if config.train_last_layers else
                           (sum(p.numel() for p in model.parameters()),) * 2)
    wall: dict[str, float] = {}

    # ---- the start policy
    before = read_json(out / BEFORE_FILE) if (out / BEFORE_FILE).is_file() else None
    if before is None and config.eval_before and split.heldout:
        t0 = time.perf_counter()
        metrics, rows = _phase_metrics(model, tokenizer, config, split.heldout, held_ex, bf16,
                                       "before")
        before = {"metrics": metrics, "samples": rows}
        write_json(out / BEFORE_FILE, before)
        wall["before_metrics"] = time.perf_counter() - t0

    # ---- training
    from datasets import Dataset
    from transformers.trainer_utils import get_last_checkpoint

    per_epoch = _steps_per_epoch(len(train_ex), config)
    ckpt_dir = out / CHECKPOINT_DIR
    args = trl_config_cls(
        output_dir=str(ckpt_dir), num_train_epochs=float(config.epochs),
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum, learning_rate=config.lr,
        lr_scheduler_type=config.lr_scheduler, warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm,
        bf16=bf16, fp16=False, **_no_activation_checkpointing(trl_config_cls),
        use_cpu=torch.device(config.device).type == "cpu",
        max_length=None, completion_only_loss=True, packing=False, padding_free=False,
        shuffle_dataset=False, eval_strategy="no", save_strategy="steps",
        save_steps=config.save_every or per_epoch, save_total_limit=1, save_only_model=False,
        logging_steps=config.logging_steps, logging_first_step=True, report_to="none",
        seed=config.seed, data_seed=config.seed, disable_tqdm=not config.progress,
        dataloader_num_workers=0, dataloader_pin_memory=False,
    )
    trainer = trainer_cls(
        model=model, args=args, processing_class=tokenizer,
        train_dataset=Dataset.from_list([e.to_row() for e in train_ex]),
        callbacks=[_heldout_callback(held_ex, config.heldout_every or per_epoch, bf16),
                   *callbacks],
    )
    if resuming and (out / POLICY_DIR).is_dir() and (out / TRAIN_LOG_FILE).is_file():
        logger.info("resume: %s already holds the trained policy; measuring it", out)
        train_log = read_json(out / TRAIN_LOG_FILE)
    else:
        last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
        if resuming and last is None:
            logger.warning("resume: %s has no checkpoint; training starts from the beginning",
                           out)
        t0 = time.perf_counter()
        trainer.train(resume_from_checkpoint=last)
        train_log = {"log_history": list(trainer.state.log_history),
                     "updates": int(trainer.state.global_step),
                     "wall_s": time.perf_counter() - t0}
        tmp_policy = out / (POLICY_DIR + ".partial")
        shutil.rmtree(tmp_policy, ignore_errors=True)
        trainer.save_model(str(tmp_policy))
        shutil.rmtree(out / POLICY_DIR, ignore_errors=True)
        os.replace(tmp_policy, out / POLICY_DIR)
        write_json(out / TRAIN_LOG_FILE, train_log)
    wall["training"] = train_log["wall_s"]
    log_history, train_steps = train_log["log_history"], train_log["updates"]
    del trainer, model
    gc.collect()

    # ---- the fine-tuned policy, as evaluation loads it
    after = None
    samples_rows = list((before or {}).get("samples", []))
    if split.heldout:
        t0 = time.perf_counter()
        policy = load_causal_lm(out / POLICY_DIR, dtype="float32", device=config.device)
        after, rows = _phase_metrics(policy, tokenizer, config, split.heldout, held_ex, bf16,
                                     "after")
        samples_rows += rows
        wall["after_metrics"] = time.perf_counter() - t0
        del policy
        gc.collect()
    with open(out / SAMPLES_FILE, "w", encoding="utf-8") as fh:
        for row in samples_rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")

    before_metrics = (before or {}).get("metrics")
    wall["total"] = time.perf_counter() - t_start
    metrics = {
        "finished": True,
        "task": config.task, "policy": config.policy, "policy_dir": str(out / POLICY_DIR),
        "data": data,
        "training": {"updates": train_steps, "updates_per_epoch": per_epoch,
                     "epochs": config.epochs, "update_batch": config.update_batch,
                     "lr": config.lr, "bf16": bf16, "threads": torch.get_num_threads(),
                     "device": config.device, "trainable_parameters": trainable,
                     "parameters": n_params,
                     "train_last_layers": config.train_last_layers,
                     "final_train_loss": next((e["loss"] for e in reversed(log_history)
                                               if "loss" in e), None)},
        "heldout_loss": {
            "unit": "nats per completion token (stop token included), "
                    + ("bf16 autocast" if bf16 else "float32"),
            "n_prompts": len(held_ex), "n_tokens": sum(e.completion_len for e in held_ex),
            "before": (before_metrics or {}).get("heldout_loss"),
            "after": (after or {}).get("heldout_loss"),
        },
        "samples": {
            "settings": {"temperature": config.temperature, "seed": config.seed,
                         "batch_size": config.sample_batch_size,
                         "max_prompt_tokens": config.max_prompt_tokens,
                         "max_new_tokens": list(config.eval_max_new_tokens),
                         "sampler": "agents.sampling.sample_completions (the task's vector "
                                    "env, as RL and rlaif-gym evaluate)"},
            "before": (before_metrics or {}).get("samples"),
            "after": (after or {}).get("samples"),
        },
        "references": reference_metrics(split.heldout, tokenizer) if split.heldout else None,
        "wall_s": wall,
        "before_metrics_reused": before is not None and "before_metrics" not in wall,
        "config": config.to_json(),
        "log_history": [{"step": 0, "epoch": 0.0, "heldout_loss": before_metrics[
            "heldout_loss"]}] if before_metrics else [],
    }
    metrics["log_history"] += log_history
    plot_loss(metrics["log_history"], out / PLOT_FILE,
              title=f"SFT {config.policy} on {config.task}: {len(train_ex)} prompts, "
                    f"{config.epochs:g} epochs, lr {config.lr:g}")
    write_json(out / METRICS_FILE, metrics)
    if not config.keep_checkpoints:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    return SFTResult(out_dir=out, policy_dir=out / POLICY_DIR, metrics=metrics)
