"""The ``rlaif-gym`` console script: a thin shell over public functions.

Every subcommand parses its arguments and calls one documented function that a Python user
can call with the same options:

==============  ==================================================  =========================
command         function                                            stage of the paper
==============  ==================================================  =========================
sft             :func:`agents.sft.train_sft`                        the SFT start policy
label           :func:`rlaif_gym.pipelines.label.label_to_file`     AI preference labels
train-rm        :func:`rlaif_gym.pipelines.reward_models.train_rm`  reward model (RLAIF/RLHF)
train           :func:`agents.train.train`                          RL (REINFORCE, KL)
sample          :func:`rlaif_gym.pipelines.sample.sample_run`       look at a policy
evaluate        :func:`rlaif_gym.pipelines.evaluate.evaluate_policies`  win rates
reproduce       :func:`rlaif_gym.pipelines.reproduce.reproduce`     all of the above + report
alignment       :func:`rlaif_gym.pipelines.label.alignment_of_files`  labeler vs humans
eval-rm         :func:`rlaif_gym.pipelines.reward_models.evaluate_rm`  RM vs humans
serve-reward    :func:`rewards.server.serve_reward`                 rewards over HTTP
demo            :func:`rlaif_gym.pipelines.demo.demo`               a first look
==============  ==================================================  =========================

Errors of input (:class:`rlaif_gym.errors.UsageError`, files that cannot be read or
written, a judge that failed: :class:`rewards.judges.base.JudgeError`) are printed as one
line with exit code 2; Ctrl-C exits with 130 and says how to
resume. Heavy imports (torch, models) happen inside the commands, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

from rlaif_gym.defaults import DEFAULT_JUDGE, DEFAULT_POLICY, TASKS
from rlaif_gym.errors import UsageError

__all__ = ["build_parser", "main"]

PROMPTS: tuple[str, ...] = ("base", "detailed", "pointwise", "pmi")
BACKENDS: tuple[str, ...] = ("transformers", "openai", "vllm")
DTYPES: tuple[str, ...] = ("bfloat16", "float16", "float32")


# =========================================================================== argument types


def _number(text: str, kind: Callable[[str], Any]) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def positive_int(text: str) -> int:
    """argparse ``type=``: an integer >= 1."""
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse ``type=``: an integer >= 0."""
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def finite_float(text: str) -> float:
    """argparse ``type=``: a finite float (no nan, no inf)."""
    return _number(text, float)


def positive_float(text: str) -> float:
    """argparse ``type=``: a finite float > 0."""
    value = _number(text, float)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def non_negative_float(text: str) -> float:
    """argparse ``type=``: a finite float >= 0."""
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def fraction(text: str) -> float:
    """argparse ``type=``: a float in (0, 1)."""
    value = _number(text, float)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {value}")
    return value


def key_values(items: Sequence[str], flag: str) -> dict[str, Any]:
    """``["k=v", ...]`` as a dict; a value is parsed as JSON when it parses.

    Raises:
        UsageError: an item without ``=``.
    """
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} expects KEY=VALUE, got {item!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


# =========================================================================== shared arguments


def _data_args(p: argparse.ArgumentParser, *, task_required: bool = True,
               pairs: bool = True) -> None:
    p.add_argument("--task", required=task_required, default=None, choices=TASKS)
    if pairs:
        p.add_argument("--pairs", default=None, metavar="PATH",
                       help="pairs file (default: the task's data from --data-dir)")
    p.add_argument("--data-dir", default=None, help="data folder (default: $RLAIF_GYM_DATA)")
    p.add_argument("--split", default=None, help="data split (default: the task's default)")
    if pairs:
        p.add_argument("--high-confidence", action="store_true",
                       help="keep only high-confidence human comparisons")
        p.add_argument("--limit", type=positive_int, default=None,
                       help="use only the first N loaded pairs")


def _threads_arg(p: argparse.ArgumentParser, default: int | None = None) -> None:
    p.add_argument("--threads", type=positive_int, default=default,
                   help="torch CPU threads" + (" (default: all cores)" if default else ""))


def _judge_backend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dtype", default=None, choices=DTYPES,
                   help="judge weights dtype, transformers backend (default: the model's; the "
                        "bf16 judges load in float32 on a CPU without native bf16)")
    p.add_argument("--backend", default="transformers", choices=BACKENDS,
                   help="judge backend (default: transformers, in-process)")
    p.add_argument("--base-url", action="append", default=None, metavar="URL",
                   help="OpenAI-compatible server for --backend openai (repeat for replicas; "
                        "requests are balanced across them)")
    p.add_argument("--server", default="openai", choices=("openai", "vllm", "llamacpp"),
                   help="server kind for --backend openai (%(default)s)")
    p.add_argument("--served-model", default=None, help="request 'model' field (vLLM name)")
    p.add_argument("--concurrency", type=positive_int, default=None,
                   help="HTTP requests in flight, shared by all replicas (--backend openai)")
    p.add_argument("--timeout", type=positive_float, default=None,
                   help="seconds one request attempt may take (--backend openai; default 60)")
    p.add_argument("--retries", type=non_negative_int, default=None,
                   help="retries after a 429, a 5xx, a timeout or a lost connection, with "
                        "backoff (--backend openai; default 3)")
    p.add_argument("--deadline", type=positive_float, default=None,
                   help="seconds a request may take with its retries before it fails "
                        "(--backend openai; default 110)")
    p.add_argument("--requests-per-minute", type=positive_float, default=None,
                   help="rate limit shared by all replicas (--backend openai)")
    p.add_argument("--tokens-per-minute", type=positive_float, default=None,
                   help="prompt-token rate limit shared by all replicas (--backend openai)")
    p.add_argument("--verdict-cache", default=None, metavar="CACHE.sqlite",
                   help="SQLite file of verdicts already judged: a repeated prompt is read "
                        "from it, not judged again (any backend; safe for parallel runs)")


