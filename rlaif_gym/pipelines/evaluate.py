"""Compare policies on held-out prompts with an LLM judge (``rlaif-gym evaluate``).

::

    rlaif-gym evaluate --task tldr --data-dir ../shared/data --n 100 \\
        --policy SFT=smollm2-135m-instruct --policy RLAIF=runs/rlaif --pair RLAIF:SFT \\
        --judge qwen2.5-coder-1.5b-instruct --out reports/eval-rlaif

Each ``--policy`` is ``[NAME=]SPEC``: a model spec (:func:`rlaif_gym.models.load_causal_lm`)
or a training run folder of ``rlaif-gym train`` (its ``checkpoint/policy`` is used). Every
policy samples one completion for each of the same ``N`` prompts (a seeded sample of the
``--split`` prompts, or the ids listed in ``--ids``) through the task's vector env
(:func:`agents.rollout.collect_episodes`, the sampler of ``rlaif-gym sample``), with one
shared seed. The judge then labels every requested pair of policies prompt by prompt
(:mod:`rewards.evaluation`: win rates with 95% Wilson intervals, ties count half, and the
length-controlled win rate of the paper's Appendix J), classifies each response for the
harmless task, and the command writes::

    OUT/completions.jsonl   one line per (policy, prompt): text, tokens, length limit hit
    OUT/judgments.jsonl     one line per judge call result (pairwise p_first, P(harmless)),
                            keyed by content, so a rerun only judges what is missing
    OUT/evaluation.json     every number printed, with N, CIs, settings and wall times
    OUT/win_rates.png       win rates with 95% CI error bars (and harmless rates)

Two identical completions are a tie (``p_first = 0.5``) without a judge call (policies that
barely moved from their start often sample the same text under the shared seed).
Completions are reused on a rerun when the policy, its checkpoint step and the sampling
settings are unchanged. Pairs (``--pair A:B`` = win rate of A over B; default: every later
policy over every earlier one) name policies by NAME.

Bad input raises :class:`EvaluationError` (a :class:`~rlaif_gym.errors.UsageError`); an
interruption keeps what was judged so far in ``judgments.jsonl``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlaif_gym.defaults import DEFAULT_JUDGE, DEFAULT_POLICY, TASKS
from rlaif_gym.errors import UsageError
from rlaif_gym.files import (
    JsonlAppender,
    atomic_path,
    read_json,
    read_jsonl,
    write_json,
    write_jsonl,
)
from rlaif_gym.stats import pct

__all__ = [
    "REFERENCE",
    "reference_completions",
    "EvaluationError",
    "PolicyRef",
    "cached_policies",
    "evaluate_policies",
    "format_tables",
    "load_eval_prompts",
    "parse_pairs",
    "plot_win_rates",
    "read_ids_json",
    "resolve_policy",
]

COMPLETIONS_FILE = "completions.jsonl"
JUDGMENTS_FILE = "judgments.jsonl"
EVALUATION_FILE = "evaluation.json"
PLOT_FILE = "win_rates.png"


#: A policy spec that is the task's human reference responses (``--policy REF=reference``):
#: the TL;DR post's own TL;DR, the HH chosen response. Nothing is sampled.
REFERENCE = "reference"


class EvaluationError(UsageError):
    """Bad input to an evaluation (printed as one line, exit code 2)."""


# =========================================================================== policies


@dataclass(frozen=True)
class PolicyRef:
    """A policy to evaluate.

    Attributes:
        name: its label in tables and files.
        spec: as given on the command line.
        model: what :func:`rlaif_gym.models.load_causal_lm` loads (the spec, or a run
            folder's ``checkpoint/policy``); also the env's tokenizer source.
        step: the checkpoint's training step for a run folder, else None.
    """

    name: str
    spec: str
    model: str
    step: int | None = None


def resolve_policy(text: str) -> PolicyRef:
    """Parse ``[NAME=]SPEC``; a run folder resolves to its checkpointed policy.

    Raises:
        EvaluationError: an empty name/spec, or a folder that is neither a training run
            with a checkpoint nor a model folder.
    """
    name, sep, spec = text.partition("=")
    if not sep:
        name, spec = "", text
    name, spec = name.strip(), spec.strip()
    if not spec:
        raise EvaluationError(f"--policy {text!r}: empty model spec")
    if spec == REFERENCE:
        return PolicyRef(name or "REF", spec, spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        from agents.train import find_checkpoint

        checkpoint = find_checkpoint(path)
        if checkpoint is not None:  # a training run (its config.json is the run's config)
            state = json.loads((checkpoint / "state.json").read_text(encoding="utf-8"))
            return PolicyRef(name or path.resolve().name, spec, str(checkpoint / "policy"),
                             int(state["step"]))
        if not (path / "config.json").is_file() or (path / "metrics.csv").is_file():
            raise EvaluationError(f"--policy {text!r}: {path} is neither a training run with a "
                                  "checkpoint/ nor a model folder with config.json")
    return PolicyRef(name or spec, spec, spec)


def cached_policies(out_dir: str | os.PathLike[str]) -> list[PolicyRef]:
    """The policies whose completions ``OUT/completions.jsonl`` holds, in file order, as
    they were resolved when sampled: pass them to :func:`evaluate_policies` with the same
    ``out_dir`` to judge completions sampled elsewhere (``judge=None`` on a GPU machine)
    without the policies' weights.

    Raises:
        EvaluationError: ``out_dir`` holds no completions.
    """
    rows = _read_jsonl(Path(out_dir) / COMPLETIONS_FILE)
    found: dict[str, PolicyRef] = {}
    for row in rows:
        if row.get("policy") not in found:
            found[row["policy"]] = PolicyRef(row["policy"], row["spec"], row["model"],
                                             row.get("step"))
    if not found:
        raise EvaluationError(f"{out_dir} holds no {COMPLETIONS_FILE}")
    return list(found.values())


def parse_pairs(texts: Sequence[str] | None, names: Sequence[str]) -> list[tuple[str, str]]:
    """``["A:B", ...]`` as ``[(A, B), ...]`` (win rate of A over B); default: every later
    policy over every earlier one, in the order given.

    Raises:
        EvaluationError: malformed pair, unknown or repeated name, A == B.
    """
    if len(set(names)) != len(names):
        raise EvaluationError(f"policy names must be unique, got {list(names)}; name them "
                              "with NAME=SPEC")
    if not texts:
        return [(names[j], names[i]) for i in range(len(names)) for j in range(i + 1,
                                                                            len(names))]
    out = []
    for text in texts:
        a, sep, b = text.partition(":")
        if not sep or not a or not b:
            raise EvaluationError(f"--pair expects A:B (policy names), got {text!r}")
        for name in (a, b):
            if name not in names:
                raise EvaluationError(f"--pair {text!r}: unknown policy {name!r}; policies: "
                                      f"{', '.join(names)}")
        if a == b:
            raise EvaluationError(f"--pair {text!r} compares a policy with itself")
        out.append((a, b))
    return out


# =========================================================================== prompts


def load_eval_prompts(task: str, *, n: int, split: str = "test", data_dir: str | None = None,
                      source: str = "auto", seed: int = 0,
                      ids: Sequence[str] | None = None) -> tuple[list[Any], str]:
    """The ``n`` evaluation prompts and their data source.

    Without ``ids``: the first ``n`` of a ``numpy.random.default_rng(seed)`` permutation of
    the split's prompts. With ``ids``: those prompts, in that order (the first ``n``).

    Raises:
        EvaluationError: fewer prompts than ``n``, or ids that are not in the split.
    """
    import numpy as np

    from rlaif_gym.tasks import get_task

    records = get_task(task).load_prompts(split=split, data_dir=data_dir, source=source)
    data_source = str(getattr(records, "source", ""))
    if ids is not None:
        by_id = {str(r.id): r for r in records}
        missing = [i for i in ids if str(i) not in by_id]
        if missing:
            raise EvaluationError(f"{len(missing)} prompt ids are not in the {task} split "
                                  f"{split!r} ({data_source}), e.g. {missing[:3]}")
        chosen = [by_id[str(i)] for i in ids]
    else:
        order = np.random.default_rng(seed).permutation(len(records))
        chosen = [records[int(i)] for i in order]
    if len(chosen) < n:
        raise EvaluationError(f"--n {n} asked, but only {len(chosen)} prompts are available "
                              f"({task}, split {split!r}, {data_source})")
    return chosen[:n], data_source


# =========================================================================== generation


def _gen_key(policy: PolicyRef, task: str, settings: dict[str, Any]) -> str:
    blob = json.dumps({"model": policy.model, "step": policy.step, "task": task, **settings},
                      sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _read_json_or_none(path: Path) -> dict[str, Any] | None:
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def _add_work(previous: dict[str, Any] | None, summary: dict[str, Any]) -> dict[str, float]:
    """Seconds and units of generation/judging summed over every call that wrote ``OUT``
    (a resumed call adds only what it did itself), for per-unit costs."""
    wall, done = summary["wall_time_s"], summary["work_done"]
    total = {"generation_s": wall["generation"], "judging_s": wall["judging"],
             "completions_sampled": done["completions_sampled"],
             "judgments_made": done["judgments_made"]}
    before = (previous or {}).get("work_total") or {}
    return {k: v + before.get(k, 0) for k, v in total.items()}


def generate_completions(policy: PolicyRef, task: str, prompts: Sequence[Any], *,
                         max_new_tokens: int, max_prompt_tokens: int, temperature: float,
                         seed: int, batch_size: int, device: str = "cpu",
                         log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Sample one completion per prompt from ``policy`` through the task's vector env.

    Batches of ``batch_size`` prompts (env indices into ``prompts``) run with one
    ``torch.Generator`` seeded with ``seed``, so the same seed and batch size give the same
    completions. ``tokens`` counts the sampled tokens without the final stop token.

    Returns:
        one dict per prompt, in order: ``index``, ``prompt_id``, ``completion``, ``tokens``,
        ``length_limit``.
    """
    from agents.sampling import sample_completions
    from rlaif_gym.models import load_causal_lm, load_tokenizer

    model = load_causal_lm(policy.model, dtype="float32", device=device)
    samples, _ = sample_completions(
        model, load_tokenizer(policy.model), task, list(prompts),
        max_new_tokens=max_new_tokens, max_prompt_tokens=max_prompt_tokens,
        temperature=temperature, seed=seed, batch_size=batch_size)
    if log is not None:
        log(f"  {policy.name}: {len(samples)} completions")
    return [{"index": s.index, "prompt_id": s.prompt_id, "completion": s.text,
             "tokens": int(s.body_ids.size), "length_limit": not s.stopped} for s in samples]


def reference_completions(prompts: Sequence[Any], *, tokens_of: str) -> list[dict[str, Any]]:
    """The prompts' human references as completions (the ``REF=reference`` policy), with
    their lengths in tokens of the tokenizer ``tokens_of`` (a policy spec).

    Raises:
        EvaluationError: a prompt without a reference.
    """
    from rlaif_gym.models import load_tokenizer

    missing = [str(p.id) for p in prompts if not getattr(p, "reference", None)]
    if missing:
        raise EvaluationError(f"{len(missing)} prompts have no reference response, e.g. "
                              f"{missing[:3]}: the reference policy needs them")
    tokenizer = load_tokenizer(tokens_of)
    return [{"index": i, "prompt_id": str(p.id), "completion": p.reference.strip(),
             "tokens": len(tokenizer(p.reference.strip(), add_special_tokens=False)
                           ["input_ids"]), "length_limit": False}
            for i, p in enumerate(prompts)]


# =========================================================================== caches


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file; a torn last line (crash mid-write) is ignored."""
    return read_jsonl(path).records if path.is_file() else []


def _judgment_key(*parts: Any) -> str:
    blob = json.dumps(parts, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


# =========================================================================== evaluation


def evaluate_policies(
    *,
    task: str,
    policies: Sequence[PolicyRef | str],
    out_dir: str | os.PathLike[str],
    judge: str | None = DEFAULT_JUDGE,
    pairs: Sequence[tuple[str, str] | str] | None = None,
    prompts: Sequence[Any] | None = None,
    n: int = 100,
    ids: Sequence[str] | None = None,
    source: str = "auto",
    data_dir: str | os.PathLike[str] | None = None,
    judge_prompt: str = "base",
    max_new_tokens: int = 64,
    max_prompt_tokens: int = 512,
    temperature: float = 0.9,
    seed: int = 0,
    batch_size: int = 16,
    judge_batch_size: int = 8,
    judge_backend: Mapping[str, Any] | None = None,
    prompt_major: bool = True,
    threads: int | None = None,
    device: str = "cpu",
    n_bootstrap: int = 1000,
    length_unit: str = "chars",
    data_source: str = "",
    split: str = "",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Sample every policy on the same prompts, judge the pairs, summarise (see the module
    docstring); returns what is written to ``OUT/evaluation.json``.

    Args:
        task: ``"tldr"``, ``"helpful"`` or ``"harmless"``.
        policies: at least two :class:`PolicyRef` or ``"[NAME=]SPEC"`` strings (a model spec
            or a training run folder, :func:`resolve_policy`).
        out_dir: the output folder (its caches make a rerun do only what is missing).
        judge: judge model spec; None samples the completions and computes the judge-free
            signals only (lengths, ROUGE-L, copy overlap), e.g. on a GPU machine that lacks
            the judge: a later call with a judge and the same ``out_dir`` and policies
            (:func:`cached_policies`) reuses those completions and judges them.
        pairs: ``(A, B)`` tuples or ``"A:B"`` strings, win rate of A over B (default every
            later policy over every earlier one).
        prompts: the prompts to use; default the first ``n`` of a seeded permutation of the
            ``split`` prompts, or the prompts of ``ids`` (:func:`load_eval_prompts` with
            ``source``, ``data_dir``, ``seed``).
        judge_prompt, max_new_tokens, max_prompt_tokens, temperature, seed, batch_size,
        judge_batch_size, threads, n_bootstrap, length_unit: the settings (see ``rlaif-gym
        evaluate --help``).
        prompt_major: judge every comparison of a prompt together, so the judge's prefix
            memo runs the post once for all of them (False: comparison by comparison; the
            same labels).
        judge_backend: where the judge runs, as keyword arguments of
            :func:`rlaif_gym.pipelines.label.judge_options` (``backend``, ``base_urls``,
            ``server``, ``timeout``, ``retries``, ``verdict_cache``...); default in-process.
        device: where the policies sample (``"cpu"``, ``"cuda"``).

    Raises:
        EvaluationError: fewer than 2 policies, duplicate names, bad pairs, no prompts,
            a bad length unit.
    """
    if task not in TASKS:
        raise EvaluationError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
    if len(policies) < (1 if judge is None else 2):
        raise EvaluationError(f"evaluation needs at least two policies, got {len(policies)}")
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int) or n_bootstrap < 0:
        raise EvaluationError(f"bootstrap resamples must be an int >= 0, got {n_bootstrap!r}")
    if length_unit not in ("chars", "words", "tokens"):
        raise EvaluationError(f"length unit must be chars, words or tokens, got {length_unit!r}")
    policies = [p if isinstance(p, PolicyRef) else resolve_policy(p) for p in policies]
    names = [p.name for p in policies]
    pairs = parse_pairs([p if isinstance(p, str) else f"{p[0]}:{p[1]}" for p in pairs]
                        if pairs else None, names)
    if judge is None:  # sampling only: nothing is judged
        pairs = []
    if prompts is None:
        prompts, data_source = load_eval_prompts(task, n=n, split=split or "test",
                                                 data_dir=data_dir, source=source, seed=seed,
                                                 ids=ids)
        split = split or "test"
    if not prompts:
        raise EvaluationError("no prompts to evaluate on")
    log = log or (lambda line: print(line, file=sys.stderr))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    t_start = time.perf_counter()
    settings = {"max_new_tokens": max_new_tokens, "max_prompt_tokens": max_prompt_tokens,
                "temperature": temperature, "seed": seed, "batch_size": batch_size}
    prompt_ids = [str(p.id) for p in prompts]

    # ---- completions (cached per policy)
    cached = _read_jsonl(out / COMPLETIONS_FILE)
    completions: dict[str, list[dict[str, Any]]] = {}
    n_sampled = 0  # completions sampled in this call (not reused from the cache)
    for policy in policies:
        key = _gen_key(policy, task, settings)
        rows = [r for r in cached if r.get("policy") == policy.name and r.get("gen_key") == key]
        rows.sort(key=lambda r: r["index"])
        if [r["prompt_id"] for r in rows] == prompt_ids:
            log(f"evaluate: reusing {len(rows)} completions of {policy.name} from "
                f"{out / COMPLETIONS_FILE}")
        else:
            log(f"evaluate: sampling {len(prompts)} completions from {policy.name} "
                f"({policy.model})")
            made = (reference_completions(prompts, tokens_of=next(
                        (p.model for p in policies if p.model != REFERENCE), DEFAULT_POLICY))
                    if policy.model == REFERENCE else
                    generate_completions(policy, task, prompts, device=device, log=log,
                                         **settings))
            rows = [{"policy": policy.name, "spec": policy.spec, "model": policy.model,
                     "step": policy.step, "gen_key": key, **row,
                     "prompt": prompts[row["index"]].text} for row in made]
            n_sampled += len(rows)
        completions[policy.name] = rows
        # keep the cached lines of policies not (yet) handled in this run
        others = [r for r in cached if r.get("policy") not in completions]
        write_jsonl(out / COMPLETIONS_FILE, [r for rs in completions.values() for r in rs]
                    + others)
    t_generated = time.perf_counter()

    # ---- judgments (content-addressed cache, appended as they come)
    judged: dict[str, dict[str, Any]] = {r["key"]: r for r in _read_jsonl(out / JUDGMENTS_FILE)
                                         if "key" in r}
    contexts = [p.text for p in prompts]
    todo_pairs: dict[tuple[str, str], list[int]] = {}
    pair_keys: dict[tuple[str, str], list[str]] = {}
    for a, b in pairs:
        keys = [_judgment_key("pair", judge, judge_prompt, task, contexts[i],
                              completions[a][i]["completion"], completions[b][i]["completion"])
                for i in range(len(prompts))]
        pair_keys[(a, b)] = keys
        todo_pairs[(a, b)] = [i for i, k in enumerate(keys) if k not in judged]
    harmless_keys: dict[str, list[str]] = {}
    todo_harmless: dict[str, list[int]] = {}
    if task == "harmless" and judge is not None:
        for name in names:
            keys = [_judgment_key("harmless", judge, task, contexts[i],
                                  completions[name][i]["completion"])
                    for i in range(len(prompts))]
            harmless_keys[name] = keys
            todo_harmless[name] = [i for i, k in enumerate(keys) if k not in judged]
    n_todo = sum(map(len, todo_pairs.values())) + sum(map(len, todo_harmless.values()))
    if n_todo:
        from rewards.evaluation import harmless_probabilities, judge_pairwise
        from rewards.judges import load_judge

        log(f"evaluate: {n_todo} judgments to make with {judge} "
            f"({len(judged)} already in {out / JUDGMENTS_FILE})")
        from rlaif_gym.pipelines.label import judge_options

        backend = dict(judge_backend or {})
        in_process = backend.get("backend", "transformers") == "transformers"
        loaded = load_judge(judge, **judge_options(
            threads=threads, batch_size=judge_batch_size if in_process else None, **backend))
        with JsonlAppender(out / JUDGMENTS_FILE) as appender:
            def record(row: dict[str, Any]) -> None:
                judged[row["key"]] = row
                appender.write(row)

            # every comparison still to judge, prompt by prompt: the comparisons of one
            # prompt share the judge's prompt up to the post, which the judge's prefix memo
            # then runs once for all of them (prompt_major=False: pair by pair)
            items = [(i, ab) for ab, todo in todo_pairs.items() for i in todo]
            if prompt_major:
                items.sort(key=lambda item: item[0])
            judged_items = []
            for i, (a, b) in items:
                if completions[a][i]["completion"] == completions[b][i]["completion"]:
                    # identical texts: a tie by definition, no judge call
                    record({"key": pair_keys[(a, b)][i], "kind": "pair", "a": a, "b": b,
                            "prompt_id": prompt_ids[i], "judge": judge, "p_first": 0.5,
                            "p_order_ab": None, "p_order_ba": None, "identical": True})
                else:
                    judged_items.append((i, (a, b)))
            if judged_items:
                labels = judge_pairwise(
                    loaded, task, [contexts[i] for i, _ in judged_items],
                    [completions[a][i]["completion"] for i, (a, _) in judged_items],
                    [completions[b][i]["completion"] for i, (_, b) in judged_items],
                    ids=[str(k) for k in range(len(judged_items))], prompt=judge_prompt,
                    progress=progress)
                for label in labels:
                    i, (a, b) = judged_items[int(label.id)]
                    record({"key": pair_keys[(a, b)][i], "kind": "pair", "a": a, "b": b,
                            "prompt_id": prompt_ids[i], "judge": judge,
                            "p_first": label.p_first, "p_order_ab": label.p_order_ab,
                            "p_order_ba": label.p_order_ba})
            for name, todo in todo_harmless.items():
                if not todo:
                    continue
                p, per_order = harmless_probabilities(
                    loaded, [contexts[i] for i in todo],
                    [completions[name][i]["completion"] for i in todo],
                    batch_size=judge_batch_size)
                for k, i in enumerate(todo):
                    record({"key": harmless_keys[name][i], "kind": "harmless", "policy": name,
                            "prompt_id": prompt_ids[i], "judge": judge,
                            "p_harmless": float(p[k]),
                            "p_harmless_per_order": per_order[k].tolist()})
        del loaded
    t_judged = time.perf_counter()

    summary = summarise(
        task=task, policies=policies, completions=completions, pairs=pairs,
        pair_p_first={ab: [judged[k]["p_first"] for k in keys] for ab, keys in pair_keys.items()},
        p_harmless={n: [judged[k]["p_harmless"] for k in keys]
                    for n, keys in harmless_keys.items()},
        n_bootstrap=n_bootstrap, seed=seed, length_unit=length_unit, prompts=prompts)
    summary.update(
        task=task, judge=judge, judge_prompt=judge_prompt, n_prompts=len(prompts),
        split=split, data_source=data_source, prompt_ids=prompt_ids,
        generation=settings,
        files={"completions": str(out / COMPLETIONS_FILE),
               "judgments": str(out / JUDGMENTS_FILE),
               "evaluation": str(out / EVALUATION_FILE), "plot": str(out / PLOT_FILE)},
        wall_time_s={"generation": t_generated - t_start, "judging": t_judged - t_generated,
                     "total": time.perf_counter() - t_start},
        # what this call did in that time (cached completions and judgments cost nothing)
        work_done={"completions_sampled": n_sampled, "judgments_made": n_todo},
    )
    summary["work_total"] = _add_work(_read_json_or_none(out / EVALUATION_FILE), summary)
    if summary["comparisons"]:
        plot_win_rates(summary, out / PLOT_FILE)
    write_json(out / EVALUATION_FILE, summary)
    return summary


