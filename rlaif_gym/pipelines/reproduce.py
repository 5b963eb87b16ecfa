"""The paper's pipeline end to end at small scale, and its report (``rlaif-gym reproduce``).

Lee et al. 2023 (arXiv 2309.00267) on Reddit TL;DR, scaled down to a CPU::

    data      post-split of the human TL;DR comparisons (train side / held-out side) and of
              the TL;DR posts (RL prompts / held-out evaluation prompts)
    labels    AI preference labels of --n-train-pairs train-side comparisons
              (:func:`rlaif_gym.pipelines.label.label_to_file`), plus the labels of the
              alignment tables (prompt variants, labeler sizes) unless --labels-from points
              at existing label files
    rm        AI-RM (soft AI labels) and human-RM (human choices) on the SAME train pairs
              (:func:`rlaif_gym.pipelines.reward_models.train_rm`), accuracy of both
              against the held-out human choices
    rl        REINFORCE from the same start policy ("SFT") with the rewards ai-rm (RLAIF),
              human-rm (RLHF) and direct (d-RLAIF) (:func:`agents.train.train`)
    evaluate  every RL policy against SFT and head to head
              (:func:`rlaif_gym.pipelines.evaluate.evaluate_policies`)
    report    OUT/REPORT.md (Tables 1-5 beside the paper's numbers, N and 95% CIs
              everywhere, commands, seeds, wall time per stage), OUT/learning_curves.png,
              OUT/win_rates.png

Every stage writes its outputs under OUT (reward models and RL runs, gigabytes with the real
models, under the git-ignored ``OUT/work/``) and is skipped (or resumed) when they exist, so
an interrupted run continues where it stopped; OUT/state.json records the settings (a rerun
with other sizes is refused: use another --out) and the wall time of every stage.

``--quick`` uses tiny sizes (minutes on a CPU with the real packaged models); with
``--policy tiny-random --judge tiny-random --rm-base tiny-random`` the whole pipeline runs
in seconds (the tests do that). The defaults are sized for about 2 hours on 2 CPU cores
(see :data:`FULL` and the "Sizing" section of the report).

Caveats, also written into the report: the judge is an LLM, not human raters, and often
the same model that labeled the RM data; "SFT" is the packaged instruction-tuned policy
(SmolLM2-135M-Instruct), not a TL;DR-fine-tuned one; RL runs are tens of steps, not
thousands.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlaif_gym.defaults import DEFAULT_JUDGE, DEFAULT_POLICY, SMALL_JUDGE
from rlaif_gym.errors import UsageError
from rlaif_gym.files import atomic_path, atomic_write, display_path, read_json, write_json
from rlaif_gym.stats import pct

__all__ = [
    "FULL",
    "PAPER",
    "QUICK",
    "ReproduceConfig",
    "ReproduceError",
    "default_out",
    "make_config",
    "reproduce",
    "write_report",
]

# =========================================================================== the paper

#: Numbers of Lee et al. 2023, "RLAIF vs. RLHF" (arXiv 2309.00267), used only to print them
#: beside ours. Each value is ``(number, how it was verified)``:
#: ``"paper"``: read in the paper's own text (Figure 1 of arXiv v2, which plots the same
#: win rates and harmless rates as Table 1 of v3); ``"secondary"``: read only in third-party
#: summaries that quote the paper (the arXiv v3 HTML available to us was cut before the
#: tables). Numbers found in neither are left out (see :data:`PAPER_LEFT_OUT`).
PAPER: dict[str, Any] = {
    # Table 1 (human evaluation): win rates against the SFT policy, and harmless rates.
    "table1": {
        ("tldr", "RLAIF vs SFT"): (0.71, "paper"),
        ("tldr", "RLHF vs SFT"): (0.73, "paper"),
        ("tldr", "d-RLAIF vs SFT"): (0.74, "secondary"),
        ("helpful", "RLAIF vs SFT"): (0.63, "paper"),
        ("helpful", "RLHF vs SFT"): (0.64, "paper"),
        ("harmless", "harmless rate SFT"): (0.64, "secondary"),
        ("harmless", "harmless rate RLHF"): (0.76, "paper"),
        ("harmless", "harmless rate RLAIF"): (0.88, "paper"),
    },
    # Appendix J (Table 8): length-controlled win rates against SFT, summarization.
    "length_controlled": {
        ("tldr", "RLAIF vs SFT"): (0.59, "secondary"),
        ("tldr", "RLHF vs SFT"): (0.61, "secondary"),
    },
    # Table 2: AI labeler alignment by prompt, summarization, PaLM 2 L labeler.
    # Keys: (preamble, chain of thought, shots).
    "table2": {
        ("base", False, 0): (0.761, "secondary"),
        ("base", True, 0): (0.775, "secondary"),
        ("detailed", False, 0): (0.774, "secondary"),
        ("detailed", True, 0): (0.780, "secondary"),
    },
    # Table 3: AI labeler alignment by labeler size (summarization), largest first.
    "table3": [("PaLM 2 L", 0.780, "secondary"), ("PaLM 2 S", 0.738, "secondary"),
               ("PaLM 2 XS", 0.627, "secondary")],
    # Table 4 (Appendix B): share of pairs where the labeler prefers the same POSITION in
    # both orders, largest labeler first.
    "table4": [("PaLM 2 L", 0.18, "secondary"), ("PaLM 2 S", 0.21, "secondary"),
               ("PaLM 2 XS", 0.56, "secondary")],
}
#: Where the paper's numbers were read (see :data:`PAPER`).
PAPER_SOURCES: tuple[str, ...] = (
    "paper: arXiv 2309.00267v2 PDF text (Figure 1: win rates vs SFT 71%/73% summarization, "
    "63%/64% helpful; harmless rates RLAIF 88%, RLHF 76%), read through a document-sharing "
    "copy; the arXiv v3 HTML abstract and introduction agree qualitatively",
    "secondary: chatpaper.com and paperglide.net summaries of the paper (Table 1 numbers, SFT "
    "harmless rate 64%), public study notes quoting Tables 2-4, Appendix B and Appendix J "
    "(d-RLAIF 74%, alignment 76.1-78.0%, labeler sizes 78.0/73.8/62.7%, same-position "
    "shares 18/21/56%, length-controlled 59%/61%)",
)
#: Paper numbers we could not verify, so they are not printed.
PAPER_LEFT_OUT: tuple[str, ...] = (
    "the exact head-to-head RLAIF vs RLHF win rates (summaries only say 'about 50%')",
    "d-RLAIF vs same-size RLAIF and the same-size RLAIF rows",
    "Table 5: reward-model accuracies",
    "Table 2 alignment for the helpful and harmless tasks and the few-shot rows",
)

# =========================================================================== settings

#: Defaults of a full run (about 2 hours on 2 cores with --labels-from, see
#: :data:`SIZING_NOTE`).
FULL: dict[str, Any] = {
    "judge": DEFAULT_JUDGE,
    "direct_judge": SMALL_JUDGE,
    "labelers": (DEFAULT_POLICY, SMALL_JUDGE),
    "alignment_prompts": ("base", "detailed"),
    "n_train_pairs": 120,
    "rm_epochs": 1,
    "rm_batch_size": 8,
    "rm_max_length": 320,
    "rm_eval_pairs": 0,
    "rl_steps": 24,
    "rl_batch_size": 8,
    "max_new_tokens": 48,
    "max_prompt_tokens": 384,
    "eval_n": 64,
    "eval_batch_size": 16,
    "bootstrap": 1000,
}
#: How the FULL defaults were sized (an a-priori estimate, printed in every report).
SIZING_NOTE = (
    "How the FULL defaults were sized: from the stage times of the first FULL run "
    "(reports/reproduce, `make reproduce` = --threads 2 --labels-from reports/labels, on 2 "
    "cores that other jobs shared part of the time): 120 AI labels with the 1.5B judge 6.4 "
    "min (3.2 s/pair, both orders); the two RMs (120 train pairs, 153 held-out pairs, 320 "
    "tokens) 16 min; each RL run of 24 steps x 8 episodes x 48 tokens about 21 min (51-53 "
    "s/step, two thirds of it the update of the policy and the value model; the 0.5B d-RLAIF "
    "judge adds little); sampling 4 policies x 64 prompts about 7 min; 5 comparisons x 64 "
    "prompts judged by the 1.5B judge (both orders) about 16 min. Total about 2 h; without "
    "--labels-from add about 25 min for the Table 2-3 labels (1.5B detailed, 0.5B and "
    "SmolLM2 on the 120 pairs). The RL update holds policy, reference and value model "
    "(about 11 GB resident at batch 8 without micro-batches): do not run a second training "
    "job beside it on a 24 GB machine."
)
#: Defaults of ``--quick`` (minutes with the real models, seconds with tiny-random).
QUICK: dict[str, Any] = {
    "judge": SMALL_JUDGE,
    "direct_judge": SMALL_JUDGE,
    "labelers": (),
    "alignment_prompts": ("base",),
    "n_train_pairs": 8,
    "rm_epochs": 1,
    "rm_batch_size": 4,
    "rm_max_length": 256,
    "rm_eval_pairs": 16,
    "rl_steps": 2,
    "rl_batch_size": 2,
    "max_new_tokens": 16,
    "max_prompt_tokens": 256,
    "eval_n": 4,
    "eval_batch_size": 4,
    "bootstrap": 200,
}
#: The RL runs: (run name, policy name in the tables, reward).
RUNS: tuple[tuple[str, str, str], ...] = (
    ("rlaif", "RLAIF", "ai-rm"),
    ("rlhf", "RLHF", "human-rm"),
    ("d-rlaif", "d-RLAIF", "direct"),
)
#: Table 1 comparisons: (A, B) = win rate of A over B.
COMPARISONS: tuple[tuple[str, str], ...] = (
    ("RLAIF", "SFT"), ("RLHF", "SFT"), ("d-RLAIF", "SFT"), ("RLAIF", "RLHF"),
    ("d-RLAIF", "RLAIF"),
)
#: Approximate parameter counts of known labelers (orders Tables 3 and 4).
MODEL_SIZES: dict[str, float] = {
    "tiny-random": 4e4, "smollm2-135m-instruct": 1.35e8,
    "qwen2.5-coder-0.5b-instruct": 5e8, "qwen2.5-coder-1.5b-instruct": 1.5e9,
}
STATE_FILE = "state.json"
REPORT_FILE = "REPORT.md"
#: Subfolder of OUT for the heavy outputs (reward models, RL runs with checkpoints); it
#: holds a ``.gitignore`` of ``*`` so that a report folder inside a repository stays small.
WORK = "work"
#: Settings that, when changed, make cached stage outputs invalid.
PIPELINE_KEYS: tuple[str, ...] = (
    "data_dir", "source", "policy", "judge", "direct_judge", "rm_base", "n_train_pairs",
    "test_fraction", "rm_epochs", "rm_batch_size", "rm_max_length", "rm_eval_pairs", "rm_lr",
    "rl_steps",
    "rl_batch_size", "lr", "kl_coef", "max_new_tokens", "max_prompt_tokens", "temperature",
    "eval_n", "eval_batch_size", "seed",
)


class ReproduceError(UsageError):
    """A stage failed or OUT holds a run with other settings (one line, exit code 2)."""


@dataclass
class ReproduceConfig:
    """All settings of one reproduction (see ``rlaif-gym reproduce --help``)."""

    out: str
    quick: bool = False
    data_dir: str | None = None
    source: str = "auto"
    policy: str = DEFAULT_POLICY
    judge: str = FULL["judge"]
    direct_judge: str | None = None
    rm_base: str | None = None
    labelers: tuple[str, ...] = FULL["labelers"]
    alignment_prompts: tuple[str, ...] = FULL["alignment_prompts"]
    labels_from: str | None = None
    n_train_pairs: int = FULL["n_train_pairs"]
    test_fraction: float = 0.2
    rm_epochs: int = FULL["rm_epochs"]
    rm_batch_size: int = FULL["rm_batch_size"]
    rm_max_length: int = FULL["rm_max_length"]
    rm_eval_pairs: int = FULL["rm_eval_pairs"]
    rm_lr: float = 1e-5
    rl_steps: int = FULL["rl_steps"]
    rl_batch_size: int = FULL["rl_batch_size"]
    lr: float = 1e-5
    kl_coef: float = 0.05
    max_new_tokens: int = FULL["max_new_tokens"]
    max_prompt_tokens: int = FULL["max_prompt_tokens"]
    temperature: float = 0.9
    eval_n: int = FULL["eval_n"]
    eval_batch_size: int = FULL["eval_batch_size"]
    bootstrap: int = FULL["bootstrap"]
    seed: int = 0
    threads: int | None = None
    command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.direct_judge is None:
            self.direct_judge = self.judge
        if self.rm_base is None:
            self.rm_base = self.policy
        for name in ("rm_eval_pairs", "bootstrap"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        for name in ("n_train_pairs", "rm_epochs", "rm_batch_size", "rl_steps", "rl_batch_size",
                     "max_new_tokens", "max_prompt_tokens", "eval_n", "eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")

    def pipeline(self) -> dict[str, Any]:
        """The settings that cached outputs depend on."""
        data = dataclasses.asdict(self)
        return {k: data[k] for k in PIPELINE_KEYS}


# =========================================================================== helpers


def _log(line: str) -> None:
    print(f"[reproduce] {line}", file=sys.stderr, flush=True)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "x"


_write_json = write_json
_read_json = read_json


class State:
    """``OUT/state.json``: the run's settings, stage wall times and commands."""

    def __init__(self, out: Path, config: ReproduceConfig) -> None:
        self.path = out / STATE_FILE
        if self.path.is_file():
            self.data = _read_json(self.path)
            saved = self.data.get("config", {})
            differing = {k: (saved.get(k), v) for k, v in config.pipeline().items()
                         if json.dumps(saved.get(k)) != json.dumps(v)}
            if differing:
                detail = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in differing.items())
                raise ReproduceError(f"{out} holds a reproduction with other settings "
                                     f"({detail}); its cached stages would not match. Use "
                                     "another --out, or the same settings to resume it")
        else:
            self.data = {"config": config.pipeline(), "stages": {}, "invocations": []}
        self.data["invocations"].append({"command": config.command or describe_config(config),
                                         "threads": config.threads,
                                         "labels_from": config.labels_from,
                                         "started": time.strftime("%Y-%m-%d %H:%M:%S")})
        self.save()

    def save(self) -> None:
        _write_json(self.path, self.data)

    def record(self, stage: str, seconds: float, *, skipped: bool = False,
               commands: Sequence[str] = ()) -> None:
        entry = self.data["stages"].setdefault(stage, {"seconds": 0.0, "runs": []})
        if not skipped:
            entry["seconds"] += seconds
        entry["runs"].append({"seconds": round(seconds, 2), "skipped": skipped,
                              "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
        if commands:
            entry["commands"] = list(commands)
        self.save()


def work_dir(out: Path) -> Path:
    """``OUT/work``: reward models and RL runs (gigabytes with real models), git-ignored."""
    folder = out / WORK
    folder.mkdir(parents=True, exist_ok=True)
    ignore = folder / ".gitignore"
    if not ignore.is_file():
        ignore.write_text("# reward models and RL checkpoints: too large for git\n*\n",
                          encoding="utf-8")
    return folder


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


shown_path = display_path


def _done(command: str) -> str:
    _log(command)
    gc.collect()
    return command


# =========================================================================== stages


def stage_data(config: ReproduceConfig, out: Path) -> dict[str, Any]:
    """Post-split of the comparisons and of the posts; writes ``OUT/data/``."""
    import numpy as np

    from rewards.reward_model import PairSplit, split_pairs
    from rlaif_gym.data import load_preference_pairs
    from rlaif_gym.tasks import get_task

    folder = out / "data"
    summary_path = folder / "data.json"
    if summary_path.is_file():
        return _read_json(summary_path)
    pairs = load_preference_pairs("tldr", data_dir=config.data_dir, source=config.source)
    split = split_pairs(pairs, config.test_fraction, config.seed,
                        source=str(getattr(pairs, "source", "")))
    train_side = [p for p in pairs if p.id in split.side("train")]
    test_side = [p for p in pairs if p.id in split.side("test")]
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(train_side))
    chosen = [train_side[int(i)] for i in order[:config.n_train_pairs]]
    if config.rm_eval_pairs:  # a seeded subset of the held-out side (keeps file order)
        keep = sorted(int(i) for i in rng.permutation(len(test_side))[:config.rm_eval_pairs])
        test_side_used = [test_side[i] for i in keep]
    else:
        test_side_used = test_side
    if len(chosen) < config.n_train_pairs:
        _log(f"warning: only {len(chosen)} train-side comparisons, fewer than "
             f"--n-train-pairs {config.n_train_pairs}; using all of them")

    def row(p: Any) -> dict[str, Any]:
        return {"id": p.id, "task": "tldr", "context": p.context,
                "responses": list(p.responses), "human_choice": p.human_choice,
                "confidence": p.confidence}

    folder.mkdir(parents=True, exist_ok=True)
    for name, subset in (("train_pairs.jsonl", chosen),
                         ("rm_pairs.jsonl", chosen + test_side_used)):
        with open(folder / name, "w", encoding="utf-8") as fh:
            for p in subset:
                fh.write(json.dumps(row(p), ensure_ascii=False) + "\n")
    PairSplit(train=tuple(p.id for p in chosen), test=tuple(p.id for p in test_side_used),
              seed=config.seed, test_fraction=config.test_fraction, task="tldr",
              source=split.source).save(folder / "rm_split.json")

    posts = get_task("tldr").load_prompts(split="test", data_dir=config.data_dir,
                                          source=config.source)
    if len(posts) < config.eval_n + config.rl_batch_size:
        raise ReproduceError(f"{len(posts)} TL;DR posts: too few for --eval-n {config.eval_n} "
                             f"held-out prompts plus RL prompts")
    perm = np.random.default_rng(config.seed).permutation(len(posts))
    eval_ids = [str(posts[int(i)].id) for i in perm[:config.eval_n]]
    rl_ids = [str(posts[int(i)].id) for i in perm[config.eval_n:]]
    _write_json(folder / "eval_ids.json", eval_ids)
    _write_json(folder / "rl_ids.json", rl_ids)
    contexts = {p.context for p in pairs}
    summary = {
        "comparisons_source": str(getattr(pairs, "source", "")),
        "comparisons": len(pairs), "comparison_posts": len(contexts),
        "train_side_pairs": len(train_side), "test_side_pairs": len(test_side),
        "test_side_posts": len({p.context for p in test_side}),
        "train_pairs_used": len(chosen), "rm_eval_pairs_used": len(test_side_used),
        "posts_source": str(getattr(posts, "source", "")), "posts": len(posts),
        "eval_prompts": len(eval_ids), "rl_prompts": len(rl_ids),
        "posts_also_in_comparisons": sum(1 for p in posts if p.text in contexts),
        "split_seed": config.seed, "test_fraction": config.test_fraction,
    }
    _write_json(summary_path, summary)
    return summary


def label_file(out: Path, judge: str, prompt: str) -> Path:
    """Where the labels of ``judge`` with preamble ``prompt`` (0-shot, no CoT) go."""
    return out / "labels" / f"tldr-{prompt}-0shot-{_slug(judge)}.jsonl"


def stage_labels(config: ReproduceConfig, out: Path) -> list[str]:
    """AI labels of the train pairs (resumable ``rlaif-gym label`` runs); the RM labels
    always, the alignment-table labels unless ``labels_from``."""
    jobs = [(config.judge, "base")]
    if config.labels_from is None:
        jobs += [(config.judge, p) for p in config.alignment_prompts if p != "base"]
        jobs += [(j, "base") for j in config.labelers if j != config.judge]
    from rlaif_gym.pipelines.label import label_to_file

    commands = []
    for judge, prompt in dict.fromkeys(jobs):
        kwargs = {"task": "tldr", "pairs": str(out / "data" / "train_pairs.jsonl"),
                  "judge": judge, "prompt": prompt, "threads": config.threads}
        target = label_file(out, judge, prompt)
        label_to_file(target, **kwargs, progress=False, log=_log)
        commands.append(_done(call_text("label_to_file", str(target), **kwargs)))
    return commands


def _rm_complete(folder: Path) -> bool:
    meta = folder / "rm_meta.json"
    return meta.is_file() and bool(_read_json(meta).get("complete"))


def stage_reward_models(config: ReproduceConfig, out: Path) -> list[str]:
    """AI-RM and human-RM on the same train pairs (``rlaif-gym train-rm``)."""
    from rlaif_gym.pipelines.reward_models import train_rm

    commands = []
    for name, source in (("rm-ai", {"labels": str(label_file(out, config.judge, "base"))}),
                         ("rm-human", {"human": True})):
        folder = work_dir(out) / name
        if _rm_complete(folder):
            _log(f"{folder} is complete; skipping")
            continue
        kwargs = {**source, "task": "tldr", "pairs": str(out / "data" / "rm_pairs.jsonl"),
                  "split_file": str(out / "data" / "rm_split.json"), "base": config.rm_base,
                  "epochs": config.rm_epochs, "batch_size": config.rm_batch_size,
                  "max_length": config.rm_max_length, "lr": config.rm_lr, "seed": config.seed,
                  "threads": config.threads,
                  "resume": (folder / "rm_meta.json").is_file()}
        train_rm(folder, **kwargs, progress=False, log=_log)
        commands.append(_done(call_text("train_rm", str(folder), **kwargs)))
    return commands


def stage_rm_accuracy(config: ReproduceConfig, out: Path) -> dict[str, Any]:
    """Held-out pairwise accuracy of both RMs against the human choices."""
    path = out / "rm_accuracy.json"
    if path.is_file():
        return _read_json(path)
    from rewards.reward_model import PairSplit, RewardModel, evaluate_pairwise
    from rlaif_gym.data import load_preference_pairs

    pairs = load_preference_pairs("tldr", path=out / "data" / "rm_pairs.jsonl")
    split = PairSplit.load(out / "data" / "rm_split.json")
    test = [p for p in pairs if p.id in split.side("test")]
    result: dict[str, Any] = {}
    for name in ("rm-ai", "rm-human"):
        folder = work_dir(out) / name
        command = call_text("evaluate_rm", str(folder), task="tldr",
                            pairs=str(out / "data" / "rm_pairs.jsonl"))
        meta = _read_json(folder / "rm_meta.json")
        metrics = meta.get("metrics") or {}
        if metrics.get("eval_n") == len([p for p in test if p.human_choice is not None]):
            # train-rm already evaluated the final model on exactly these held-out pairs
            result[name] = {"accuracy": metrics["eval_accuracy"], "n": metrics["eval_n"],
                            "ci_low": metrics["eval_ci_low"], "ci_high": metrics["eval_ci_high"],
                            "ties": None, "label_source": meta.get("label_source"),
                            "train_examples": meta.get("train_examples"), "command": command,
                            "from": "rm_meta.json (train-rm's held-out evaluation)"}
            continue
        rm = RewardModel.from_pretrained(folder)
        acc = evaluate_pairwise(rm, test, batch_size=8)
        result[name] = {**acc.to_dict(), "label_source": rm.label_source,
                        "train_examples": rm.meta.get("train_examples"), "command": command,
                        "from": "rewards.reward_model.evaluate_pairwise"}
        del rm
        gc.collect()
    _write_json(path, result)
    return result


def _rl_prompts(config: ReproduceConfig, out: Path) -> list[Any]:
    from rlaif_gym.tasks import get_task

    ids = _read_json(out / "data" / "rl_ids.json")
    posts = get_task("tldr").load_prompts(split="test", data_dir=config.data_dir,
                                          source=config.source)
    by_id = {str(p.id): p for p in posts}
    return [by_id[i] for i in ids]


def stage_rl(config: ReproduceConfig, out: Path, run: str, reward: str) -> dict[str, Any]:
    """One REINFORCE run from ``config.policy`` (resumed if a checkpoint exists)."""
    from agents.train import TrainConfig, find_checkpoint, train

    folder = work_dir(out) / "runs" / run
    checkpoint = find_checkpoint(folder)
    if checkpoint is not None and _read_json(checkpoint / "state.json")["step"] >= \
            config.rl_steps:
        _log(f"{folder} has reached step {config.rl_steps}; skipping")
        return {"skipped": True}
    options: dict[str, Any] = {}
    if reward in ("ai-rm", "human-rm"):
        options["path"] = str(work_dir(out) / ("rm-ai" if reward == "ai-rm" else "rm-human"))
    train_config = TrainConfig(
        out_dir=str(folder), env_id="RLAIF-TLDR-v0", reward=reward, reward_options=options,
        policy=config.policy, judge=config.direct_judge if reward == "direct" else None,
        steps=config.rl_steps, batch_size=config.rl_batch_size, lr=config.lr,
        kl_coef=config.kl_coef, temperature=config.temperature,
        max_new_tokens=config.max_new_tokens, max_prompt_tokens=config.max_prompt_tokens,
        seed=config.seed, checkpoint_every=max(1, min(10, config.rl_steps)),
        threads=config.threads, env_options={"prompts": _rl_prompts(config, out)},
        # resume=True continues a checkpoint, and starts afresh (dropping a metrics.csv left
        # by a crash before the first checkpoint) when there is none
        progress=False, resume=True,
    )
    _log(f"train {run}: reward {reward}, {config.rl_steps} steps of {config.rl_batch_size} "
         f"episodes -> {folder}")
    result = train(train_config)
    gc.collect()
    return {"skipped": False, "step": result.step}


def stage_evaluate(config: ReproduceConfig, out: Path) -> str:
    """Every RL policy against SFT and head to head (``rlaif-gym evaluate``; it reuses its
    cached completions and judgments, so a rerun only does what is missing)."""
    from rlaif_gym.pipelines.evaluate import evaluate_policies, read_ids_json

    policies = [f"SFT={config.policy}"]
    policies += [f"{name}={work_dir(out) / 'runs' / run}" for run, name, _ in RUNS]
    kwargs = {"task": "tldr", "policies": policies, "out_dir": str(out / "eval"),
              "judge": config.judge, "pairs": [f"{a}:{b}" for a, b in COMPARISONS],
              "n": config.eval_n, "split": "test", "data_dir": config.data_dir,
              "source": config.source, "max_new_tokens": config.max_new_tokens,
              "max_prompt_tokens": config.max_prompt_tokens, "temperature": config.temperature,
              "seed": config.seed, "batch_size": config.eval_batch_size,
              "n_bootstrap": config.bootstrap, "threads": config.threads}
    ids = read_ids_json(out / "data" / "eval_ids.json")
    evaluate_policies(ids=ids, progress=False, log=_log, **kwargs)
    return _done(call_text("evaluate_policies", ids="data/eval_ids.json", **kwargs))


def reproduce(config: ReproduceConfig, log: Callable[[str], None] = _log) -> Path:
    """Run every stage (skipping finished ones) and write the report; returns its path."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    state = State(out, config)
    if config.threads:
        import torch

        torch.set_num_threads(config.threads)

    def timed(stage: str, fn: Callable[[], Any], done: Callable[[], bool] | None = None,
              commands: Callable[[Any], Sequence[str]] = lambda result: ()) -> Any:
        if done is not None and done():
            log(f"stage {stage}: outputs exist, skipped")
            state.record(stage, 0.0, skipped=True)
            return None
        log(f"stage {stage} ...")
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
        state.record(stage, seconds, commands=commands(result))
        log(f"stage {stage}: {seconds:.1f} s")
        return result

    timed("data", lambda: stage_data(config, out),
          done=lambda: (out / "data" / "data.json").is_file())
    timed("labels", lambda: stage_labels(config, out), commands=lambda c: c)
    timed("reward_models", lambda: stage_reward_models(config, out),
          done=lambda: _rm_complete(work_dir(out) / "rm-ai") and
          _rm_complete(work_dir(out) / "rm-human"),
          commands=lambda c: c)
    timed("rm_accuracy", lambda: stage_rm_accuracy(config, out),
          done=lambda: (out / "rm_accuracy.json").is_file())
    for run, _, reward in RUNS:
        timed(f"rl_{run}", lambda run=run, reward=reward: stage_rl(config, out, run, reward),
              done=lambda run=run: _rl_done(work_dir(out) / "runs" / run, config.rl_steps))
    timed("evaluate", lambda: stage_evaluate(config, out), commands=lambda c: [c])
    start = time.perf_counter()
    report = write_report(config, out)
    state.record("report", time.perf_counter() - start)
    return report


def _rl_done(folder: Path, steps: int) -> bool:
    from agents.train import find_checkpoint

    checkpoint = find_checkpoint(folder)
    return checkpoint is not None and _read_json(checkpoint / "state.json")["step"] >= steps


# =========================================================================== report


def _pct(value: float | None) -> str:
    return "–" if value is None else pct(value)


def _ci(low: float | None, high: float | None) -> str:
    return "–" if low is None else f"[{_pct(low)}, {_pct(high)}]"


def _paper(entry: tuple[float, str] | None) -> str:
    if entry is None:
        return "–"
    value, how = entry
    return f"{_pct(value)}" + ("" if how == "paper" else " (s)")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass
class LabelSet:
    """One labels file with a single labeler configuration."""

    path: Path
    records: list[dict[str, Any]]
    judge: str
    prompt: str
    cot: bool
    shots: int

    @property
    def config(self) -> tuple[str, bool, int]:
        return (self.prompt, self.cot, self.shots)


def load_label_sets(folder: Path, notes: list[str]) -> list[LabelSet]:
    """The TL;DR labels files of ``folder`` that hold one labeler configuration each
    (others are skipped with a note)."""
    from rewards.alignment import read_labels_jsonl

    sets = []
    for path in sorted(folder.glob("*.jsonl")):
        records = read_labels_jsonl(path).records
        configs = {(r.get("task"), r.get("judge"), r.get("prompt"), bool(r.get("cot")),
                    int(r.get("shots") or 0)) for r in records}
        if len(configs) != 1:
            notes.append(f"{path}: skipped ({len(configs)} labeler configurations)")
            continue
        task, judge, prompt, cot, shots = configs.pop()
        if task != "tldr":
            continue
        sets.append(LabelSet(path, records, str(judge), str(prompt), cot, shots))
    return sets


def _common(sets: Sequence[LabelSet]) -> set[str]:
    ids = [{str(r["id"]) for r in s.records if r.get("human_choice") is not None}
           for s in sets]
    return set.intersection(*ids) if ids else set()


def _report_on(s: LabelSet, ids: set[str]) -> Any:
    from rewards.alignment import alignment_report

    return alignment_report([r for r in s.records if str(r["id"]) in ids], source=str(s.path))


def _size(judge: str) -> float:
    return MODEL_SIZES.get(judge, 0.0)


def alignment_tables(sets: Sequence[LabelSet], main_judge: str) -> tuple[str, str, str]:
    """Markdown Tables 2, 3 and 4 from the label sets."""
    from rewards.evaluation import proportion

    # Table 2: per judge, its prompt configurations on the ids all of them labeled
    rows2 = []
    by_judge: dict[str, list[LabelSet]] = {}
    for s in sets:
        by_judge.setdefault(s.judge, []).append(s)
    judges = sorted(by_judge, key=lambda j: (j != main_judge, -_size(j), j))
    for judge in judges:
        group = sorted(by_judge[judge], key=lambda s: s.config)
        ids = _common(group)
        for s in group:
            r = _report_on(s, ids)
            rows2.append([judge, s.prompt, "yes" if s.cot else "no", s.shots, r.n,
                          _pct(r.z_acc), _ci(r.ci_low, r.ci_high),
                          _paper(PAPER["table2"].get(s.config)), f"`{s.path.name}`"])
    t2 = _md_table(["labeler", "preamble", "CoT", "shots", "N", "alignment", "95% CI",
                    "paper (PaLM 2 L)", "labels file"], rows2)

    base = sorted([s for s in sets if s.config == ("base", False, 0)],
                  key=lambda s: (-_size(s.judge), s.judge))
    ids = _common(base)
    rows3, rows4 = [], []
    for k, s in enumerate(base):
        r = _report_on(s, ids)
        paper3 = PAPER["table3"][k] if k < len(PAPER["table3"]) else None
        paper4 = PAPER["table4"][k] if k < len(PAPER["table4"]) else None
        rows3.append([s.judge, r.n, _pct(r.z_acc), _ci(r.ci_low, r.ci_high),
                      f"{paper3[0]}: {_paper(paper3[1:])}" if paper3 else "–"])
        same = r.same_first + r.same_second
        pos = proportion(same, r.n_position) if r.n_position else None
        rows4.append([s.judge, r.n_position, _pct(pos.rate if pos else None),
                      _ci(pos.ci_low if pos else None, pos.ci_high if pos else None),
                      r.favoured_position, f"{paper4[0]}: {_paper(paper4[1:])}" if paper4
                      else "–"])
    t3 = _md_table(["labeler (largest first)", "N", "alignment", "95% CI",
                    "paper (matched by size rank only)"], rows3)
    t4 = _md_table(["labeler (largest first)", "N (both orders)", "same position",
                    "95% CI", "favours", "paper (matched by size rank only)"], rows4)
    return t2, t3, t4


def plot_learning_curves(out: Path, path: Path) -> Path:
    """Reward, KL, completion length and penalized reward per step of the three runs."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from agents.train import read_metrics

    fig = Figure(figsize=(11, 7), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2)
    panels = (("reward", "raw reward (scales differ: RM score vs direct [-1, 1])"),
              ("kl", "KL(policy || SFT) per sequence"),
              ("completion_length", "completion length (tokens)"),
              ("penalized_reward", "(1 - beta) r - beta KL"))
    for run, name, reward in RUNS:
        rows = read_metrics(work_dir(out) / "runs" / run / "metrics.csv")
        if not rows:
            continue
        steps = [r["step"] for r in rows]
        for ax, (column, _) in zip(axes.flat, panels, strict=True):
            ax.plot(steps, [r[column] for r in rows], marker="o", ms=3,
                    label=f"{name} ({reward})")
    for ax, (_, title) in zip(axes.flat, panels, strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    return path


def _table1(summary: dict[str, Any], judge: str) -> str:
    rows = []
    for c in summary["comparisons"]:
        key = f"{c['a']} vs {c['b']}"
        w, lc = c["win_rate"], c["length_controlled"]
        rows.append(["TL;DR", key, w["n"], _pct(w["rate"]), _ci(w["ci_low"], w["ci_high"]),
                     w["ties"], _pct(lc["rate"]), _ci(lc["ci_low"], lc["ci_high"]),
                     _paper(PAPER["table1"].get(("tldr", key))),
                     _paper(PAPER["length_controlled"].get(("tldr", key)))])
    for (task, key), entry in PAPER["table1"].items():
        if task != "tldr":
            rows.append([{"helpful": "helpful", "harmless": "harmless"}[task], key, "–",
                         "not run", "–", "–", "–", "–", _paper(entry), "–"])
    return _md_table(["task", "comparison", "N", f"win rate (judge {judge})", "95% CI",
                      "ties", "length-controlled", "95% CI (bootstrap)", "paper (humans)",
                      "paper length-controlled"], rows)


def _lengths_table(summary: dict[str, Any]) -> str:
    rows = []
    for name, p in summary["policies"].items():
        length = p["lengths"]
        rows.append([name, p["spec"], p["step"] if p["step"] is not None else "–", length["n"],
                     f"{length['mean_tokens']:.1f}", f"{length['mean_words']:.1f}",
                     f"{length['mean_chars']:.0f}", p["empty_completions"],
                     p["length_limit_hits"]])
    return _md_table(["policy", "spec", "RL steps", "N", "mean tokens", "mean words",
                      "mean chars", "empty", "hit max tokens"], rows)


def _table5(rm: dict[str, Any], ai_labels: Any, data: dict[str, Any]) -> str:
    rows = []
    for name, title in (("rm-ai", "AI-RM (RLAIF)"), ("rm-human", "human-RM (RLHF)")):
        r = rm[name]
        rows.append([title, r["label_source"], r["train_examples"], r["n"], _pct(r["accuracy"]),
                     _ci(r["ci_low"], r["ci_high"]), "–" if r["ties"] is None else r["ties"],
                     "– (not verified)"])
    if ai_labels is not None:
        rows.append(["AI labels themselves (on the train pairs)", "ai", "–", ai_labels.n,
                     _pct(ai_labels.z_acc), _ci(ai_labels.ci_low, ai_labels.ci_high),
                     ai_labels.n_ties, "–"])
    table = _md_table(["reward model", "labels", "train pairs", "N (held-out)", "accuracy",
                       "95% CI", "ties", "paper"], rows)
    return table + (f"\n\nHeld-out pairs: {data['rm_eval_pairs_used']} of the "
                    f"{data['test_side_pairs']} comparisons ({data['test_side_posts']} posts) on "
                    "the test side of the post split; "
                    "accuracy = the RM scores the human-preferred summary higher (ties half).")


def _timing(state: dict[str, Any], out: Path) -> str:
    rows = []
    for stage, entry in state["stages"].items():
        runs = entry["runs"]
        rows.append([stage, f"{entry['seconds']:.1f}", len(runs),
                     sum(1 for r in runs if r["skipped"])])
    total = sum(e["seconds"] for e in state["stages"].values())
    rows.append(["**total**", f"{total:.1f}", "", ""])
    return _md_table(["stage", "wall time (s, summed over invocations)", "invocations",
                      "skipped (cached)"], rows)


def _rates(state: dict[str, Any], out: Path, config: ReproduceConfig,
           summary: dict[str, Any]) -> tuple[str, dict[str, float]]:
    """Measured per-unit costs of this run, and what the FULL defaults would take."""
    from agents.train import read_metrics

    rates: dict[str, float] = {}
    steps = [r for run, _, _ in RUNS
             for r in read_metrics(work_dir(out) / "runs" / run / "metrics.csv")]
    if steps:
        tokens = config.rl_batch_size * config.max_new_tokens
        rates["rl_s_per_episode_token"] = sum(r["time"] for r in steps) / len(steps) / tokens
    # per-unit costs from the work the evaluate calls did themselves, summed over calls
    # (a resumed call that reuses cached completions or judgments spends ~no time on them)
    work = summary.get("work_total")
    if work is None:  # written before work_total existed: one fresh call did everything
        wall = summary.get("wall_time_s", {})
        work = {"judging_s": wall.get("judging"), "generation_s": wall.get("generation"),
                "judgments_made": len(summary["comparisons"]) * summary["n_prompts"],
                "completions_sampled": len(summary["policies"]) * summary["n_prompts"]}
    if work.get("judging_s") and work.get("judgments_made"):
        rates["judge_s_per_comparison"] = work["judging_s"] / work["judgments_made"]
    if work.get("generation_s") and work.get("completions_sampled"):
        rates["gen_s_per_completion_token"] = work["generation_s"] / \
            work["completions_sampled"] / config.max_new_tokens
    stages = state["stages"]
    pairs = max(1, int(_read_json(out / "data" / "data.json")["train_pairs_used"]))
    jobs = 1 if config.labels_from else len(dict.fromkeys(
        [config.judge, *config.labelers])) + len([p for p in config.alignment_prompts
                                                  if p != "base"])
    if stages.get("labels", {}).get("seconds"):
        rates["label_s_per_pair"] = stages["labels"]["seconds"] / (pairs * jobs)
    if stages.get("reward_models", {}).get("seconds"):
        rates["rm_s_per_pair_epoch"] = stages["reward_models"]["seconds"] / (
            2 * pairs * config.rm_epochs)
    full_jobs = len(dict.fromkeys([FULL["judge"], *FULL["labelers"]])) + \
        len(FULL["alignment_prompts"]) - 1
    counts = {
        "label_s_per_pair": (FULL["n_train_pairs"] * full_jobs,
                             f"{FULL['n_train_pairs']} pairs x {full_jobs} labeler configs"),
        "rm_s_per_pair_epoch": (2 * FULL["n_train_pairs"] * FULL["rm_epochs"],
                                f"2 RMs x {FULL['n_train_pairs']} pairs x {FULL['rm_epochs']}"),
        "rl_s_per_episode_token": (len(RUNS) * FULL["rl_steps"] * FULL["rl_batch_size"]
                                   * FULL["max_new_tokens"],
                                   f"{len(RUNS)} runs x {FULL['rl_steps']} steps x "
                                   f"{FULL['rl_batch_size']} episodes x "
                                   f"{FULL['max_new_tokens']} tokens"),
        "gen_s_per_completion_token": ((len(RUNS) + 1) * FULL["eval_n"] * FULL["max_new_tokens"],
                                       f"{len(RUNS) + 1} policies x {FULL['eval_n']} x "
                                       f"{FULL['max_new_tokens']} tokens"),
        "judge_s_per_comparison": (len(COMPARISONS) * FULL["eval_n"],
                                   f"{len(COMPARISONS)} pairs x {FULL['eval_n']} prompts"),
    }
    rows, total = [], 0.0
    for key, value in rates.items():
        count, what = counts[key]
        total += value * count
        rows.append([key, f"{value:.3g}", what, f"{value * count / 60:.1f}"])
    if not rows:
        return "(nothing measured yet)", rates
    rows.append(["**total**", "", "", f"{total / 60:.1f}"])
    table = _md_table(["unit cost (this run)", "seconds", "count at the FULL defaults",
                       "projected minutes"], rows)
    note = ("\n\nThe projection multiplies this run's unit costs by the FULL default sizes "
            "(`rlaif_gym.pipelines.reproduce.FULL`). It holds only for the same models and "
            "machine load: "
            "a quick run with a smaller judge underestimates the judge-bound stages (labels, "
            "direct reward, evaluation) roughly by the judges' size ratio, while its tiny "
            "batches and per-call overheads (model loads, held-out RM evaluation) inflate the "
            "per-unit costs, so a quick run's projection is only an upper bound.")
    return table + note, rates


def write_report(config: ReproduceConfig, out: Path) -> Path:
    """Write ``OUT/REPORT.md``, ``OUT/learning_curves.png`` and ``OUT/win_rates.png`` from
    the stage outputs (no model is loaded)."""
    from rewards.alignment import alignment_report
    from rlaif_gym.pipelines.evaluate import plot_win_rates

    state = _read_json(out / STATE_FILE)
    data = _read_json(out / "data" / "data.json")
    summary = _read_json(out / "eval" / "evaluation.json")
    rm = _read_json(out / "rm_accuracy.json")
    plot_learning_curves(out, out / "learning_curves.png")
    plot_win_rates(summary, out / "win_rates.png")
    notes: list[str] = []
    label_folder = Path(config.labels_from) if config.labels_from else out / "labels"
    sets = load_label_sets(label_folder, notes)
    t2, t3, t4 = alignment_tables(sets, config.judge)
    rm_labels = label_file(out, config.judge, "base")
    from rewards.alignment import read_labels_jsonl

    ai_labels = alignment_report(read_labels_jsonl(rm_labels).records) \
        if rm_labels.is_file() else None
    rates_text, _ = _rates(state, out, config, summary)
    runs_cfg = []
    for run, name, reward in RUNS:
        cfg_path = work_dir(out) / "runs" / run / "config.json"
        runs_cfg.append(f"- {name}: reward `{reward}`, config `{shown_path(cfg_path)}` "
                        f"(`TrainConfig`; the prompts are `env_options.prompts` = the "
                        f"{data['rl_prompts']} posts of "
                        f"`{shown_path(out / 'data' / 'rl_ids.json')}`)")
    commands = [c for entry in state["stages"].values() for c in entry.get("commands", [])]
    invocations = list(dict.fromkeys(i["command"] for i in state["invocations"]
                                     if i.get("command")))
    quick = " (quick mode)" if config.quick else ""
    gen = summary["generation"]
    sections = [
        f"# RLAIF vs RLHF at small scale: reproduction report{quick}",
        "Lee et al. 2023, *RLAIF vs. RLHF* (arXiv 2309.00267), scaled down to a CPU with the "
        "models packaged with rlaif-gym. Every number of ours below is computed from files in "
        f"`{shown_path(out)}` by `rlaif_gym.pipelines.reproduce.write_report`; the paper's "
        "numbers come from the "
        "`PAPER` dict in `rlaif_gym/pipelines/reproduce.py`.",
        "## What is compared, and how this differs from the paper\n\n"
        f"- **SFT** = the start policy `{config.policy}` as packaged" +
        (" (an instruction-tuned model, not fine-tuned on TL;DR)"
         if "instruct" in config.policy else "") +
        ". **RLAIF**, **RLHF**, **d-RLAIF** = REINFORCE with KL "
        f"control from that policy for {config.rl_steps} steps of {config.rl_batch_size} "
        f"episodes (lr {config.lr}, beta {config.kl_coef}, temperature {config.temperature}, "
        f"{config.max_new_tokens} new tokens; a learned value baseline, a copy of the "
        "policy with a scalar head, started at the first batch's mean return), rewarded by "
        f"the AI-RM, the human-RM, or the judge `{config.direct_judge}` scoring directly "
        "(d-RLAIF)" + (f", a smaller judge than the labeler `{config.judge}` because it "
                       "scores every RL episode" if config.direct_judge != config.judge
                       else "") + ".\n"
        f"- RMs: `{config.rm_base}` with a scalar head, {config.rm_epochs} epoch(s) on the "
        f"same {data['train_pairs_used']} train-side comparisons: AI soft labels from "
        f"`{config.judge}` (base preamble, 0-shot, both orders) vs the human choices.\n"
        f"- **Win rates are judged by `{summary['judge']}`, not by human raters** (the paper "
        "uses humans); when the judge also labeled the AI-RM data it may favour RLAIF. Both "
        "orders are averaged, ties count half, 95% Wilson intervals. Length-controlled win "
        "rates follow Appendix J (logistic regression of the win on the log length ratio, "
        "character lengths, evaluated at equal length; percentile bootstrap CI).\n"
        "- Only TL;DR is run; the helpful/harmless rows of Table 1 show the paper's numbers "
        "only (`rlaif-gym evaluate --task harmless` computes harmless rates).",
        "## Data\n\n" + _md_table(["what", "value"], [[k, v] for k, v in data.items()]) +
        "\n\nComparisons are split by post (`rewards.reward_model.split_pairs`, test fraction "
        f"{config.test_fraction}, seed {config.seed}); the labeled train pairs are a seeded "
        "random subset of the train side. Evaluation prompts are a seeded sample of the posts, "
        "disjoint from the RL prompts.",
        "## Table 1: win rates (cf. paper Table 1)\n\n" + _table1(summary, summary["judge"]) +
        f"\n\nN = held-out prompts judged per comparison; one completion per policy and prompt "
        f"(temperature {gen['temperature']}, {gen['max_new_tokens']} new tokens, seed "
        f"{gen['seed']}). Paper numbers: human evaluation; \"(s)\" = verified only in "
        "secondary sources (see below). Win-rate bars with CIs: `win_rates.png`.\n\n"
        "![win rates](win_rates.png)\n\n**Completion lengths** (the length-controlled rates "
        "above correct for these):\n\n" + _lengths_table(summary),
        "## Table 2: AI labeler alignment by prompt (cf. paper Table 2)\n\n" + t2 +
        "\n\nAlignment = share of pairs where the AI label (both orders averaged) picks the "
        "human-preferred summary (ties half), on the pairs every configuration of that "
        "labeler labeled (N). Labels from "
        f"`{shown_path(label_folder)}`" + (" (--labels-from)." if config.labels_from else "."),
        "## Table 3: alignment by labeler size (cf. paper Table 3)\n\n" + t3 +
        "\n\nBase preamble, 0-shot, no CoT, on the pairs all these labelers labeled.",
        "## Table 4: position bias (cf. paper Table 4 / Appendix B)\n\n" + t4 +
        "\n\nSame position = the labeler prefers the same shown position in both orders "
        "(its preference flips with the order); 95% Wilson CI.",
        "## Table 5: reward-model accuracy on held-out human preferences\n\n" +
        _table5(rm, ai_labels, data),
        "## Learning curves\n\n![learning curves](learning_curves.png)\n\nPer-run curves: "
        + ", ".join(f"`{WORK}/runs/{run}/curves.png`" for run, _, _ in RUNS) + ".",
        "## Paper numbers: where they come from\n\n" +
        "\n".join(f"- {s}" for s in PAPER_SOURCES) +
        "\n- Left out because we could not verify them: " + "; ".join(PAPER_LEFT_OUT) + ".",
        "## Commands, seeds, wall time\n\nReproduce with:\n\n```\n" +
        "\n".join(invocations) + "\n```\n\nStages called these public functions "
        "(in-process):\n\n```\n" +
        "\n".join(commands) + "\n```\n\nRL runs (`agents.train.train`, no CLI flag for a "
        "prompt subset):\n\n" + "\n".join(runs_cfg) +
        f"\n\nSeed {config.seed} everywhere (post split, label subset, prompt sample, RM init "
        "and order, RL prompt schedule and sampling, evaluation sampling, bootstrap).\n\n" +
        _timing(state, out) + "\n\n### Sizing\n\n" + SIZING_NOTE + "\n\n" + rates_text,
    ]
    if notes:
        sections.append("## Notes\n\n" + "\n".join(f"- {n}" for n in notes))
    return atomic_write(out / REPORT_FILE, "\n\n".join(sections) + "\n")


# =========================================================================== settings


#: Size settings that ``--quick`` changes (their defaults: :data:`FULL` or :data:`QUICK`).
SIZE_KEYS: tuple[str, ...] = tuple(k for k in FULL if k not in ("judge", "direct_judge"))


def default_out(quick: bool) -> str:
    """Where a run goes when no ``out`` is given: ``runs/reproduce`` or
    ``runs/reproduce-quick`` (the committed example reports live in ``reports/``, so a
    user's run never collides with them)."""
    return "runs/reproduce-quick" if quick else "runs/reproduce"


def make_config(*, quick: bool = False, out: str | None = None, judge: str | None = None,
                direct_judge: str | None = None, **options: Any) -> ReproduceConfig:
    """A :class:`ReproduceConfig` whose unset sizes come from :data:`FULL` (or :data:`QUICK`
    with ``quick=True``). Options that are None keep their defaults.

    ``direct_judge`` defaults to the size's d-RLAIF judge, or to ``judge`` when a judge is
    given.

    Raises:
        ValueError: an unknown option or a bad value (from :class:`ReproduceConfig`).
    """
    base = QUICK if quick else FULL
    fields = {f.name for f in dataclasses.fields(ReproduceConfig)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise UsageError(f"unknown reproduce options {unknown}")
    given = {k: v for k, v in options.items() if v is not None}
    for key in SIZE_KEYS:
        given.setdefault(key, base[key])
    for key in ("labelers", "alignment_prompts"):
        given[key] = tuple(given[key])
    return ReproduceConfig(
        out=out or default_out(quick), quick=quick, judge=judge or base["judge"],
        direct_judge=direct_judge or (base["direct_judge"] if judge is None else None),
        **given)


def describe_config(config: ReproduceConfig) -> str:
    """A ``rlaif-gym reproduce`` command line equivalent to ``config`` (for the report)."""
    parts = ["--quick"] if config.quick else []
    parts += ["--out", shown_path(config.out)]
    if config.data_dir:
        parts += ["--data-dir", shown_path(config.data_dir)]
    if config.source != "auto":
        parts += ["--source", config.source]
    if config.labels_from:
        parts += ["--labels-from", shown_path(config.labels_from)]
    parts += ["--policy", config.policy, "--judge", config.judge, "--rm-base",
              str(config.rm_base), "--direct-judge", str(config.direct_judge)]
    base = QUICK if config.quick else FULL
    for name in SIZE_KEYS:
        value = getattr(config, name)
        if value != base[name]:
            text = ",".join(value) if isinstance(value, tuple) else str(value)
            parts += ["--" + name.replace("_", "-"), text]
    if config.threads:
        parts += ["--threads", str(config.threads)]
    parts += ["--seed", str(config.seed)]
    return "rlaif-gym reproduce " + shlex.join(parts)