def _judge_backend_values(args: argparse.Namespace) -> dict[str, Any]:
    """The judge-backend flags as keyword arguments of ``label_to_file``/``judge_options``."""
    return {"dtype": args.dtype, "backend": args.backend, "base_urls": args.base_url,
            "server": args.server, "served_model": args.served_model,
            "concurrency": args.concurrency, "timeout": args.timeout, "retries": args.retries,
            "deadline": args.deadline, "requests_per_minute": args.requests_per_minute,
            "tokens_per_minute": args.tokens_per_minute, "verdict_cache": args.verdict_cache}


# =========================================================================== sft


def _add_sft(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sft", help="fine-tune a policy on a task's references (the SFT start of RL)",
        description="Supervised fine-tuning with TRL's SFTTrainer on the task's reference "
                    "responses (TL;DR summaries, HH chosen turns), rendered as the envs "
                    "render prompts, loss on the completion only. Never trains on the "
                    "excluded (evaluation) prompts; reports held-out loss, the share of "
                    "completions that end at EOS and their length against the references, "
                    "before and after. OUT/policy loads with load_causal_lm.")
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--policy", default=DEFAULT_POLICY, help="start policy (%(default)s)")
    p.add_argument("--data-dir", default=None, help="data folder (default: $RLAIF_GYM_DATA)")
    p.add_argument("--split", default="test", help="prompt split (%(default)s)")
    p.add_argument("--source", default="auto", choices=("auto", "local", "hub", "sample"))
    p.add_argument("--exclude-eval-n", type=non_negative_int, default=0, metavar="N",
                   help="never train on the N prompts `rlaif-gym evaluate --n N --seed SEED` "
                        "evaluates on")
    p.add_argument("--exclude-ids", default=None, metavar="IDS.json",
                   help="never train on these prompt ids (a JSON list)")
    p.add_argument("--heldout-n", type=non_negative_int, default=25,
                   help="prompts held out for the held-out metrics (%(default)s)")
    p.add_argument("--max-train", type=positive_int, default=None,
                   help="train on at most N prompts (default: all that remain)")
    p.add_argument("--train-last-layers", type=positive_int, default=None, metavar="N",
                   help="fine-tune only the last N decoder blocks (default: all)")
    p.add_argument("--epochs", type=positive_float, default=2.0)
    p.add_argument("--lr", type=positive_float, default=5e-5)
    p.add_argument("--batch-size", type=positive_int, default=2)
    p.add_argument("--grad-accum", type=positive_int, default=4)
    p.add_argument("--max-prompt-tokens", type=positive_int, default=384)
    p.add_argument("--max-completion-tokens", type=positive_int, default=128)
    p.add_argument("--eval-max-new-tokens", type=positive_int, nargs="+", default=[48, 64],
                   help="episode limits the EOS share is reported at (%(default)s)")
    p.add_argument("--temperature", type=positive_float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    _threads_arg(p)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True, metavar="DIR", help="run folder (never overwritten)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=_run_sft, resume_hint="rerun with --resume to continue")


def _run_sft(args: argparse.Namespace) -> int:
    from agents.sft import SFTConfig, train_sft
    from rlaif_gym.pipelines.evaluate import read_ids_json

    try:
        config = SFTConfig(
            out_dir=args.out, task=args.task, policy=args.policy, data_dir=args.data_dir,
            split=args.split, source=args.source,
            exclude_ids=read_ids_json(args.exclude_ids) if args.exclude_ids else (),
            exclude_eval_n=args.exclude_eval_n, heldout_n=args.heldout_n,
            max_train=args.max_train, train_last_layers=args.train_last_layers,
            epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
            grad_accum=args.grad_accum, max_prompt_tokens=args.max_prompt_tokens,
            max_completion_tokens=args.max_completion_tokens,
            eval_max_new_tokens=tuple(args.eval_max_new_tokens),
            temperature=args.temperature, seed=args.seed, threads=args.threads,
            device=args.device, resume=args.resume, progress=not args.no_progress)
        result = train_sft(config)
    except ValueError as exc:  # SFTConfig's checks and the data split
        raise UsageError(str(exc)) from exc
    m = result.metrics
    loss = m["heldout_loss"]
    print(f"held-out loss ({loss['unit']}): {loss['before']} -> {loss['after']}")
    for phase in ("before", "after"):
        for key, entry in (m["samples"][phase] or {}).items():
            print(f"{phase:6s} {key}: ends at EOS {entry['stop_rate']['rate']:.3f}, "
                  f"{entry['length']['mean_tokens']:.1f} tokens, ROUGE-L "
                  f"{(entry['rouge_l'] or {}).get('fmeasure')}")
    if m.get("references"):
        print(f"references: {m['references']['length']['mean_tokens']:.1f} tokens")
    print(f"policy: {result.policy_dir}")
    return 0


# =========================================================================== label, alignment


def _add_label(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "label", help="label preference pairs with an AI judge (resumable JSONL output)",
        description="Ask a judge model which response of each pair is better and append one "
                    "JSON line per pair to --out. Re-running resumes where it stopped; a file "
                    "of another configuration, or not a labels file, is never changed.")
    _data_args(p)
    p.add_argument("--ids", default=None, metavar="IDS.txt",
                   help="label only the pairs whose id is listed in this file (one per line)")
    p.add_argument("--judge", default=DEFAULT_JUDGE, metavar="SPEC",
                   help=f"judge model (default: {DEFAULT_JUDGE})")
    p.add_argument("--prompt", default=None, choices=PROMPTS,
                   help="the paper's preambles (base, detailed); or pointwise: rate each "
                        "response alone with the d-RLAIF score prompt; or pmi: log P(response "
                        "| context) - log P(response) under the judge. Default: the task's "
                        "best labeler on the shared human comparisons: pmi for tldr, base "
                        "for helpful and harmless (docs/RESULTS.md)")
    p.add_argument("--template", default=None, metavar="NAME|PATH",
                   help="prompt template instead of the task's packaged one")
    p.add_argument("--cot", action="store_true", help="elicit a chain-of-thought rationale")
    p.add_argument("--cot-max-tokens", type=positive_int, default=None,
                   help="rationale length limit with --cot (default: the labeler's)")
    p.add_argument("--shots", type=non_negative_int, default=0, help="few-shot exemplars")
    p.add_argument("--batch-size", type=positive_int, default=8,
                   help="pairs per labeling step; the transformers judge runs their 2N prompts "
                        "as one forward batch (default %(default)s)")
    _threads_arg(p)
    _judge_backend_args(p)
    p.add_argument("--out", required=True, metavar="LABELS.jsonl", help="output JSONL file")
    p.set_defaults(run=_run_label, resume_hint="re-run the same command to resume")


def _run_label(args: argparse.Namespace) -> int:
    from rewards.alignment import format_table
    from rlaif_gym.pipelines.label import label_to_file

    result = label_to_file(
        args.out, task=args.task, judge=args.judge, pairs=args.pairs, data_dir=args.data_dir,
        split=args.split, high_confidence=args.high_confidence, limit=args.limit, ids=args.ids,
        prompt=args.prompt, template=args.template, cot=args.cot,
        cot_max_tokens=args.cot_max_tokens, shots=args.shots, batch_size=args.batch_size,
        threads=args.threads, **_judge_backend_values(args))
    if result.report is None:
        print(f"all {result.already} pairs are already labeled in {result.out}")
    else:
        print(format_table([result.report]))
    return 0


def _add_alignment(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("alignment",
                       help="AI labeler alignment (z_acc) and position bias of label files",
                       description="Print z_acc with a 95%% Wilson interval, position bias "
                                   "and N per file.".replace("%%", "%"))
    a.add_argument("labels", nargs="+", metavar="LABELS.jsonl")
    a.add_argument("--json", action="store_true", help="one JSON object per file instead")
    a.set_defaults(run=_run_alignment)


def _run_alignment(args: argparse.Namespace) -> int:
    from rewards.alignment import format_table
    from rlaif_gym.pipelines.label import alignment_of_files

    results = alignment_of_files(args.labels)
    for r in results:
        for warning in r.warnings:
            print(f"rlaif-gym alignment: warning: {warning}", file=sys.stderr)
        if r.error is not None:
            print(f"rlaif-gym alignment: error: {r.error}", file=sys.stderr)
    reports = [r.report for r in results if r.report is not None]
    if args.json:
        for report in reports:
            print(json.dumps(report.to_dict()))
    elif reports:
        print(format_table(reports))
    return 2 if any(r.error for r in results) else 0


# =========================================================================== reward models


def _add_train_rm(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser(
        "train-rm", help="train a reward model on AI soft labels or human preferences",
        description="Train a reward model (scalar head on a causal LM) on the train side of a "
                    "by-post split; print held-out pairwise accuracy after every epoch.")
    source = t.add_mutually_exclusive_group(required=True)
    source.add_argument("--labels", metavar="LABELS.jsonl",
                        help="AI labels from `rlaif-gym label` (soft targets p_first)")
    source.add_argument("--human", action="store_true", help="train on the human choices")
    _data_args(t)
    t.add_argument("--base", default=DEFAULT_POLICY, metavar="SPEC",
                   help=f"backbone model spec (default: {DEFAULT_POLICY})")
    t.add_argument("--epochs", type=positive_int, default=1)
    t.add_argument("--lr", type=positive_float, default=1e-5)
    t.add_argument("--batch-size", type=positive_int, default=8, help="pairs per micro-batch")
    t.add_argument("--grad-accum", type=positive_int, default=1,
                   help="micro-batches per optimizer step")
    t.add_argument("--max-length", type=positive_int, default=512,
                   help="tokens per (context, response) sequence")
    t.add_argument("--warmup-steps", type=non_negative_int, default=0)
    t.add_argument("--weight-decay", type=non_negative_float, default=0.0)
    t.add_argument("--seed", type=int, default=0, help="head init and pair order")
    t.add_argument("--split-seed", type=int, default=0, help="train/test split seed")
    t.add_argument("--test-fraction", type=fraction, default=0.1,
                   help="fraction of posts/contexts held out (default 0.1)")
    t.add_argument("--split-file", default=None, metavar="SPLIT.json",
                   help="reuse this split (e.g. OTHER_RUN/split.json) instead of computing one")
    t.add_argument("--max-steps", type=positive_int, default=None,
                   help="stop after this many optimizer steps (a checkpoint is saved)")
    t.add_argument("--save-every", type=positive_int, default=None,
                   help="also save a checkpoint every N optimizer steps")
    t.add_argument("--final-weights-only", action="store_true",
                   help="the finished model is saved without its optimizer state (1.1 GB "
                        "less for SmolLM2; it can then not be trained further)")
    t.add_argument("--eval-batch-size", type=positive_int, default=16)
    _threads_arg(t)
    t.add_argument("--device", default="cpu", help="torch device, e.g. cuda (%(default)s)")
    t.add_argument("--out", required=True, metavar="DIR", help="output directory")
    t.add_argument("--resume", action="store_true",
                   help="continue the checkpoint in --out (same data and hyperparameters)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(run=_run_train_rm,
                   resume_hint="the last checkpoint is kept; re-run with --resume to continue")


def _run_train_rm(args: argparse.Namespace) -> int:
    from rlaif_gym.pipelines.reward_models import train_rm

    result = train_rm(
        args.out, task=args.task, labels=args.labels, human=args.human, pairs=args.pairs,
        data_dir=args.data_dir, split=args.split, high_confidence=args.high_confidence,
        limit=args.limit, base=args.base, epochs=args.epochs, lr=args.lr,
        batch_size=args.batch_size, grad_accum=args.grad_accum, max_length=args.max_length,
        warmup_steps=args.warmup_steps, weight_decay=args.weight_decay, seed=args.seed,
        split_seed=args.split_seed, test_fraction=args.test_fraction,
        split_file=args.split_file, max_steps=args.max_steps, save_every=args.save_every,
        keep_training_state=not args.final_weights_only,
        eval_batch_size=args.eval_batch_size, threads=args.threads, device=args.device,
        resume=args.resume, progress=not args.no_progress)
    print(json.dumps(result))
    return 0


def _add_eval_rm(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser(
        "eval-rm", help="pairwise accuracy of a reward model against human preferences",
        description="Print pairwise accuracy vs the human choices with N and a 95% CI.")
    e.add_argument("model", metavar="DIR", help="reward model directory")
    _data_args(e, task_required=False)
    e.add_argument("--split-file", default=None, metavar="SPLIT.json",
                   help="evaluate one side of this split (default: DIR/split.json if present)")
    e.add_argument("--side", default=None, choices=("train", "test", "all"),
                   help="side of the split (default: test when a split file is used)")
    e.add_argument("--batch-size", type=positive_int, default=16)
    _threads_arg(e)
    e.add_argument("--device", default="cpu", help="torch device, e.g. cuda (%(default)s)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(run=_run_eval_rm)


def _run_eval_rm(args: argparse.Namespace) -> int:
    from rlaif_gym.pipelines.reward_models import evaluate_rm

    acc = evaluate_rm(args.model, task=args.task, pairs=args.pairs, data_dir=args.data_dir,
                      split=args.split, high_confidence=args.high_confidence, limit=args.limit,
                      split_file=args.split_file, side=args.side, batch_size=args.batch_size,
                      threads=args.threads, device=args.device)
    if args.json:
        print(json.dumps(acc))
    else:
        print(f"{acc['model']} ({acc['label_source'] or 'unknown'} labels), task {acc['task']}, "
              f"{acc['pairs']}: pairwise accuracy vs human {acc['accuracy']:.3f} "
              f"(95% CI {acc['ci_low']:.3f}-{acc['ci_high']:.3f}), N={acc['n']}, "
              f"ties={acc['ties']}")
    return 0


# =========================================================================== train, sample

#: ``rlaif-gym train`` defaults; equal to the :class:`agents.train.TrainConfig` field defaults
#: (a test keeps them in sync; importing agents.train here would make ``--help`` slow).
TRAIN_DEFAULTS: dict[str, Any] = {
    "env_id": "RLAIF-TLDR-v0", "reward": "direct", "policy": DEFAULT_POLICY, "judge": None,
    "steps": 1000, "batch_size": 16, "micro_batch_size": None, "lr": 1e-5, "value_lr": 1e-5,
    "kl_coef": 0.05, "temperature": 0.9, "max_new_tokens": 64, "max_prompt_tokens": 512,
    "split": "train", "eval_split": "test", "train_prompts": None, "seed": 0,
    "checkpoint_every": 50, "postprocess": "none", "max_grad_norm": 1.0,
    "value_init": "first-batch", "weight_decay": 0.0, "dtype": "float32", "device": "cpu",
    "samples_per_prompt": 1, "baseline": "value",
}

TRAIN_EPILOG = """\
rewards (--reward):
  direct     d-RLAIF: the judge (--judge) rates each completion 1-10, reward in [-1, 1]
  pairwise   the judge compares a prompt's k samples in pairs, both orders
             (--samples-per-prompt k>=2); --reward-option anchor=reference compares each
             with the dataset's reference
  none       always 0 (smoke tests: only the KL term acts)
  ai-rm      a reward model trained on AI labels: --reward-option path=RM_DIR
  human-rm   a reward model trained on human labels: --reward-option path=RM_DIR
  DIR        a trained reward-model folder (same as ai-rm/human-rm with path=DIR)
  NAME       any other name registered in rlaif_gym.reward_registry.REWARD_REGISTRY
  extra options: --reward-option KEY=VALUE (VALUE parsed as JSON when it parses),
  e.g. --reward-option normalize=true

outputs (--out RUN_DIR): metrics.csv (one row per step), curves.png, config.json,
checkpoint/ (every --checkpoint-every steps and at the end). After a crash or Ctrl-C,
rerun the same command with --resume: it continues from the last checkpoint and
reproduces the uninterrupted run.

example (the paper's d-RLAIF on TL;DR, offline data folder):
  rlaif-gym train --env RLAIF-TLDR-v0 --reward direct --policy smollm2-135m-instruct \\
      --judge qwen2.5-coder-1.5b-instruct --steps 2000 --batch-size 16 --lr 1e-5 \\
      --kl-coef 0.05 --data-dir ../shared/data --split test --out runs/tldr-drlaif
"""


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a policy with REINFORCE (value baseline, KL to the initial policy)",
        description="Token-level REINFORCE as in RLAIF (Lee et al. 2023): return (1 - beta) r "
                    "- beta KL(policy || initial policy) for every token, a separate value "
                    "model as baseline, sampling at --temperature through the native vector "
                    "env.",
        epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = TRAIN_DEFAULTS
    p.add_argument("--env", dest="env_id", default=d["env_id"], help="env id (%(default)s)")
    p.add_argument("--reward", default=d["reward"],
                   help="direct | pairwise | none | ai-rm | human-rm | a reward-model DIR "
                        "(%(default)s)")
    p.add_argument("--reward-option", action="append", default=[], metavar="KEY=VALUE",
                   help="option of the reward (repeatable)")
    p.add_argument("--policy", default=d["policy"], help="policy model spec (%(default)s)")
    p.add_argument("--judge", default=d["judge"],
                   help="judge model spec for --reward direct or pairwise (default: the "
                        "reward's default)")
    p.add_argument("--steps", type=positive_int, default=d["steps"],
                   help="total updates (%(default)s)")
    p.add_argument("--batch-size", type=positive_int, default=d["batch_size"],
                   help="episodes per update = vector env size (%(default)s)")
    p.add_argument("--micro-batch-size", type=positive_int, default=d["micro_batch_size"],
                   help="sequences per forward/backward (default: at most 8, a multiple of "
                        "--samples-per-prompt with --baseline loo)")
    p.add_argument("--lr", type=positive_float, default=d["lr"],
                   help="policy AdamW lr (%(default)s)")
    p.add_argument("--value-lr", type=positive_float, default=d["value_lr"],
                   help="value model AdamW lr (%(default)s)")
    p.add_argument("--samples-per-prompt", type=positive_int, default=d["samples_per_prompt"],
                   help="k completions of each prompt per batch, scored in one reward call "
                        "(a group: the pairwise reward judges it together) (%(default)s)")
    p.add_argument("--baseline", choices=("value", "loo"), default=d["baseline"],
                   help="value: the paper's learned value model; loo: the mean reward of the "
                        "prompt's other k-1 samples (RLOO; no value model; needs k >= 2) "
                        "(%(default)s)")
    p.add_argument("--value-init", choices=("first-batch", "zero"), default=d["value_init"],
                   help="start the value baseline at the first batch's mean return "
                        "(first-batch) or at 0 (%(default)s)")
    p.add_argument("--kl-coef", type=non_negative_float, default=d["kl_coef"],
                   help="beta in (1 - beta) r - beta KL (%(default)s)")
    p.add_argument("--temperature", type=positive_float, default=d["temperature"],
                   help="sampling (and loss) temperature (%(default)s)")
    p.add_argument("--max-new-tokens", type=positive_int, default=d["max_new_tokens"])
    p.add_argument("--max-prompt-tokens", type=positive_int, default=d["max_prompt_tokens"])
    p.add_argument("--split", default=d["split"], help="training prompt split (%(default)s)")
    p.add_argument("--train-prompts", type=positive_int, default=d["train_prompts"],
                   help="train on the first N prompts of --split only; the rest stay held "
                        "out (default: all)")
    p.add_argument("--eval-split", default=d["eval_split"],
                   help="held-out split used by `rlaif-gym sample` (%(default)s)")
    p.add_argument("--data-dir", default=None, help="data folder (default: $RLAIF_GYM_DATA)")
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--checkpoint-every", type=positive_int, default=d["checkpoint_every"])
    p.add_argument("--final-weights-only", action="store_true",
                   help="the final checkpoint keeps the policy only, not the optimizers and "
                        "the value model (GBs less; the run can then not be extended)")
    _threads_arg(p, default=os.cpu_count() or 1)
    p.add_argument("--postprocess", default=d["postprocess"],
                   choices=["none", "strip-trailing-punctuation"],
                   help="applied to completions before the reward (%(default)s)")
    p.add_argument("--max-grad-norm", type=finite_float, default=d["max_grad_norm"],
                   help="gradient-norm clipping, <= 0 disables (%(default)s)")
    p.add_argument("--weight-decay", type=non_negative_float, default=d["weight_decay"])
    p.add_argument("--dtype", default=d["dtype"], help="trained models' dtype (%(default)s)")
    p.add_argument("--device", default=d["device"], help="torch device (%(default)s)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_run_train, resume_hint="rerun with --resume to continue from the last "
                                               "checkpoint")


def train_config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~agents.train.TrainConfig` described by parsed ``train`` arguments."""
    from agents.train import TrainConfig

    return TrainConfig(
        out_dir=args.out, env_id=args.env_id, reward=args.reward,
        reward_options=key_values(args.reward_option, "--reward-option"), policy=args.policy,
        judge=args.judge, steps=args.steps, batch_size=args.batch_size,
        micro_batch_size=args.micro_batch_size, lr=args.lr, value_lr=args.value_lr,
        kl_coef=args.kl_coef, temperature=args.temperature,
        max_new_tokens=args.max_new_tokens, max_prompt_tokens=args.max_prompt_tokens,
        split=args.split, eval_split=args.eval_split, train_prompts=args.train_prompts,
        data_dir=args.data_dir, seed=args.seed, checkpoint_every=args.checkpoint_every,
        keep_training_state=not args.final_weights_only,
        threads=args.threads, postprocess=args.postprocess,
        max_grad_norm=args.max_grad_norm if args.max_grad_norm > 0 else None,
        value_init=args.value_init, weight_decay=args.weight_decay, dtype=args.dtype,
        samples_per_prompt=args.samples_per_prompt, baseline=args.baseline,
        device=args.device, resume=args.resume, progress=not args.no_progress)


def _run_train(args: argparse.Namespace) -> int:
    from agents.train import train

    config = train_config_from_args(args)
    result = train(config)
    if result.step > config.steps:
        print(f"nothing to train: the run in {result.out_dir} is at step {result.step}, past "
              f"--steps {config.steps}")
    elif result.metrics:
        last = result.metrics[-1]
        print(f"done: step {result.step}, reward {last['reward']:+.4f}, KL {last['kl']:.4f}; "
              f"metrics in {result.out_dir / 'metrics.csv'}, curves in "
              f"{result.out_dir / 'curves.png'}")
    return 0


def _add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample", help="print completions of a training run's checkpointed policy",
        description="Sample completions from RUN_DIR/checkpoint/policy for held-out prompts "
                    "(the run's --eval-split unless --split is given).")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--n", type=positive_int, default=5, help="completions (%(default)s)")
    p.add_argument("--split", default=None, help="prompt split (default: the run's eval split)")
    p.add_argument("--data-dir", default=None, help="data folder (default: the run's)")
    p.add_argument("--temperature", type=positive_float, default=None,
                   help="default: the run's temperature")
    p.add_argument("--seed", type=int, default=0)
    _threads_arg(p, default=os.cpu_count() or 1)
    p.set_defaults(run=_run_sample)


def _run_sample(args: argparse.Namespace) -> int:
    from rlaif_gym.pipelines.sample import sample_run

    r = sample_run(args.run_dir, n=args.n, split=args.split, data_dir=args.data_dir,
                   temperature=args.temperature, seed=args.seed, threads=args.threads)
    print(f"{r.checkpoint} (step {r.step}), {r.env_id} split {r.split!r} ({r.data_source}), "
          f"temperature {r.temperature}")
    for i, completion in enumerate(r.completions):
        print("=" * 100)
        print(f"[{i}] PROMPT ({r.prompt_indices[i]}):")
        print(textwrap.shorten(r.prompts[i], width=500, placeholder=" [...]"))
        print(f"COMPLETION ({r.tokens[i]} tokens):")
        print(completion)
        if r.postprocessed is not None:
            print(f"POSTPROCESSED: {r.postprocessed[i]}")
    return 0


# =========================================================================== evaluate


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="win rates (and harmless rates) of policies on held-out prompts, judged by an LLM",
        description="Sample completions of every --policy on the same held-out prompts and "
                    "compare them pairwise with an LLM judge (both orders averaged): win "
                    "rates with N and 95% CIs, length-controlled win rates, average lengths, "
                    "harmless rates for --task harmless.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="--policy NAME=SPEC: SPEC is a model spec (smollm2-135m-instruct, tiny-random, "
               "a folder, a .gguf) or a `rlaif-gym train` run folder.\n"
               "--pair A:B: win rate of A over B (default: each later policy over each "
               "earlier one).")
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--policy", action="append", required=True, metavar="[NAME=]SPEC",
                   help="a policy to evaluate (at least two)")
    p.add_argument("--pair", action="append", default=None, metavar="A:B",
                   help="compare policy A with B (repeatable)")
    p.add_argument("--judge", default=DEFAULT_JUDGE, metavar="SPEC",
                   help=f"judge model (default: {DEFAULT_JUDGE})")
    p.add_argument("--no-judge", action="store_true",
                   help="sample and compute the judge-free signals only (ROUGE-L, lengths, "
                        "copy overlap); judge OUT's completions later with "
                        "rlaif_gym.pipelines.evaluate.cached_policies")
    p.add_argument("--judge-prompt", default="base", help="preamble variant (%(default)s)")
    p.add_argument("--n", type=positive_int, default=100, help="prompts (%(default)s)")
    p.add_argument("--data-dir", default=None, help="data folder (default: $RLAIF_GYM_DATA)")
    p.add_argument("--split", default="test", help="prompt split (%(default)s)")
    p.add_argument("--source", default="auto", choices=("auto", "local", "hub", "sample"))
    p.add_argument("--ids", default=None, metavar="IDS.json",
                   help="JSON list of prompt ids to use, in order (instead of a seeded sample)")
    p.add_argument("--max-new-tokens", type=positive_int, default=64)
    p.add_argument("--max-prompt-tokens", type=positive_int, default=512)
    p.add_argument("--temperature", type=positive_float, default=0.9)
    p.add_argument("--seed", type=int, default=0, help="prompt sample, sampling, bootstrap")
    p.add_argument("--batch-size", type=positive_int, default=16,
                   help="completions sampled together (%(default)s)")
    p.add_argument("--judge-batch-size", type=positive_int, default=8)
    _judge_backend_args(p)
    p.add_argument("--bootstrap", type=non_negative_int, default=1000,
                   help="bootstrap resamples for the length-controlled CI (%(default)s)")
    p.add_argument("--length-unit", default="chars", choices=("chars", "words", "tokens"),
                   help="length used by the length-controlled win rate (%(default)s)")
    _threads_arg(p)
    p.add_argument("--device", default="cpu", help="where the policies sample (%(default)s)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=_run_evaluate, resume_hint="judgments made so far are kept in "
                                                  "OUT/judgments.jsonl; rerun to continue")


def _run_evaluate(args: argparse.Namespace) -> int:
    from rlaif_gym.pipelines.evaluate import evaluate_policies, format_tables, read_ids_json

    summary = evaluate_policies(
        task=args.task, policies=args.policy, out_dir=args.out,
        judge=None if args.no_judge else args.judge,
        pairs=args.pair, n=args.n, split=args.split, data_dir=args.data_dir,
        source=args.source, ids=read_ids_json(args.ids) if args.ids else None,
        judge_prompt=args.judge_prompt, max_new_tokens=args.max_new_tokens,
        max_prompt_tokens=args.max_prompt_tokens, temperature=args.temperature,
        seed=args.seed, batch_size=args.batch_size, judge_batch_size=args.judge_batch_size,
        judge_backend=_judge_backend_values(args), threads=args.threads,
        device=args.device, n_bootstrap=args.bootstrap, length_unit=args.length_unit,
        progress=not args.no_progress)
    print(f"task {summary['task']}, judge {summary['judge']}, N={summary['n_prompts']} prompts "
          f"({summary['data_source']}); 95% CIs: Wilson (win rates), bootstrap "
          f"(length-controlled)")
    print(format_tables(summary))
    plot = f", {summary['files']['plot']}" if summary["comparisons"] else ""
    print(f"wrote {summary['files']['evaluation']}, {summary['files']['completions']}{plot}")
    return 0


# =========================================================================== reproduce


def _add_reproduce(sub: argparse._SubParsersAction) -> None:
    from rlaif_gym.pipelines.reproduce import FULL, QUICK, SIZE_KEYS

    p = sub.add_parser(
        "reproduce", help="the paper's pipeline end to end at small scale, with a report",
        description="Per task (TL;DR, HH helpful, HH harmless): SFT -> AI labels -> AI-RM and "
                    "human-RM -> RL (RLAIF, RLHF; d-RLAIF with several seeds and the "
                    "self-improvement runs on TL;DR) -> evaluation against SFT and the human "
                    "references -> OUT/REPORT.md beside the paper's numbers. Stages are "
                    "cached in OUT; rerun the same command to resume.")
    p.add_argument("--quick", action="store_true",
                   help="the same stages at tiny sizes: minutes with the real models")
    p.add_argument("--out", default=None,
                   help="output folder (default runs/reproduce, or runs/reproduce-quick)")
    p.add_argument("--data-dir", default=None, help="data folder (default: $RLAIF_GYM_DATA)")
    p.add_argument("--source", default="auto", choices=("auto", "local", "hub", "sample"))
    p.add_argument("--policy", default=DEFAULT_POLICY,
                   help="start policy, fine-tuned per task (%(default)s)")
    p.add_argument("--judge", default=None,
                   help=f"labeler and evaluation judge (default {FULL['judge']}, "
                        f"quick {QUICK['judge']})")
    p.add_argument("--direct-judge", default=None,
                   help="d-RLAIF reward judge (default: --judge)")
    p.add_argument("--rm-base", default=None, help="reward-model backbone (default: --policy)")
    p.add_argument("--si-policy", default=None,
                   help=f"self-improvement policy (default {FULL['si_policy']})")
    p.add_argument("--si-judge", default=None,
                   help=f"its own-size direct judge (default {FULL['si_judge']})")
    p.add_argument("--tasks", default=None,
                   help=f"comma-separated tasks (default {','.join(FULL['tasks'])})")
    p.add_argument("--seeds", default=None,
                   help="comma-separated d-RLAIF seeds (default "
                        f"{','.join(map(str, FULL['seeds']))}, quick "
                        f"{','.join(map(str, QUICK['seeds']))})")
    p.add_argument("--labels-from", default=None, metavar="DIR",
                   help="reuse the labels of the same labeler in DIR (e.g. reports/labels) "
                        "and compute Tables 2-4 from its files")
    sizes = p.add_argument_group("sizes (defaults: FULL / QUICK in "
                                 "rlaif_gym.pipelines.reproduce_plan)")
    for name in SIZE_KEYS:
        kind = non_negative_int if name in ("bootstrap", "sft_last_layers", "sft_heldout",
                                            "rm_eval_pairs") else positive_int
        zero = {"sft_last_layers": " (0: every layer)", "rm_eval_pairs": " (0: all)"}
        sizes.add_argument("--" + name.replace("_", "-"), type=kind, default=None,
                           help=f"full {FULL[name]}, quick {QUICK[name]}" + zero.get(name, ""))
    p.add_argument("--test-fraction", type=fraction, default=None,
                   help="share of comparison contexts held out for RM accuracy (0.3)")
    p.add_argument("--sft-lr", type=positive_float, default=None, help="(5e-5)")
    p.add_argument("--rm-lr", type=positive_float, default=None, help="(1e-5)")
    p.add_argument("--lr", type=positive_float, default=None, help="policy lr (1e-5)")
    p.add_argument("--kl-coef", type=non_negative_float, default=None, help="(0.05)")
    p.add_argument("--temperature", type=positive_float, default=None, help="(0.9)")
    p.add_argument("--seed", type=int, default=None, help="(0)")
    _threads_arg(p)
    p.add_argument("--device", default="cpu",
                   help="where SFT, the reward models, RL and sampling run (%(default)s)")
    p.set_defaults(run=_run_reproduce, resume_hint="rerun the same command to resume")


def _split_list(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(x.strip() for x in text.split(",") if x.strip())


def reproduce_config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~rlaif_gym.pipelines.reproduce.ReproduceConfig` of parsed ``reproduce``
    arguments (unset settings from FULL, or QUICK with ``--quick``)."""
    from rlaif_gym.pipelines.reproduce import SIZE_KEYS, make_config

    seeds = _split_list(args.seeds)
    try:
        seeds = None if seeds is None else tuple(int(s) for s in seeds)
    except ValueError as exc:
        raise UsageError(f"--seeds must be comma-separated integers, got {args.seeds!r}") \
            from exc
    return make_config(
        quick=args.quick, out=args.out, judge=args.judge, direct_judge=args.direct_judge,
        data_dir=args.data_dir, source=args.source, policy=args.policy, rm_base=args.rm_base,
        si_policy=args.si_policy, si_judge=args.si_judge, tasks=_split_list(args.tasks),
        seeds=seeds, labels_from=args.labels_from, test_fraction=args.test_fraction,
        sft_lr=args.sft_lr, rm_lr=args.rm_lr, lr=args.lr, kl_coef=args.kl_coef,
        temperature=args.temperature, seed=args.seed, threads=args.threads,
        device=args.device, **{k: getattr(args, k) for k in SIZE_KEYS})


def _run_reproduce(args: argparse.Namespace) -> int:
    from rlaif_gym.pipelines.reproduce import reproduce

    report = reproduce(reproduce_config_from_args(args))
    print(f"wrote {report}")
    return 0


# =========================================================================== serve-reward


def _add_serve_reward(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve-reward", help="serve a reward over HTTP (OpenRLHF's remote reward, verl, any "
                             "JSON client)",
        description="Score completions with any rlaif-gym reward over HTTP: POST /get_reward "
                    "(OpenRLHF --reward.remote_url), POST /score (JSON: prompts, completions), "
                    "GET /health. Requests that arrive together are scored in one batch. See "
                    "docs/SCALING.md.")
    p.add_argument("--reward", required=True, metavar="NAME|DIR",
                   help="direct | pairwise | ai-rm | human-rm | a reward-model DIR | any "
                        "registered name")
    p.add_argument("--reward-option", action="append", default=[], metavar="KEY=VALUE",
                   help="option of the reward (repeatable), e.g. path=RM_DIR for ai-rm")
    p.add_argument("--judge", default=None, metavar="SPEC",
                   help="judge model for judge-based rewards (default: the reward's)")
    p.add_argument("--task", default=None, choices=TASKS,
                   help="task of the judge's prompts (default: the reward's, tldr)")
    _judge_backend_args(p)
    _threads_arg(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    p.add_argument("--port", type=positive_int, default=8000, help="%(default)s")
    p.add_argument("--max-batch-size", type=positive_int, default=64,
                   help="completions scored together at most (%(default)s)")
    p.add_argument("--max-wait-ms", type=non_negative_float, default=5.0,
                   help="how long a request waits for others to batch with (%(default)s)")
    p.add_argument("--max-body-bytes", type=positive_int, default=8 * 1024 * 1024,
                   help="larger requests get a 413 (%(default)s)")
    p.add_argument("--no-batching", action="store_true",
                   help="score every request on its own")
    p.add_argument("--context", default="prompt", choices=("prompt", "label"),
                   help="what the judge sees as the task input of an OpenRLHF request: the "
                        "prompt's last user turn, or the request's labels (%(default)s)")
    p.set_defaults(run=_run_serve_reward)


def _run_serve_reward(args: argparse.Namespace) -> int:
    from rewards.server import reward_for_serving, serve_reward
    from rlaif_gym.pipelines.label import judge_options

    backend = _judge_backend_values(args)
    in_process = backend["backend"] == "transformers"
    options = judge_options(**backend, threads=args.threads if in_process else None)
    reward = reward_for_serving(args.reward, judge=args.judge, task=args.task,
                                judge_options=options,
                                **key_values(args.reward_option, "--reward-option"))
    serve_reward(reward, host=args.host, port=args.port, max_batch_size=args.max_batch_size,
                 max_wait_ms=args.max_wait_ms, max_body_bytes=args.max_body_bytes,
                 batching=not args.no_batching, context=args.context)
    return 0


# =========================================================================== demo


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="sample a few episodes and score them with the d-RLAIF judge",
                       description="Load the default policy and judge, sample one episode per "
                                   "sub-env of the native vector env and print each prompt, "
                                   "completion and d-RLAIF reward in [-1, 1].")
    p.add_argument("--task", default="tldr", choices=TASKS)
    p.add_argument("--policy", default=DEFAULT_POLICY, help="policy model spec")
    p.add_argument("--judge", default=DEFAULT_JUDGE, help="judge model spec")
    p.add_argument("--episodes", type=positive_int, default=4,
                   help="episodes (= vector env size)")
    p.add_argument("--max-new-tokens", type=positive_int, default=48)
    p.add_argument("--max-prompt-tokens", type=positive_int, default=384)
    p.add_argument("--temperature", type=positive_float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="data folder (default: $RLAIF_GYM_DATA)")
    p.add_argument("--split", default=None, help="data split (default: the task's test split)")
    _threads_arg(p, default=os.cpu_count() or 1)
    p.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from rlaif_gym.pipelines.demo import demo

    r = demo(task=args.task, policy=args.policy, judge=args.judge, episodes=args.episodes,
             max_new_tokens=args.max_new_tokens, max_prompt_tokens=args.max_prompt_tokens,
             temperature=args.temperature, seed=args.seed, data_dir=args.data_dir,
             split=args.split, threads=args.threads)
    print(f"policy {args.policy} loaded in {r.load_seconds:.1f}s; data source: {r.data_source}")
    for i, completion in enumerate(r.completions):
        print("=" * 100)
        print(f"episode {i}  reward {r.rewards[i]:+.3f}  expected score "
              f"{r.expected_scores[i]:.2f}/10  tokens {r.tokens[i]}")
        print("PROMPT:\n" + textwrap.shorten(r.prompts[i], width=600, placeholder=" [...]"))
        print("COMPLETION:\n" + completion)
    print("=" * 100)
    print(f"{len(r.completions)} episodes, {r.env_steps} env steps, mean reward "
          f"{float(r.rewards.mean()):+.3f} (sampling + judging took {r.sample_seconds:.1f}s)")
    return 0


# =========================================================================== parser, main

#: The subcommands in the order ``--help`` lists them: the paper's pipeline first.
COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_sft, _add_label, _add_train_rm, _add_train, _add_sample, _add_evaluate,
    _add_reproduce,
    _add_alignment, _add_eval_rm, _add_serve_reward, _add_demo,
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every subcommand."""
    from rlaif_gym import __version__

    parser = argparse.ArgumentParser(
        prog="rlaif-gym",
        description="RLAIF (Lee et al. 2023) as Gymnasium environments. The paper's pipeline: "
                    "sft -> label -> train-rm -> train -> evaluate (or all of it: "
                    "reproduce).")
    parser.add_argument("--version", action="version", version=f"rlaif-gym {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the subcommand, return its exit code:
    0 success, 2 bad input (one line on stderr), 130 interrupted."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    run = getattr(args, "run", None)
    if run is None:
        parser.print_help()
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from rewards.judges.base import JudgeError  # a judge that failed: a server, not a bug

    try:
        return int(run(args) or 0)
    except (UsageError, OSError, JudgeError) as exc:
        message = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
        print(f"rlaif-gym {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = getattr(args, "resume_hint", None)
        print(f"\nrlaif-gym {args.command}: interrupted" + (f"; {hint}" if hint else ""),
              file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
