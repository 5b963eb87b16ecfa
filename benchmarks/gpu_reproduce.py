"""The reproduction's TL;DR RLAIF and RLHF arms at GPU sizes, in two halves.

A GPU machine here takes at most 64 MiB of files per call and reaches no registry, so
SmolLM2 (98 MB of GGUF, carried in two calls) travels but the judges (0.5 and 1.1 GB) do not.
The half that needs the GPU trains and samples; the half that needs the judge runs where the
judge is. Both call the pipeline's own functions (``rlaif_gym.pipelines.reproduce``'s
stages, ``evaluate_policies``), with the sizes of :data:`GPU`.

Device half (SFT, RMs, RL, sampling; no judge)::

    python benchmarks/gpu_reproduce.py device --out runs/gpu-reproduce --data-dir DATA \\
        --labels-from reports/labels --device cuda --pack $OUT/results.tgz

    data -> SFT (all layers) -> labels (every RM train pair's 1.5B-judge label is reused
    from labels_from: PMI and Base) -> AI-RM (PMI), AI-RM (Base), human-RM -> RLAIF and
    RLHF from the SFT policy -> completions of SFT, RLAIF, RLHF and the references on the
    200 evaluation prompts (``evaluate_policies(judge=None)``: lengths, ROUGE-L, copying).
    After every stage OUT is packed without weights into --pack, so a session cut short
    returns what finished.

Judge half (here, with the 1.5B judge)::

    python benchmarks/gpu_reproduce.py judge --out reports/gpu-reproduce --data-dir DATA \\
        --threads 2

    unpacks nothing itself (extract the tarball into --out first), judges the returned
    completions in both orders (:func:`rlaif_gym.pipelines.evaluate.cached_policies`) and
    writes OUT/REPORT.md.

Smoke test of both halves on the CPU at tiny sizes (minutes)::

    python benchmarks/gpu_reproduce.py device --tiny --out /tmp/gpu-smoke --data-dir DATA \\
        --labels-from reports/labels --device cpu --pack /tmp/gpu-smoke.tgz
    python benchmarks/gpu_reproduce.py judge --tiny --out /tmp/gpu-smoke --data-dir DATA \\
        --judge qwen2.5-coder-0.5b-instruct
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from rlaif_gym.defaults import DEFAULT_POLICY
from rlaif_gym.files import read_json, write_json
from rlaif_gym.pipelines.reproduce_plan import ReproduceConfig, make_config

#: GPU sizes: every train-side pair, full SFT, 64 episodes per RL update, 200 evaluation
#: prompts (the issue's goal size). The rest as ``FULL``.
GPU: dict[str, Any] = {
    "sft_train": 256, "sft_heldout": 32, "sft_epochs": 2, "sft_last_layers": 0,
    "n_train_pairs": 256, "rm_eval_pairs": 0, "rm_epochs": 2, "rm_batch_size": 8,
    "rm_max_length": 384, "rl_steps": 30, "rl_batch_size": 64, "eval_n": 200,
    "eval_n_ref": 200, "eval_n_small": 200, "eval_batch_size": 64,
}
#: The same stages at tiny sizes, for the CPU smoke test.
TINY: dict[str, Any] = {
    "sft_train": 8, "sft_heldout": 2, "sft_epochs": 1, "sft_last_layers": 2,
    "n_train_pairs": 8, "rm_eval_pairs": 8, "rm_epochs": 1, "rm_batch_size": 4,
    "rm_max_length": 256, "rl_steps": 1, "rl_batch_size": 2, "max_new_tokens": 8,
    "max_prompt_tokens": 256, "eval_n": 4, "eval_n_ref": 4, "eval_n_small": 4,
    "eval_batch_size": 4, "bootstrap": 100,
}
STAGES_FILE = "gpu_stages.json"
EVAL_KEY = "tldr-rm"
#: Comparisons judged by the judge half, the Table 1 rows first.
PAIRS = ("RLAIF:SFT", "RLHF:SFT", "RLAIF:RLHF", "RLAIF:REF", "RLHF:REF", "SFT:REF")


def gpu_config(out: str, data_dir: str | None, labels_from: str | None, device: str,
               tiny: bool = False, threads: int | None = None,
               **overrides: Any) -> ReproduceConfig:
    """The reproduction's settings for TL;DR at :data:`GPU` (or :data:`TINY`) sizes;
    ``overrides`` are other :class:`ReproduceConfig` fields (the tests' tiny models)."""
    options: dict[str, Any] = dict(tasks=("tldr",), seeds=(0,), si_policy=DEFAULT_POLICY,
                                   si_judge=DEFAULT_POLICY, **(TINY if tiny else GPU))
    options.update(overrides)
    return make_config(out=out, data_dir=data_dir, labels_from=labels_from, device=device,
                       threads=threads, **options)


def _log(line: str) -> None:
    print(f"[gpu_reproduce {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def pack(out: Path, target: Path) -> None:
    """``out`` without weights, optimizer states or tokenizers as a .tgz at ``target``."""
    skip = (".safetensors", ".pt", ".bin", ".gguf")

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        name = Path(info.name).name
        return None if name.endswith(skip) or name.startswith("tokenizer") else info

    tmp = target.with_name(target.name + ".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(out, arcname=".", filter=keep)
    os.replace(tmp, target)


def run_device(config: ReproduceConfig, pack_to: Path | None) -> None:
    """The device half: every stage that needs no judge, timed, packed after each."""
    from rlaif_gym.pipelines import reproduce as rp
    from rlaif_gym.pipelines.reproduce_plan import runs_of

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    stages_path = out / STAGES_FILE
    stages: dict[str, Any] = read_json(stages_path) if stages_path.is_file() else {}
    stages["config"] = config.pipeline() | {"device": config.device}
    if config.device.startswith("cuda"):
        import torch

        stages["gpu"] = torch.cuda.get_device_name(0)

    def timed(name: str, fn: Any) -> None:
        start = time.perf_counter()
        _log(f"{name} ...")
        fn()
        stages.setdefault("seconds", {})[name] = round(time.perf_counter() - start, 1)
        write_json(stages_path, stages)
        _log(f"{name}: {stages['seconds'][name]} s")
        if pack_to is not None:
            pack(out, pack_to)

    timed("data", lambda: rp.stage_data(config, out))
    timed("sft", lambda: rp.stage_sft(config, out, self_improvement=False))
    timed("labels", lambda: rp.stage_labels(config, out))
    timed("reward_models", lambda: rp.stage_reward_models(config, out))
    timed("rm_accuracy", lambda: rp.stage_rm_accuracy(config, out))
    for run in runs_of(config):
        if run.reward in ("ai-rm", "human-rm"):
            timed(f"rl {run.key}", lambda run=run: rp.stage_rl(config, out, run))
    timed("sample", lambda: rp.stage_evaluate(config, out, _evaluation(config, out),
                                              sample_only=True))


def _evaluation(config: ReproduceConfig, out: Path) -> Any:
    """The reproduction's TL;DR RM-arms evaluation (SFT, RLAIF, RLHF, REF on
    ``eval_n_small`` prompts): both halves use it, so their sampling settings match."""
    from rlaif_gym.pipelines.reproduce_plan import evaluations_of

    return next(e for e in evaluations_of(config, out) if e.key == EVAL_KEY)


def run_judge(config: ReproduceConfig, judge: str, pairs: tuple[str, ...]) -> Path:
    """The judge half: judge the device half's completions, write ``OUT/REPORT.md``."""
    import dataclasses

    from agents.train import read_metrics
    from rlaif_gym.pipelines import reproduce as rp
    from rlaif_gym.pipelines.evaluate import cached_policies, format_tables
    from rlaif_gym.pipelines.report import (
        md_table,
        plot_learning_curves,
        reference_table,
        rm_table,
        sft_table,
    )
    from rlaif_gym.pipelines.reproduce_plan import data_dir_of, run_dir, runs_of

    out = Path(config.out)
    folder = out / "eval" / EVAL_KEY
    start = time.perf_counter()
    rp.stage_evaluate(dataclasses.replace(config, judge=judge), out,
                      dataclasses.replace(_evaluation(config, out), pairs=tuple(pairs)),
                      policies=cached_policies(folder))
    judging_s = time.perf_counter() - start
    summary = read_json(folder / "evaluation.json")
    stages = read_json(out / STAGES_FILE)
    runs = {r.key: read_metrics(run_dir(out, r) / "metrics.csv") for r in runs_of(config)
            if r.reward in ("ai-rm", "human-rm")}
    plot_learning_curves(runs, ("tldr",), out / "learning_curves.png")
    rl_rows = []
    for key, rows in runs.items():
        if rows:
            first, last = rows[: max(1, len(rows) // 5)], rows[-max(1, len(rows) // 5):]

            def mean(rs: list[dict[str, float]], c: str) -> float:
                return sum(r[c] for r in rs) / len(rs)

            rl_rows.append([key, len(rows), f"{mean(first, 'reward'):+.3f}",
                            f"{mean(last, 'reward'):+.3f}", f"{mean(last, 'kl'):.3f}",
                            f"{mean(rows, 'time'):.2f}"])
    data = {"tldr": read_json(data_dir_of(out, "tldr") / "data.json")}
    sizes = md_table(["setting", "value"], [[k, v] for k, v in stages["config"].items()
                                            if k not in ("out", "command")])
    costs = md_table(["stage", "seconds"], list(stages["seconds"].items()) +
                     [[f"judging here ({judge}, this call)", f"{judging_s:.0f}"]])
    text = "\n\n".join([
        "# The TL;DR RLAIF and RLHF arms at GPU sizes",
        f"Trained and sampled on {stages.get('gpu', stages['config']['device'])} by "
        "`benchmarks/gpu_reproduce.py device`; judged here by "
        f"`benchmarks/gpu_reproduce.py judge` with `{judge}` (both orders averaged, ties "
        "half, 95% Wilson intervals). The pipeline's own stage functions at the sizes "
        "below. d-RLAIF and the self-improvement runs need a judge during RL, whose "
        "weights cannot travel to the GPU machine (64 MiB per call), so they are not here.",
        "## Win rates (N = the evaluation prompts)\n\n```\n" + format_tables(summary) +
        "\n```",
        "## Against the human references, ROUGE-L and copying\n\n" +
        reference_table([summary]) + "\n\nCopied 3-grams: the share of a completion's word "
        "3-grams found in its post (`rewards.evaluation.copy_overlap`).",
        "## The SFT start\n\n" + sft_table(out, config),
        "## Reward models (held-out human pairs)\n\n" + rm_table(
            read_json(out / "rm_accuracy.json"), data),
        "## RL (first and last fifth of the steps)\n\n" + md_table(
            ["run", "steps", "reward, first fifth", "reward, last fifth",
             "KL, last fifth", "seconds per step"], rl_rows) +
        "\n\n![learning curves](learning_curves.png)",
        "## Settings\n\n" + sizes,
        "## Wall time per stage\n\n" + costs,
    ]) + "\n"
    report = out / "REPORT.md"
    report.write_text(text, encoding="utf-8")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("half", choices=("device", "judge"))
    parser.add_argument("--out", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--labels-from", default="reports/labels")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="the CPU smoke-test sizes")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--pack", type=Path, default=None, help="device half: the .tgz")
    parser.add_argument("--judge", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--pairs", default=",".join(PAIRS))
    args = parser.parse_args(argv)
    config = gpu_config(args.out, args.data_dir, args.labels_from,
                        args.device if args.half == "device" else "cpu", args.tiny,
                        args.threads)
    if args.half == "device":
        run_device(config, args.pack)
    else:
        report = run_judge(config, args.judge, tuple(args.pairs.split(",")))
        print(json.dumps({"report": str(report)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
