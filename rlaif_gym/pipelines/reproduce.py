"""The paper's pipeline end to end at small scale (``rlaif-gym reproduce``).

Lee et al. 2023 (arXiv 2309.00267) on Reddit TL;DR and Anthropic HH (helpful, harmless),
scaled down to a CPU. For each task::

    data      evaluation prompts (a seeded sample, never trained on), the SFT / RL prompts
              (the rest), the human comparisons split by context into the RM train side
              and the held-out side
    sft       the start policy fine-tuned on the references of the training prompts
              (:func:`agents.sft.train_sft`); every RL run starts from it
    labels    AI preference labels of the RM train pairs with the task's default labeler
              (:data:`rewards.preference.DEFAULT_PROMPTS`: PMI for TL;DR, the paper's Base
              prompt for HH; TL;DR also Base, to compare the RMs they make); labels of the
              same labeler already in ``labels_from`` are reused, not computed again
    rm        AI-RM and human-RM on the same pairs, accuracy on the held-out human choices
    rl        REINFORCE with KL control from the SFT policy: RLAIF (AI-RM), RLHF (human-RM);
              on TL;DR also d-RLAIF (the judge scoring directly) with several seeds, and
              the self-improvement runs of paper section 4.3 (a 0.5B policy rewarded by the
              0.5B judge, and by the 1.5B judge)
    evaluate  every policy against its SFT start and against the human references, judged
              in both orders; ROUGE-L and the copy overlap with the post; harmless rates

and the report (:mod:`rlaif_gym.pipelines.report`): ``OUT/REPORT.md`` with the SFT row,
Tables 1-5 beside the paper's numbers, the seed spread, the self-improvement row, the
reference win rates and the goals, with PNG curves.

Every stage writes under ``OUT`` (models and runs, gigabytes with the real models, under
the git-ignored ``OUT/work/``) and is skipped or resumed when its outputs exist, so an
interrupted run continues where it stopped (a finished RM or RL run keeps its weights but not
its optimizer state: the pipeline never extends one); ``OUT/state.json`` records the settings (a
rerun with other settings is refused: use another ``out``) and every stage's wall time.
``quick=True`` runs the same stages at tiny sizes (:data:`QUICK`); with
``policy="tiny-random"`` etc. the whole pipeline runs in seconds (the tests do that).
"""

from __future__ import annotations

import gc
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rlaif_gym.files import read_json, read_jsonl, write_json, write_jsonl
from rlaif_gym.pipelines.reproduce_plan import (
    FULL,
    QUICK,
    REPORT_FILE,
    SIZE_KEYS,
    STATE_FILE,
    Evaluation,
    ReproduceConfig,
    ReproduceError,
    Run,
    call_text,
    data_dir_of,
    default_out,
    describe_config,
    evaluations_of,
    label_file,
    label_jobs,
    make_config,
    rm_dir,
    rm_jobs,
    run_dir,
    runs_of,
    sft_dir,
    start_policy,
)

__all__ = [
    "FULL",
    "QUICK",
    "REPORT_FILE",
    "SIZE_KEYS",
    "ReproduceConfig",
    "ReproduceError",
    "default_out",
    "make_config",
    "reproduce",
]


# =========================================================================== helpers


def _log(line: str) -> None:
    print(f"[reproduce] {line}", file=sys.stderr, flush=True)



