"""The reproduction's plan: its settings, the runs and evaluations it makes, and where every
output goes under ``OUT`` (shared by :mod:`rlaif_gym.pipelines.reproduce`, which runs the
stages, and :mod:`rlaif_gym.pipelines.report`, which writes the report from their outputs).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlaif_gym.defaults import DEFAULT_JUDGE, DEFAULT_POLICY, SMALL_JUDGE, TASKS
from rlaif_gym.errors import UsageError
from rlaif_gym.files import display_path

__all__ = [
    "FULL",
    "QUICK",
    "SIZE_KEYS",
    "Evaluation",
    "ReproduceConfig",
    "ReproduceError",
    "Run",
    "call_text",
    "default_out",
    "describe_config",
    "evaluations_of",
    "make_config",
    "runs_of",
]

# =========================================================================== settings

#: Defaults of a full run (``make reproduce``), sized to fit about 3 hours on 2 CPU cores with
#: ``labels_from``: its stages took 2.06 h on a 2-core EPYC (reports/reproduce/REPORT.md, cost
#: section). Measured there: d-RLAIF vs SFT at ``eval_n=32`` took 383 s (136 s sampling 4
#: policies, 2.6 s per pair judged in both orders); research/drlaif_200 judged 200 prompts
#: (with the reference pairs too) in 72 min, 1.6 s per completion sampled and 2.2 s per pair.
#: So ``eval_n=200`` (the issue's goal) adds roughly 40 minutes: an estimate from those rates.
FULL: dict[str, Any] = {
    "judge": DEFAULT_JUDGE,
    "direct_judge": DEFAULT_JUDGE,
    "si_policy": SMALL_JUDGE,
    "si_judge": SMALL_JUDGE,
    "tasks": TASKS,
    "seeds": (0, 1, 2),
    "sft_train": 128,
    "sft_heldout": 25,
    "sft_epochs": 1,
    "sft_last_layers": 8,
    "rm_pool": 210,
    "n_train_pairs": 32,
    "rm_eval_pairs": 40,
    "rm_epochs": 1,
    "rm_batch_size": 8,
    "rm_max_length": 192,
    "rl_steps": 6,
    "drlaif_steps": 3,
    "hh_rl_steps": 1,
    "si_rl_steps": 1,
    "rl_batch_size": 8,
    "max_new_tokens": 48,
    "max_prompt_tokens": 384,
    "eval_n": 32,
    "eval_n_ref": 16,
    "eval_n_small": 8,
    "eval_batch_size": 16,
    "bootstrap": 1000,
}
#: Defaults of ``quick=True``: the same stages at tiny sizes (minutes with the real models,
#: seconds with the tiny random ones).
QUICK: dict[str, Any] = {
    "judge": SMALL_JUDGE,
    "direct_judge": SMALL_JUDGE,
    # the self-improvement stages with the small policy as its own judge (a 0.5B SFT alone
    # would take the quick run's whole budget on 2 cores)
    "si_policy": DEFAULT_POLICY,
    "si_judge": DEFAULT_POLICY,
    "tasks": TASKS,
    "seeds": (0, 1),
    "sft_train": 8,
    "sft_heldout": 2,
    "sft_epochs": 1,
    "sft_last_layers": 4,
    "rm_pool": 16,
    "n_train_pairs": 4,
    "rm_eval_pairs": 8,
    "rm_epochs": 1,
    "rm_batch_size": 4,
    "rm_max_length": 192,
    "rl_steps": 2,
    "drlaif_steps": 2,
    "hh_rl_steps": 1,
    "si_rl_steps": 1,
    "rl_batch_size": 2,
    "max_new_tokens": 16,
    "max_prompt_tokens": 256,
    "eval_n": 8,
    "eval_n_ref": 4,
    "eval_n_small": 4,
    "eval_batch_size": 4,
    "bootstrap": 200,
}
#: The integer sizes (``--<name>`` options of ``rlaif-gym reproduce``).
SIZE_KEYS: tuple[str, ...] = tuple(k for k, v in FULL.items() if isinstance(v, int))
STATE_FILE = "state.json"
REPORT_FILE = "REPORT.md"
#: Subfolder of OUT for the heavy outputs (SFT policies, reward models, RL runs); it holds a
#: ``.gitignore`` of ``*`` so that a report folder inside a repository stays small.
WORK = "work"
#: ReproduceConfig fields that do not change what the stages compute.
NOT_PIPELINE = frozenset({"out", "quick", "threads", "command", "labels_from", "device"})


class ReproduceError(UsageError):
    """A stage failed or OUT holds a run with other settings (one line, exit code 2)."""


@dataclass
class ReproduceConfig:
    """All settings of one reproduction (see ``rlaif-gym reproduce --help``).

    Attributes (besides the sizes of :data:`FULL`):
        out: the run folder. quick: tiny sizes. data_dir, source: the data.
        policy: the start policy of every task's SFT. judge: the labeler and the evaluation
            judge. direct_judge: d-RLAIF's reward judge. rm_base: the RMs' backbone.
        si_policy, si_judge: the self-improvement policy (fine-tuned like ``policy``) and
            its own-size direct judge.
        labels_from: a folder of committed label files (``reports/labels``) whose labels are
            reused for the same labeler and pairs, and which Tables 2-4 are computed from.
        test_fraction: share of comparison contexts held out for RM accuracy.
        lr, kl_coef, temperature, rm_lr, sft_lr: optimisation. seed: data splits, SFT, RMs,
            evaluation; the RLAIF/RLHF runs (d-RLAIF runs one per ``seeds`` entry).
        device: where SFT, the RMs, RL and sampling run (``"cpu"``, ``"cuda"``); the
            judges run where :func:`rewards.judges.load_judge` puts them.
    """

    out: str
    quick: bool = False
    data_dir: str | None = None
    source: str = "auto"
    policy: str = DEFAULT_POLICY
    judge: str = FULL["judge"]
    direct_judge: str | None = None
    rm_base: str | None = None
    si_policy: str = FULL["si_policy"]
    si_judge: str = FULL["si_judge"]
    tasks: tuple[str, ...] = FULL["tasks"]
    seeds: tuple[int, ...] = FULL["seeds"]
    labels_from: str | None = None
    test_fraction: float = 0.3
    sft_train: int = FULL["sft_train"]
    sft_heldout: int = FULL["sft_heldout"]
    sft_epochs: int = FULL["sft_epochs"]
    sft_last_layers: int = FULL["sft_last_layers"]
    sft_lr: float = 5e-5
    rm_pool: int = FULL["rm_pool"]
    n_train_pairs: int = FULL["n_train_pairs"]
    rm_eval_pairs: int = FULL["rm_eval_pairs"]
    rm_epochs: int = FULL["rm_epochs"]
    rm_batch_size: int = FULL["rm_batch_size"]
    rm_max_length: int = FULL["rm_max_length"]
    rm_lr: float = 1e-5
    rl_steps: int = FULL["rl_steps"]
    drlaif_steps: int = FULL["drlaif_steps"]
    hh_rl_steps: int = FULL["hh_rl_steps"]
    si_rl_steps: int = FULL["si_rl_steps"]
    rl_batch_size: int = FULL["rl_batch_size"]
    lr: float = 1e-5
    kl_coef: float = 0.05
    max_new_tokens: int = FULL["max_new_tokens"]
    max_prompt_tokens: int = FULL["max_prompt_tokens"]
    temperature: float = 0.9
    eval_n: int = FULL["eval_n"]
    eval_n_ref: int = FULL["eval_n_ref"]
    eval_n_small: int = FULL["eval_n_small"]
    eval_batch_size: int = FULL["eval_batch_size"]
    bootstrap: int = FULL["bootstrap"]
    seed: int = 0
    threads: int | None = None
    device: str = "cpu"
    command: str = ""

    def __post_init__(self) -> None:
        if self.direct_judge is None:
            self.direct_judge = self.judge
        if self.rm_base is None:
            self.rm_base = self.policy
        self.tasks = tuple(self.tasks)
        self.seeds = tuple(int(s) for s in self.seeds)
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or not self.tasks:
            raise ReproduceError(f"tasks must be a non-empty subset of {TASKS}, got "
                                 f"{self.tasks}")
        if "tldr" in self.tasks and not self.seeds:
            raise ReproduceError("d-RLAIF on TL;DR needs at least one seed")
        if not 0.0 < self.test_fraction < 1.0:
            raise ReproduceError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        for name in SIZE_KEYS:
            value = getattr(self, name)
            low = 0 if name in ("bootstrap", "sft_last_layers", "sft_heldout",
                                "rm_eval_pairs") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ReproduceError(f"{name} must be an int >= {low}, got {value!r}")
        for name in ("eval_n_ref", "eval_n_small"):  # TL;DR evaluates prefixes of eval_n
            if getattr(self, name) > self.eval_n:
                raise ReproduceError(f"{name} ({getattr(self, name)}) must be <= eval_n "
                                     f"({self.eval_n})")

    def pipeline(self) -> dict[str, Any]:
        """The settings that cached outputs depend on."""
        data = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in data.items()
                if k not in NOT_PIPELINE}


def default_out(quick: bool) -> str:
    """Where a run goes when no ``out`` is given: ``runs/reproduce`` or
    ``runs/reproduce-quick`` (the committed example reports live in ``reports/``, so a
    user's run never collides with them)."""
    return "runs/reproduce-quick" if quick else "runs/reproduce"


def make_config(*, quick: bool = False, out: str | None = None, judge: str | None = None,
                direct_judge: str | None = None, **options: Any) -> ReproduceConfig:
    """A :class:`ReproduceConfig` whose unset settings come from :data:`FULL` (or
    :data:`QUICK` with ``quick=True``). Options that are None keep their defaults.

    ``direct_judge`` defaults to the size's d-RLAIF judge, or to ``judge`` when a judge is
    given.

    Raises:
        UsageError: an unknown option or a bad value.
    """
    base = QUICK if quick else FULL
    fields = {f.name for f in dataclasses.fields(ReproduceConfig)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise UsageError(f"unknown reproduce options {unknown}")
    given = {k: v for k, v in options.items() if v is not None}
    for key, value in base.items():
        if key not in ("judge", "direct_judge"):
            given.setdefault(key, value)
    return ReproduceConfig(
        out=out or default_out(quick), quick=quick, judge=judge or base["judge"],
        direct_judge=direct_judge or (base["direct_judge"] if judge is None else None),
        **given)


def describe_config(config: ReproduceConfig) -> str:
    """A ``rlaif-gym reproduce`` command line equivalent to ``config`` (for the report)."""
    parts = ["--quick"] if config.quick else []
    parts += ["--out", display_path(config.out)]
    if config.data_dir:
        parts += ["--data-dir", display_path(config.data_dir)]
    if config.source != "auto":
        parts += ["--source", config.source]
    if config.labels_from:
        parts += ["--labels-from", display_path(config.labels_from)]
    parts += ["--policy", config.policy, "--judge", config.judge, "--direct-judge",
              str(config.direct_judge), "--rm-base", str(config.rm_base), "--si-policy",
              config.si_policy, "--si-judge", config.si_judge,
              "--tasks", ",".join(config.tasks), "--seeds", ",".join(map(str, config.seeds))]
    base = QUICK if config.quick else FULL
    for name in SIZE_KEYS:
        if getattr(config, name) != base[name]:
            parts += ["--" + name.replace("_", "-"), str(getattr(config, name))]
    if config.threads:
        parts += ["--threads", str(config.threads)]
    parts += ["--seed", str(config.seed)]
    return "rlaif-gym reproduce " + shlex.join(parts)


# =========================================================================== the runs


@dataclass(frozen=True)
class Run:
    """One RL run of the reproduction.

    Attributes:
        key: its folder under ``OUT/work/runs`` (``"tldr/d-rlaif-s1"``).
        task: the env's task. name: the policy's name in the tables (``"d-RLAIF"``).
        reward: a reward name. judge: the direct reward's judge (None for RMs).
        start: ``"sft"`` (the task's SFT policy) or ``"si-sft"`` (the self-improvement one).
        seed: the run's seed. steps: RL updates.
        baseline: ``"value"`` (the paper's value model) or ``"loo"`` (leave-one-out over
        ``samples_per_prompt`` completions of each prompt; no value model).
    """

    key: str
    task: str
    name: str
    reward: str
    judge: str | None
    start: str
    seed: int
    steps: int
    baseline: str = "value"
    samples_per_prompt: int = 1


def runs_of(config: ReproduceConfig) -> list[Run]:
    """Every RL run of ``config``, in the order they are trained."""
    runs: list[Run] = []
    for task in config.tasks:
        steps = config.rl_steps if task == "tldr" else config.hh_rl_steps
        runs.append(Run(f"{task}/rlaif", task, "RLAIF", "ai-rm", None, "sft", config.seed,
                        steps))
        runs.append(Run(f"{task}/rlhf", task, "RLHF", "human-rm", None, "sft", config.seed,
                        steps))
    if "tldr" in config.tasks:
        for seed in config.seeds:
            runs.append(Run(f"tldr/d-rlaif-s{seed}", "tldr", f"d-RLAIF s{seed}", "direct",
                            config.direct_judge, "sft", seed, config.drlaif_steps))
        # the 0.5B policy trains with the leave-one-out baseline (2 samples per prompt): its
        # value copy and that copy's AdamW states (~8 GB in float32) beside the 1.5B judge
        # were killed for memory at 24 GiB three times, even at 2 sequences per update
        for key, name, judge in (("si/d-rlaif-self", "SI self-rewarded", config.si_judge),
                                 ("si/d-rlaif-judge", "SI judge-rewarded",
                                  config.direct_judge)):
            runs.append(Run(key, "tldr", name, "direct", judge, "si-sft", config.seed,
                            config.si_rl_steps, baseline="loo", samples_per_prompt=2))
    return runs


# =========================================================================== evaluations


@dataclass(frozen=True)
class Evaluation:
    """One call of :func:`rlaif_gym.pipelines.evaluate.evaluate_policies`.

    Attributes:
        key: its folder under ``OUT/eval``. task: the task. n: prompts (the first ``n`` of
        the task's evaluation prompts). policies: ``"NAME=SPEC"`` strings. pairs: ``"A:B"``.
    """

    key: str
    task: str
    n: int
    policies: tuple[str, ...]
    pairs: tuple[str, ...]


def evaluations_of(config: ReproduceConfig, out: Path) -> list[Evaluation]:
    """Every evaluation of ``config``: on TL;DR, d-RLAIF (every seed) against SFT on
    ``eval_n`` prompts and against the references on ``eval_n_ref``, and the RM arms on
    ``eval_n_small``; on HH the RM arms
    against SFT (harmless rates on the harmless task); the self-improvement runs against
    their own SFT start and the references."""
    runs = {run.key: run for run in runs_of(config)}

    def spec(key: str) -> str:
        return f"{runs[key].name}={run_dir(out, runs[key])}"

    evaluations = []
    for task in config.tasks:
        sft = f"SFT={sft_dir(out, 'sft', task) / 'policy'}"
        arms = (spec(f"{task}/rlaif"), spec(f"{task}/rlhf"))
        if task == "tldr":
            seeds = tuple(spec(f"tldr/d-rlaif-s{s}") for s in config.seeds)
            names = [f"d-RLAIF s{s}" for s in config.seeds]
            evaluations.append(Evaluation(
                "tldr-drlaif", task, config.eval_n, (sft, *seeds),
                tuple(f"{n}:SFT" for n in names)))
            # against the human references on fewer prompts: 2(seeds + 1) judge calls per
            # prompt would double the evaluation's cost at eval_n
            evaluations.append(Evaluation(
                "tldr-ref", task, config.eval_n_ref, (sft, *seeds, "REF=reference"),
                tuple([f"{n}:REF" for n in names] + ["SFT:REF"])))
            evaluations.append(Evaluation(
                "tldr-rm", task, config.eval_n_small, (sft, *arms, "REF=reference"),
                ("RLAIF:SFT", "RLHF:SFT", "RLAIF:RLHF", "RLAIF:REF", "RLHF:REF")))
            si_sft = f"SI SFT={sft_dir(out, 'si-sft', 'tldr') / 'policy'}"
            si = (spec("si/d-rlaif-self"), spec("si/d-rlaif-judge"))
            si_names = [runs["si/d-rlaif-self"].name, runs["si/d-rlaif-judge"].name]
            evaluations.append(Evaluation(
                "tldr-si", task, config.eval_n_small, (si_sft, *si, "REF=reference"),
                tuple([f"{n}:SI SFT" for n in si_names] + [f"{n}:REF" for n in si_names]
                      + ["SI SFT:REF"])))
        else:
            pairs = ("RLAIF:SFT", "RLHF:SFT") + (("RLAIF:RLHF",) if task == "helpful" else ())
            evaluations.append(Evaluation(task, task, config.eval_n_small, (sft, *arms),
                                          pairs))
    return evaluations


# =========================================================================== paths


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "x"



def call_text(name: str, *args: Any, **kwargs: Any) -> str:
    """``name(arg, key=value, ...)``: how a stage called a public function, for the report
    (paths shown relative, :func:`rlaif_gym.files.display_path`)."""
    def show(value: Any) -> str:
        if isinstance(value, (list, tuple)):
            return "[" + ", ".join(show(v) for v in value) + "]"
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if isinstance(value, str):
            head, sep, tail = value.rpartition("=")  # "NAME=PATH" policy specs
            return repr(head + sep + display_path(tail))
        return repr(value)

    parts = [show(a) for a in args] + [f"{k}={show(v)}" for k, v in kwargs.items()]
    return f"{name}({', '.join(parts)})"



def work_dir(out: Path) -> Path:
    """``OUT/work``: SFT policies, reward models and RL runs (git-ignored)."""
    folder = out / WORK
    folder.mkdir(parents=True, exist_ok=True)
    ignore = folder / ".gitignore"
    if not ignore.is_file():
        ignore.write_text("# policies, reward models and RL checkpoints: too large for git\n*\n",
                          encoding="utf-8")
    return folder




def data_dir_of(out: Path, task: str) -> Path:
    return out / "data" / task


def sft_dir(out: Path, start: str, task: str) -> Path:
    """The SFT run folder: ``work/sft/<task>``, or ``work/sft/si-<task>``."""
    return work_dir(out) / "sft" / (task if start == "sft" else f"si-{task}")


def start_policy(out: Path, run: Run) -> str:
    return str(sft_dir(out, run.start, run.task) / "policy")


def label_file(out: Path, task: str, judge: str, prompt: str) -> Path:
    """Where the labels of ``judge`` with ``prompt`` (0-shot, no CoT) of ``task`` go."""
    return out / "labels" / f"{task}-{prompt}-0shot-{_slug(judge)}.jsonl"


def label_jobs(config: ReproduceConfig) -> list[tuple[str, str]]:
    """``(task, prompt)`` of every label file: each task's default labeler; TL;DR also the
    paper's Base prompt (its RM is compared with the default labeler's)."""
    from rewards.preference import DEFAULT_PROMPTS

    jobs = [(task, DEFAULT_PROMPTS[task]) for task in config.tasks]
    if "tldr" in config.tasks and DEFAULT_PROMPTS["tldr"] != "base":
        jobs.append(("tldr", "base"))
    return jobs


def rm_dir(out: Path, task: str, name: str) -> Path:
    return work_dir(out) / "rm" / task / name


def rm_jobs(config: ReproduceConfig, out: Path) -> list[tuple[str, str, dict[str, Any]]]:
    """``(task, RM name, label source)``: per task the AI-RM on the default labeler's labels
    and the human-RM; on TL;DR also the AI-RM on the paper's Base labels."""
    from rewards.preference import DEFAULT_PROMPTS

    jobs = []
    for task in config.tasks:
        default = DEFAULT_PROMPTS[task]
        jobs.append((task, "rm-ai", {"labels": str(label_file(out, task, config.judge,
                                                               default))}))
        jobs.append((task, "rm-human", {"human": True}))
        if task == "tldr" and default != "base":
            jobs.append((task, "rm-ai-base", {"labels": str(label_file(out, task,
                                                                       config.judge,
                                                                       "base"))}))
    return jobs


def run_dir(out: Path, run: Run) -> Path:
    return work_dir(out) / "runs" / run.key