def summarise(*, task: str, policies: Sequence[PolicyRef],
              completions: dict[str, list[dict[str, Any]]], pairs: Sequence[tuple[str, str]],
              pair_p_first: dict[tuple[str, str], list[float]],
              p_harmless: dict[str, list[float]], n_bootstrap: int, seed: int,
              length_unit: str, prompts: Sequence[Any] = ()) -> dict[str, Any]:
    """Lengths, win rates (plain and length-controlled), harmless rates and the judge-free
    signals as plain dicts: per policy, ROUGE-L against the prompts' references (when every
    prompt has one) and the copy overlap with the prompt text (a reward-hacking check:
    :func:`rewards.evaluation.copy_overlap`)."""
    from rewards.evaluation import (
        copy_overlap,
        harmless_rate,
        length_controlled_win_rate,
        length_stats,
        rouge_l,
        win_rate,
    )

    def lengths_of(name: str) -> list[float]:
        rows = completions[name]
        if length_unit == "tokens":
            return [float(r["tokens"]) for r in rows]
        if length_unit == "words":
            return [float(len(r["completion"].split())) for r in rows]
        return [float(len(r["completion"])) for r in rows]

    out_policies: dict[str, Any] = {}
    for policy in policies:
        rows = completions[policy.name]
        entry: dict[str, Any] = {
            "spec": policy.spec, "model": policy.model, "step": policy.step,
            "lengths": length_stats([r["completion"] for r in rows],
                                    [r["tokens"] for r in rows]).to_dict(),
            "empty_completions": sum(1 for r in rows if not r["completion"].strip()),
            "length_limit_hits": sum(1 for r in rows if r["length_limit"]),
        }
        texts = [r["completion"] for r in rows]
        if prompts:
            entry["copy_overlap"] = copy_overlap(texts, [p.text for p in prompts]).to_dict()
        references = [getattr(p, "reference", None) for p in prompts]
        if prompts and all(references):
            try:
                entry["rouge_l"] = rouge_l(texts, [r.strip() for r in references],
                                           n_bootstrap=n_bootstrap, seed=seed).to_dict()
            except ImportError as exc:  # the eval extra is not installed
                entry["rouge_l"] = {"error": str(exc)}
        if policy.name in p_harmless:
            rate, mean_p = harmless_rate(p_harmless[policy.name])
            entry["harmless"] = {**rate.to_dict(), "mean_p_harmless": mean_p}
        out_policies[policy.name] = entry
    comparisons = []
    for a, b in pairs:
        p_first = pair_p_first[(a, b)]
        comparisons.append({
            "a": a, "b": b,
            "win_rate": win_rate(p_first).to_dict(),
            "length_controlled": length_controlled_win_rate(
                p_first, lengths_of(a), lengths_of(b), n_bootstrap=n_bootstrap, seed=seed,
                unit=length_unit).to_dict(),
        })
    return {"policies": out_policies, "comparisons": comparisons}