class State:
    """``OUT/state.json``: the run's settings, stage wall times and calls."""

    def __init__(self, out: Path, config: ReproduceConfig) -> None:
        self.path = out / STATE_FILE
        if self.path.is_file():
            self.data = read_json(self.path)
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
        write_json(self.path, self.data)

    def record(self, stage: str, seconds: float, *, skipped: bool = False,
               calls: Sequence[str] = ()) -> None:
        entry = self.data["stages"].setdefault(stage, {"seconds": 0.0, "runs": []})
        if not skipped:
            entry["seconds"] += seconds
        entry["runs"].append({"seconds": round(seconds, 2), "skipped": skipped,
                              "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
        if calls:
            entry["calls"] = list(calls)
        self.save()



def _done(call: str) -> str:
    _log(call)
    gc.collect()
    return call



# =========================================================================== data


def _pair_row(p: Any, task: str) -> dict[str, Any]:
    return {"id": p.id, "task": task, "context": p.context, "responses": list(p.responses),
            "human_choice": p.human_choice, "confidence": p.confidence}


def stage_data(config: ReproduceConfig, out: Path) -> dict[str, Any]:
    """Per task: the evaluation prompts, the SFT/RL prompts and the RM pairs (``OUT/data``).

    TL;DR's RM pairs are its high-confidence human comparisons, HH's the first ``rm_pool``
    pairs of the split (the pairs the committed labels cover). Comparisons are split by
    context (:func:`rewards.reward_model.split_pairs`); the labeled train pairs are a
    seeded subset of the train side. The evaluation prompts are a seeded sample of the
    task's prompts outside the RM pairs' contexts; the rest are the SFT and RL prompts.
    """
    import numpy as np

    from rewards.reward_model import PairSplit, split_pairs
    from rlaif_gym.data import load_preference_pairs
    from rlaif_gym.tasks import get_task

    summary: dict[str, Any] = {}
    for task in config.tasks:
        folder = data_dir_of(out, task)
        if (folder / "data.json").is_file():
            summary[task] = read_json(folder / "data.json")
            continue
        pairs = load_preference_pairs(task, data_dir=config.data_dir, source=config.source,
                                      high_confidence=task == "tldr")
        pool = list(pairs) if task == "tldr" else list(pairs)[:config.rm_pool]
        split = split_pairs(pool, config.test_fraction, config.seed,
                            source=str(getattr(pairs, "source", "")))
        train_side = [p for p in pool if p.id in split.side("train")]
        test_side = [p for p in pool if p.id in split.side("test")]
        rng = np.random.default_rng(config.seed)
        chosen = [train_side[int(i)] for i in rng.permutation(len(train_side))
                  [:config.n_train_pairs]]
        if config.rm_eval_pairs:  # a seeded subset of the held-out side, in file order
            keep = sorted(int(i) for i in rng.permutation(len(test_side))
                          [:config.rm_eval_pairs])
            test_side = [test_side[i] for i in keep]
        write_jsonl(folder / "train_pairs.jsonl", [_pair_row(p, task) for p in chosen])
        write_jsonl(folder / "rm_pairs.jsonl", [_pair_row(p, task)
                                                for p in chosen + test_side])
        PairSplit(train=tuple(p.id for p in chosen), test=tuple(p.id for p in test_side),
                  seed=config.seed, test_fraction=config.test_fraction, task=task,
                  source=split.source).save(folder / "rm_split.json")

        prompts = get_task(task).load_prompts(split="test", data_dir=config.data_dir,
                                              source=config.source)
        contexts = {p.context for p in pool}
        usable = [p for p in prompts if p.text not in contexts and p.reference]
        n_eval = config.eval_n if task == "tldr" else config.eval_n_small
        needed = n_eval + max(config.rl_batch_size, 2)
        if len(usable) < needed:
            raise ReproduceError(f"{task}: {len(usable)} prompts outside the RM pairs: too "
                                 f"few for {n_eval} evaluation prompts and training")
        order = np.random.default_rng(config.seed).permutation(len(usable))
        eval_ids = [str(usable[int(i)].id) for i in order[:n_eval]]
        train_ids = [str(usable[int(i)].id) for i in order[n_eval:]]
        write_json(folder / "eval_ids.json", eval_ids)
        write_json(folder / "train_ids.json", train_ids)
        summary[task] = {
            "comparisons_source": str(getattr(pairs, "source", "")),
            "rm_pool_pairs": len(pool), "rm_pool_contexts": len(contexts),
            "train_side_pairs": len(train_side), "test_side_pairs": len(test_side),
            "test_side_contexts": len({p.context for p in test_side}),
            "train_pairs_used": len(chosen),
            "prompts_source": str(getattr(prompts, "source", "")), "prompts": len(prompts),
            "prompts_outside_rm_pairs": len(usable), "eval_prompts": len(eval_ids),
            "train_prompts": len(train_ids),
        }
        write_json(folder / "data.json", summary[task])
    return summary


def _prompts(config: ReproduceConfig, out: Path, task: str, which: str) -> list[Any]:
    """The task's ``"eval"`` or ``"train"`` prompt records, in the stage's order."""
    from rlaif_gym.tasks import get_task

    ids = read_json(data_dir_of(out, task) / f"{which}_ids.json")
    by_id = {str(p.id): p for p in get_task(task).load_prompts(
        split="test", data_dir=config.data_dir, source=config.source)}
    return [by_id[i] for i in ids]


# =========================================================================== SFT


def stage_sft(config: ReproduceConfig, out: Path, self_improvement: bool = True) -> list[str]:
    """Per task, the start policy fine-tuned on the references of its training prompts
    (never an evaluation prompt); on TL;DR also the self-improvement policy (unless
    ``self_improvement`` is False)."""
    from agents.sft import SFTConfig, train_sft

    jobs = [("sft", task, config.policy) for task in config.tasks]
    if "tldr" in config.tasks and self_improvement:
        jobs.append(("si-sft", "tldr", config.si_policy))
    calls = []
    for start, task, policy in jobs:
        folder = sft_dir(out, start, task)
        if (folder / "metrics.json").is_file() and (folder / "policy").is_dir():
            continue
        kwargs = dict(task=task, policy=policy, data_dir=config.data_dir,
                      source=config.source, split="test",
                      exclude_ids=read_json(data_dir_of(out, task) / "eval_ids.json"),
                      max_train=config.sft_train, heldout_n=config.sft_heldout,
                      epochs=float(config.sft_epochs),
                      lr=config.sft_lr,
                      train_last_layers=config.sft_last_layers or None,
                      max_prompt_tokens=config.max_prompt_tokens,
                      eval_max_new_tokens=(config.max_new_tokens,),
                      temperature=config.temperature, seed=config.seed,
                      threads=config.threads, device=config.device,
                      resume=folder.exists(), progress=False)
        train_sft(SFTConfig(out_dir=str(folder), **kwargs))
        shown = {k: (f"{len(v)} evaluation ids" if k == "exclude_ids" else v)
                 for k, v in kwargs.items()}
        calls.append(_done(call_text("train_sft", out_dir=str(folder), **shown)))
    return calls


# =========================================================================== labels


def reuse_labels(target: Path, folder: Path, config: dict[str, Any],
                 ids: set[str]) -> int:
    """Copy into a new ``target`` the labels of ``ids`` that a file of ``folder`` holds for
    the same labeler ``config`` (task, judge, prompt, cot, shots, no template); returns how
    many. Nothing is done when ``target`` exists (the labeling resumes it)."""
    if target.exists() or not folder.is_dir():
        return 0
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.jsonl")):
        for record in read_jsonl(path).records:
            same = all(record.get(k) == v for k, v in config.items()) and \
                record.get("template") is None and record.get("calibration") is None
            if same and str(record.get("id")) in ids:
                found.setdefault(str(record["id"]), record)
    if found:
        write_jsonl(target, found.values())
    return len(found)


def stage_labels(config: ReproduceConfig, out: Path) -> list[str]:
    """AI labels of every task's RM train pairs (:func:`label_jobs`), resumable; labels of
    the same labeler in ``labels_from`` are reused."""
    from rlaif_gym.pipelines.label import label_to_file

    calls = []
    for task, prompt in label_jobs(config):
        pairs = data_dir_of(out, task) / "train_pairs.jsonl"
        target = label_file(out, task, config.judge, prompt)
        if config.labels_from:
            ids = {str(r["id"]) for r in read_jsonl(pairs).records}
            reused = reuse_labels(target, Path(config.labels_from),
                                  {"task": task, "judge": config.judge, "prompt": prompt,
                                   "cot": False, "shots": 0}, ids)
            if reused:
                _log(f"{task} {prompt}: reused {reused} labels of {config.labels_from}")
        kwargs = {"task": task, "pairs": str(pairs), "judge": config.judge, "prompt": prompt,
                  "threads": config.threads}
        label_to_file(target, **kwargs, progress=False, log=_log)
        calls.append(_done(call_text("label_to_file", str(target), **kwargs)))
    return calls


# =========================================================================== reward models


def _rm_complete(folder: Path) -> bool:
    meta = folder / "rm_meta.json"
    return meta.is_file() and bool(read_json(meta).get("complete"))


def stage_reward_models(config: ReproduceConfig, out: Path) -> list[str]:
    """Every RM of :func:`rm_jobs`, on the same train pairs of its task."""
    from rlaif_gym.pipelines.reward_models import train_rm

    calls = []
    for task, name, source in rm_jobs(config, out):
        folder = rm_dir(out, task, name)
        if _rm_complete(folder):
            continue
        data = data_dir_of(out, task)
        kwargs = {**source, "task": task, "pairs": str(data / "rm_pairs.jsonl"),
                  "split_file": str(data / "rm_split.json"), "base": config.rm_base,
                  "epochs": config.rm_epochs, "batch_size": config.rm_batch_size,
                  "max_length": config.rm_max_length, "lr": config.rm_lr,
                  "seed": config.seed, "threads": config.threads, "device": config.device,
                  "keep_training_state": False,
                  "resume": (folder / "rm_meta.json").is_file()}
        train_rm(folder, **kwargs, progress=False, log=_log)
        calls.append(_done(call_text("train_rm", str(folder), **kwargs)))
    return calls


def stage_rm_accuracy(config: ReproduceConfig, out: Path) -> dict[str, Any]:
    """Held-out pairwise accuracy of every RM against the human choices, and of the labels
    themselves on their train pairs (``OUT/rm_accuracy.json``)."""
    from rewards.alignment import alignment_report
    from rlaif_gym.pipelines.reward_models import evaluate_rm

    path = out / "rm_accuracy.json"
    if path.is_file():
        return read_json(path)
    result: dict[str, Any] = {}
    for task, name, source in rm_jobs(config, out):
        folder = rm_dir(out, task, name)
        data = data_dir_of(out, task)
        meta = read_json(folder / "rm_meta.json")
        n_test = len(read_json(data / "rm_split.json")["test"])
        metrics = meta.get("metrics") or {}
        if metrics.get("eval_n") is not None and metrics["eval_n"] <= n_test:
            entry = {"accuracy": metrics["eval_accuracy"], "n": metrics["eval_n"],
                     "ci_low": metrics["eval_ci_low"], "ci_high": metrics["eval_ci_high"],
                     "from": "train_rm's held-out evaluation"}
        else:
            acc = evaluate_rm(folder, task=task, pairs=data / "rm_pairs.jsonl",
                              split_file=data / "rm_split.json", side="test",
                              threads=config.threads, device=config.device, log=_log)
            entry = {k: acc[k] for k in ("accuracy", "n", "ci_low", "ci_high")}
            entry["from"] = "evaluate_rm"
        entry.update(label_source=meta.get("label_source"),
                     train_examples=meta.get("train_examples"),
                     labels=Path(source["labels"]).name if "labels" in source else "human")
        if "labels" in source:
            labels = alignment_report(read_jsonl(source["labels"]).records)
            entry["labels_alignment"] = {"z_acc": labels.z_acc, "n": labels.n,
                                         "ci_low": labels.ci_low, "ci_high": labels.ci_high,
                                         "position_bias": labels.position_bias}
        result.setdefault(task, {})[name] = entry
    write_json(path, result)
    return result


# =========================================================================== RL


def _rl_done(folder: Path, steps: int) -> bool:
    from agents.train import find_checkpoint

    checkpoint = find_checkpoint(folder)
    return checkpoint is not None and read_json(checkpoint / "state.json")["step"] >= steps


def stage_rl(config: ReproduceConfig, out: Path, run: Run) -> str:
    """One REINFORCE run from its SFT policy (resumed from its checkpoint if any)."""
    from agents.train import TrainConfig, train
    from rlaif_gym.envs.registration import TASK_ENV_IDS

    folder = run_dir(out, run)
    options: dict[str, Any] = {}
    if run.reward in ("ai-rm", "human-rm"):
        options["path"] = str(rm_dir(out, run.task, "rm-ai" if run.reward == "ai-rm"
                                     else "rm-human"))
        if config.device != "cpu":
            options["device"] = config.device
    kwargs = dict(env_id=TASK_ENV_IDS[run.task], reward=run.reward, reward_options=options,
                  policy=start_policy(out, run), judge=run.judge, steps=run.steps,
                  batch_size=config.rl_batch_size, lr=config.lr, kl_coef=config.kl_coef,
                  temperature=config.temperature, max_new_tokens=config.max_new_tokens,
                  max_prompt_tokens=config.max_prompt_tokens, seed=run.seed,
                  checkpoint_every=max(1, min(4, run.steps)), keep_training_state=False,
                  threads=config.threads, device=config.device,
                  baseline=run.baseline, samples_per_prompt=run.samples_per_prompt)
    prompts = _prompts(config, out, run.task, "train")
    # resume=True continues a checkpoint, and starts afresh (dropping a metrics.csv left by
    # a crash before the first checkpoint) when there is none
    train(TrainConfig(out_dir=str(folder), env_options={"prompts": prompts}, progress=False,
                      resume=True, **kwargs))
    config_text = call_text("TrainConfig", out_dir=str(folder),
                            prompts=f"the {len(prompts)} train prompts of data/{run.task}",
                            **kwargs)
    return _done(f"train({config_text})")


# =========================================================================== evaluation


def stage_evaluate(config: ReproduceConfig, out: Path, evaluation: Evaluation, *,
                   sample_only: bool = False, policies: Sequence[Any] | None = None) -> str:
    """One evaluation (its completions and judgments are cached, so a rerun only does what
    is missing). ``sample_only``: sample and compute the judge-free signals, judge nothing
    (a machine without the judge); ``policies``: resolved policies instead of the
    evaluation's specs (:func:`rlaif_gym.pipelines.evaluate.cached_policies`, to judge
    completions sampled elsewhere)."""
    from rlaif_gym.pipelines.evaluate import evaluate_policies

    ids = read_json(data_dir_of(out, evaluation.task) / "eval_ids.json")[:evaluation.n]
    kwargs = {"task": evaluation.task, "policies": list(policies or evaluation.policies),
              "out_dir": str(out / "eval" / evaluation.key),
              "judge": None if sample_only else config.judge,
              "pairs": list(evaluation.pairs), "n": evaluation.n, "split": "test",
              "data_dir": config.data_dir, "source": config.source,
              "max_new_tokens": config.max_new_tokens,
              "max_prompt_tokens": config.max_prompt_tokens,
              "temperature": config.temperature, "seed": config.seed,
              "batch_size": config.eval_batch_size, "n_bootstrap": config.bootstrap,
              "threads": config.threads, "device": config.device}
    evaluate_policies(ids=ids, progress=False, log=_log, **kwargs)
    return _done(call_text("evaluate_policies", ids=f"data/{evaluation.task}/eval_ids.json",
                           **kwargs))


# =========================================================================== all stages


def reproduce(config: ReproduceConfig, log: Callable[[str], None] = _log) -> Path:
    """Run every stage (skipping finished ones) and write the report; returns its path."""
    from rlaif_gym.pipelines.report import write_report

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    state = State(out, config)
    if config.threads:
        import torch

        torch.set_num_threads(config.threads)

    def timed(stage: str, fn: Callable[[], Any], done: Callable[[], bool] | None = None,
              calls: Callable[[Any], Sequence[str]] = lambda result: ()) -> Any:
        if done is not None and done():
            log(f"stage {stage}: outputs exist, skipped")
            state.record(stage, 0.0, skipped=True)
            return None
        log(f"stage {stage} ...")
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
        state.record(stage, seconds, calls=calls(result))
        log(f"stage {stage}: {seconds:.1f} s")
        return result

    timed("data", lambda: stage_data(config, out),
          done=lambda: all((data_dir_of(out, t) / "data.json").is_file()
                           for t in config.tasks))
    timed("sft", lambda: stage_sft(config, out), calls=lambda c: c)
    timed("labels", lambda: stage_labels(config, out), calls=lambda c: c)
    timed("reward_models", lambda: stage_reward_models(config, out), calls=lambda c: c,
          done=lambda: all(_rm_complete(rm_dir(out, t, n)) for t, n, _ in
                           rm_jobs(config, out)))
    timed("rm_accuracy", lambda: stage_rm_accuracy(config, out),
          done=lambda: (out / "rm_accuracy.json").is_file())
    for run in runs_of(config):
        timed(f"rl {run.key}", lambda run=run: stage_rl(config, out, run),
              done=lambda run=run: _rl_done(run_dir(out, run), run.steps),
              calls=lambda c: [c])
    for evaluation in evaluations_of(config, out):
        timed(f"evaluate {evaluation.key}",
              lambda evaluation=evaluation: stage_evaluate(config, out, evaluation),
              calls=lambda c: [c])
    start = time.perf_counter()
    report = write_report(config, out)
    state.record("report", time.perf_counter() - start)
    return report