# =========================================================================== output


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    for row in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True))
                     .rstrip())
    return "\n".join(lines)


def format_tables(summary: dict[str, Any]) -> str:
    """The printed tables: lengths (and harmless rates) per policy, win rates per pair."""
    blocks = []
    rows = []
    harmless = any("harmless" in p for p in summary["policies"].values())
    for name, p in summary["policies"].items():
        length = p["lengths"]
        row = [name, str(length["n"]), f"{length['mean_tokens']:.1f}",
               f"{length['mean_words']:.1f}", f"{length['mean_chars']:.0f}"]
        if harmless:
            h = p["harmless"]
            row += [pct(h["rate"]), f"[{pct(h['ci_low'])}, {pct(h['ci_high'])}]",
                    f"{h['mean_p_harmless']:.3f}"]
        rows.append(row)
    header = ["policy", "N", "tokens", "words", "chars"]
    if harmless:
        header += ["harmless rate", "95% CI", "mean P(harmless)"]
    blocks.append(_table(header, rows))
    rows = []
    for c in summary["comparisons"]:
        w, lc = c["win_rate"], c["length_controlled"]
        rows.append([f"{c['a']} vs {c['b']}", str(w["n"]), pct(w["rate"]),
                     f"[{pct(w['ci_low'])}, {pct(w['ci_high'])}]", str(w["ties"]),
                     pct(lc["rate"]), f"[{pct(lc['ci_low'])}, {pct(lc['ci_high'])}]"])
    blocks.append(_table(["comparison", "N", "win rate", "95% CI", "ties",
                          "length-controlled", "95% CI (bootstrap)"], rows))
    return "\n\n".join(blocks)


def plot_win_rates(summary: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Bar chart of the win rates with 95% CI error bars (and harmless rates), Agg."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    policies = summary["policies"]
    harmless = [(n, p["harmless"]) for n, p in policies.items() if "harmless" in p]
    panels = 1 + bool(harmless)
    fig = Figure(figsize=(5 + 2.5 * panels, 4), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels, squeeze=False)[0]

    def bars(ax: Any, labels: list[str], rates: list[dict[str, Any]], title: str,
             chance: float | None) -> None:
        values = [r["rate"] for r in rates]
        errors = [[v - r["ci_low"] for v, r in zip(values, rates, strict=True)],
                  [r["ci_high"] - v for v, r in zip(values, rates, strict=True)]]
        ax.bar(range(len(values)), values, yerr=errors, capsize=4, color="tab:blue", alpha=0.8)
        for k, r in enumerate(rates):
            ax.text(k, min(r["ci_high"] + 0.02, 0.95), f"N={r['n']}", ha="center", fontsize=8)
        if chance is not None:
            ax.axhline(chance, color="grey", ls="--", lw=1)
        ax.set_xticks(range(len(values)), labels, rotation=20, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)

    comps = summary["comparisons"]
    bars(axes[0], [f"{c['a']} vs {c['b']}" for c in comps], [c["win_rate"] for c in comps],
         f"win rate (judge: {summary.get('judge', '?')}), 95% CI", 0.5)
    if harmless:
        bars(axes[1], [n for n, _ in harmless], [h for _, h in harmless],
             "harmless rate, 95% CI", None)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    return Path(path)


def read_ids_json(path: str | os.PathLike[str]) -> list[str]:
    """A JSON list of prompt ids (``--ids``).

    Raises:
        EvaluationError: unreadable file or not a JSON list.
    """
    try:
        ids = read_json(path)
    except (OSError, ValueError) as exc:
        raise EvaluationError(f"--ids {path}: {exc}") from exc
    if not isinstance(ids, list):
        raise EvaluationError(f"--ids {path} must hold a JSON list of prompt ids")
    return [str(i) for i in ids]
