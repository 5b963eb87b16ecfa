"""AI preference labels written to a resumable JSON Lines file, and their alignment with
humans (``rlaif-gym label``, ``rlaif-gym alignment``).

:func:`label_to_file` asks a judge model which of two responses is better for every pair of
a task (Lee et al. 2023, section 2.1) and appends one JSON line per pair to ``out`` as it goes
(``PreferenceLabel.to_json()``, so ``PreferenceLabel.from_json`` reads every line back),
flushing after each line. Calling it again resumes: pairs whose id is already in the file are
skipped. The labeler configuration stored in every label (task, judge, prompt, cot, shots,
template) must match the run: a file of another configuration, or a file that is not a
labels file at all, is refused and left untouched. ``cot_max_tokens`` is not stored in the
labels and so cannot be checked. A torn last line left by a crash (no final newline) is
reported and cut off; complete labels are never removed.

Everything that can be checked without a model is checked before the judge loads: the
options, the template, the output file and its folder, the pairs and the ids.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rewards.alignment import AlignmentReport, alignment_report
from rewards.judges import load_judge
from rewards.preference import DEFAULT_PROMPTS, PROMPTS, label_pairs, pair_problem
from rewards.prompts import load_template
from rlaif_gym.data import load_preference_pairs
from rlaif_gym.defaults import DEFAULT_JUDGE, TASKS
from rlaif_gym.errors import UsageError
from rlaif_gym.files import JsonlAppender, read_jsonl, truncate_torn_tail

__all__ = [
    "CONFIG_KEYS",
    "BACKENDS",
    "LabelFileError",
    "LabelResult",
    "alignment_of_files",
    "judge_options",
    "label_to_file",
    "labeler_config",
    "prepare_output",
    "read_ids",
]

#: Label fields that must agree for labels to share one file.
CONFIG_KEYS: tuple[str, ...] = ("task", "judge", "prompt", "cot", "shots")
#: Label fields that must agree too but may be absent (absent = the default): ``template``,
#: the template given (a label without it used the task's packaged template).
OPTIONAL_CONFIG_KEYS: tuple[str, ...] = ("template",)
#: Judge backends.
BACKENDS: tuple[str, ...] = ("transformers", "openai", "vllm")
#: Server kinds of the ``openai`` backend.
SERVERS: tuple[str, ...] = ("openai", "vllm", "llamacpp")


class LabelFileError(UsageError):
    """The output file cannot take these labels (not a labels file, malformed, another
    configuration, not writable)."""


@dataclass
class LabelResult:
    """What :func:`label_to_file` did.

    Attributes:
        out: the labels file.
        written: labels written by this call.
        already: pairs that were labeled before this call.
        invalid: ids of pairs that cannot be labeled (skipped, with the reason).
        report: alignment of every label now in the file, or None when nothing was labeled
            by this call.
    """

    out: Path
    written: int
    already: int
    invalid: list[str]
    report: AlignmentReport | None


def labeler_config(task: str, judge: str, prompt: str, cot: bool, shots: int,
                   template: str | None) -> dict[str, Any]:
    """The labeler configuration stored in each label (``judge`` is the judge's spec)."""
    return {"task": task, "judge": judge, "prompt": prompt, "cot": bool(cot),
            "shots": int(shots), "template": template}


def _differing(record: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    return [k for k in CONFIG_KEYS + OPTIONAL_CONFIG_KEYS if record.get(k) != config.get(k)]


def _describe(config: Mapping[str, Any]) -> str:
    shown = list(CONFIG_KEYS) + [k for k in OPTIONAL_CONFIG_KEYS if config.get(k) is not None]
    return ", ".join(f"{k}={config.get(k)!r}" for k in shown)


def prepare_output(out: Path, config: Mapping[str, Any],
                   log: Callable[[str], None] | None = None) -> set[str]:
    """Check that ``out`` can take labels of ``config`` and return the ids already in it.

    Creates the parent folder. Cuts off a torn last line (reported through ``log``) and adds
    a missing final newline, so that appending continues cleanly. A file that is not a
    labels file of this configuration is never changed.

    Raises:
        LabelFileError: unreadable or unwritable file or folder, a malformed line (other
            than a torn last line), a line without an ``id`` or a labeler field, labels of
            another configuration, or a file with no label at all but other content.
    """
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LabelFileError(f"cannot create the folder of {out}: {exc}") from exc
    if not out.exists():
        if not os.access(out.parent, os.W_OK):
            raise LabelFileError(f"cannot write {out}: the folder {out.parent} is not writable")
        return set()
    if not out.is_file() or not os.access(out, os.W_OK):
        raise LabelFileError(f"cannot append to {out}: not a writable file")
    try:
        found = read_jsonl(out)
    except (OSError, ValueError) as exc:
        raise LabelFileError(f"cannot resume {out}: {exc}; it is left as it is") from exc
    done: set[str] = set()
    for line_no, record in enumerate(found.records, start=1):
        if "id" not in record:
            raise LabelFileError(f"{out}: line {line_no} has no 'id'; not a labels file? It is "
                                 "left as it is: choose another out")
        missing = [k for k in CONFIG_KEYS if k not in record]
        if missing:
            raise LabelFileError(
                f"{out}: label {line_no} lacks {', '.join(missing)}, so its labeler "
                "configuration is unknown and the file cannot be resumed safely; write to "
                "another --out"
            )
        differing = _differing(record, config)
        if differing:
            raise LabelFileError(
                f"{out} holds labels of another configuration ({_describe(record)}); this run "
                f"has {_describe(config)} (differs in {', '.join(differing)}). Labels of "
                "different judges/prompts go to different files: choose another --out"
            )
        done.add(str(record["id"]))
    try:
        if found.bad_tail is not None and found.records and log is not None:
            log(f"warning: {out}: cutting off an incomplete last line "
                f"({len(found.bad_tail)} characters) left by an interrupted run; "
                f"{len(found.records)} complete labels kept")
        truncate_torn_tail(found)
    except ValueError as exc:
        raise LabelFileError(f"{exc}; choose another --out") from exc
    except OSError as exc:
        raise LabelFileError(f"cannot repair {out}: {exc}") from exc
    return done


def label_to_record(label: Any, config: Mapping[str, Any]) -> dict[str, Any]:
    """The label's ``to_json()`` fields, with the run's ``template`` (when one was given),
    checked against the run's ``config``.

    Raises:
        TypeError: the label cannot be serialised to a JSON object with an ``id``.
        ValueError: the label's configuration fields differ from ``config`` (they would
            make the file unresumable).
    """
    if hasattr(label, "to_json"):
        data = label.to_json()
        if isinstance(data, str):
            data = json.loads(data)
    elif dataclasses.is_dataclass(label) and not isinstance(label, type):
        data = dataclasses.asdict(label)
    elif isinstance(label, Mapping):
        data = dict(label)
    else:
        raise TypeError(f"cannot serialise a label of type {type(label).__name__}")
    if not isinstance(data, Mapping) or "id" not in data:
        raise TypeError(f"a label must serialise to a JSON object with an 'id', got {data!r}")
    record = dict(data)
    for key in OPTIONAL_CONFIG_KEYS:  # the run's, not the label's: labels do not know them
        if config.get(key) is not None:
            record.setdefault(key, config[key])
    differing = _differing(record, config)
    if differing:
        raise ValueError(
            f"label {record['id']!r} has {_describe(record)} but this run expects "
            f"{_describe(config)} (differs in {', '.join(differing)})"
        )
    return record


def read_ids(path: str | os.PathLike[str]) -> set[str]:
    """Pair ids from a text file, one per line (blank lines and ``#`` comments ignored).

    Raises:
        OSError: unreadable file. ValueError: no id in it.
    """
    ids = {line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()}
    ids = {i for i in ids if i and not i.startswith("#")}
    if not ids:
        raise ValueError("no pair id in the file")
    return ids


def judge_options(backend: str = "transformers", *, threads: int | None = None,
                  dtype: str | None = None, batch_size: int | None = None,
                  base_urls: Sequence[str] | None = None, server: str = "openai",
                  served_model: str | None = None, concurrency: int | None = None,
                  timeout: float | None = None, retries: int | None = None,
                  deadline: float | None = None, requests_per_minute: float | None = None,
                  tokens_per_minute: float | None = None,
                  verdict_cache: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The keyword options of :func:`rewards.judges.load_judge` for a backend: threads,
    ``dtype`` and the forward ``batch_size`` (in prompts) for ``"transformers"``; for
    ``"openai"`` the server URLs, kind, served model name, requests in flight, the time limits
    of one attempt (``timeout``, s) and of a request with its retries (``deadline``, s), the
    number of ``retries`` and the rate limits (requests and prompt tokens per minute, shared
    by all replicas); ``verdict_cache`` (a SQLite file of verdicts already judged) on any
    backend. Options that are None keep the backend's defaults.

    Raises:
        UsageError: an unknown backend, ``dtype`` with a server backend, server options with
            an in-process backend, or ``"openai"`` without ``base_urls``.
    """
    server_only = {"timeout": timeout, "retries": retries, "deadline": deadline,
                   "requests_per_minute": requests_per_minute,
                   "tokens_per_minute": tokens_per_minute}
    given = sorted(k for k, v in server_only.items() if v is not None)
    if given and backend != "openai":
        raise UsageError(f"{', '.join('--' + k.replace('_', '-') for k in given)} apply to "
                         "--backend openai (a judge behind a server)")
    if backend not in BACKENDS:
        raise UsageError(f"unknown judge backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if dtype is not None and backend != "transformers":
        raise UsageError("--dtype applies to --backend transformers (a server or vLLM picks "
                         "its own)")
    if backend == "transformers":
        options = {"num_threads": threads, "dtype": dtype, "batch_size": batch_size}
    elif backend == "openai":
        if not base_urls:
            raise UsageError("--backend openai needs --base-url URL")
        if server not in SERVERS:
            raise UsageError(f"unknown server kind {server!r}; valid: {', '.join(SERVERS)}")
        # the judge spec names the tokenizer whose chat template renders the prompts
        options = {"backend": "openai", "base_urls": list(base_urls), "server": server,
                   "model": served_model, "max_concurrency": concurrency, "timeout": timeout,
                   "max_retries": retries, "deadline": deadline,
                   "requests_per_minute": requests_per_minute,
                   "tokens_per_minute": tokens_per_minute}
    else:
        options = {"backend": "vllm"}
    options["verdict_cache"] = None if verdict_cache is None else os.fspath(verdict_cache)
    return {k: v for k, v in options.items() if v is not None}


def _stderr(line: str) -> None:
    print(f"rlaif-gym label: {line}", file=sys.stderr)


def label_to_file(
    out: str | os.PathLike[str],
    *,
    task: str,
    judge: str = DEFAULT_JUDGE,
    pairs: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    split: str | None = None,
    high_confidence: bool = False,
    limit: int | None = None,
    ids: Iterable[str] | str | os.PathLike[str] | None = None,
    prompt: str | None = None,
    template: str | None = None,
    cot: bool = False,
    cot_max_tokens: int | None = None,
    shots: int = 0,
    batch_size: int = 8,
    threads: int | None = None,
    dtype: str | None = None,
    backend: str = "transformers",
    base_urls: Sequence[str] | None = None,
    server: str = "openai",
    served_model: str | None = None,
    concurrency: int | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    deadline: float | None = None,
    requests_per_minute: float | None = None,
    tokens_per_minute: float | None = None,
    verdict_cache: str | os.PathLike[str] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = _stderr,
) -> LabelResult:
    """Label the preference pairs of ``task`` with an AI judge into ``out`` (resumable).

    Args:
        out: the labels file (JSON Lines); created, or resumed when it holds labels of the
            same configuration.
        task: ``"tldr"``, ``"helpful"`` or ``"harmless"``.
        judge: judge model spec (for ``backend="openai"``: its tokenizer spec).
        pairs: a pairs file instead of the task's data; ``data_dir``, ``split``,
            ``high_confidence``: which data (:func:`rlaif_gym.data.load_preference_pairs`).
        limit: label the first ``limit`` pairs only.
        ids: label only these pair ids (an iterable, or a text file with one id per line).
        prompt: ``"base"``, ``"detailed"``, ``"pointwise"`` or ``"pmi"``
            (:func:`rewards.preference.label_pairs`); default the task's labeler,
            :data:`rewards.preference.DEFAULT_PROMPTS` (PMI for TL;DR; the paper's Base
            prompt with a server backend, which cannot score PMI); ``template``: a
            template name or file instead of the task's; ``cot``, ``cot_max_tokens``,
            ``shots``: chain of thought and few-shot exemplars.
        batch_size: pairs per labeling step (the transformers judge runs their ``2 *
            batch_size`` prompts as one forward batch).
        threads, dtype, backend, base_urls, server, served_model, concurrency, timeout,
            retries, deadline, requests_per_minute, tokens_per_minute, verdict_cache: the
            judge (:func:`judge_options`).
        progress: a progress bar. log: where warnings and progress lines go.

    Returns:
        :class:`LabelResult`.

    Raises:
        UsageError: bad options, a bad output file, pairs or ids that cannot be loaded, a
            judge that cannot be loaded, or a labeling error (the labels written so far stay
            in ``out``; the message says how many).
        KeyboardInterrupt: re-raised after logging how many labels were written.
    """
    if task not in TASKS:
        raise UsageError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
    if prompt is None:
        prompt = DEFAULT_PROMPTS[task]
        if prompt == "pmi" and backend != "transformers":  # a server cannot score PMI
            log(f"note: {task}'s default labeler, pmi, needs --backend transformers; "
                "labeling with the paper's base prompt")
            prompt = "base"
    if prompt not in PROMPTS:
        raise UsageError(f"unknown prompt {prompt!r}; valid: {', '.join(PROMPTS)}")
    if prompt in ("pointwise", "pmi") and (cot or shots):
        raise UsageError(f"--prompt {prompt} scores each response alone: it takes no --cot "
                         "and no --shots")
    if prompt == "pmi" and backend != "transformers":
        raise UsageError("--prompt pmi needs the log-likelihood of each response, which only "
                         "--backend transformers computes")
    # A labeling step of N pairs runs 2N prompts (both orders, or both responses when
    # pointwise or pmi): one forward batch, not the judge's default of 8 (a CoT step of 10
    # pairs decoded 8 + 8 + 4 prompts in three greedy runs: benchmarks/bench_judge_batch.py)
    options = judge_options(backend, threads=threads, dtype=dtype,
                            batch_size=2 * batch_size if backend == "transformers" else None,
                            base_urls=base_urls, server=server, served_model=served_model,
                            concurrency=concurrency, timeout=timeout, retries=retries,
                            deadline=deadline, requests_per_minute=requests_per_minute,
                            tokens_per_minute=tokens_per_minute, verdict_cache=verdict_cache)
    if template is not None:
        load_template(template)  # a TemplateError (a UsageError) names the problem
    out = Path(out)
    config = labeler_config(task, judge, prompt, cot, shots, template)
    done = prepare_output(out, config, log)

    try:
        loaded = load_preference_pairs(task, path=pairs, data_dir=data_dir,
                                       **({"split": split} if split is not None else {}),
                                       high_confidence=high_confidence)
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"cannot load {task} pairs: {exc}") from exc
    selected = list(loaded if limit is None else loaded[:limit])
    if ids is not None:
        if isinstance(ids, (str, os.PathLike)):
            try:
                wanted = read_ids(ids)
            except (OSError, ValueError) as exc:
                raise UsageError(f"cannot read --ids {ids}: {exc}") from exc
        else:
            wanted = {str(i) for i in ids}
        unknown = wanted - {str(p.id) for p in selected}
        if unknown:
            raise UsageError(f"--ids {ids}: {len(unknown)} ids are not among the "
                             f"{len(selected)} {task} pairs, e.g. {sorted(unknown)[:3]}")
        selected = [p for p in selected if str(p.id) in wanted]

    todo, seen, invalid = [], set(done), []
    for pair in selected:
        problem = pair_problem(pair)
        if problem is not None:
            invalid.append(f"{pair.id} ({problem})")
        elif str(pair.id) not in seen:
            seen.add(str(pair.id))
            todo.append(pair)
    if invalid:
        shown = ", ".join(invalid[:5]) + (" ..." if len(invalid) > 5 else "")
        log(f"warning: skipping {len(invalid)} pairs that cannot be labeled: {shown}")
    already = len(selected) - len(todo) - len(invalid)
    if not todo:
        return LabelResult(out, 0, already, invalid, None)
    log(f"labeling {len(todo)} pairs with {judge} ({already} already in {out})")

    try:
        judge_model = load_judge(judge, **options)
    except (OSError, ValueError, ImportError) as exc:
        raise UsageError(f"cannot load judge {judge!r}: {exc}") from exc

    written = 0
    try:
        with JsonlAppender(out) as appender:
            labels = label_pairs(judge_model, todo, prompt=prompt, cot=cot, shots=shots,
                                 batch_size=batch_size, cot_max_tokens=cot_max_tokens,
                                 template=template, progress=progress)
            for label in labels:
                appender.write(label_to_record(label, config))
                written += 1
    except (OSError, ValueError) as exc:
        raise UsageError(f"{exc} ({written} new labels were written to {out}; re-run to "
                         "resume)") from exc
    except KeyboardInterrupt:
        log(f"interrupted; {written} new labels were written to {out}; re-run the same "
            "command to resume")
        raise
    finally:
        if written:
            log(f"wrote {written} labels to {out}")
    report = alignment_report(read_jsonl(out).records, source=str(out))
    return LabelResult(out, written, already, invalid, report)


@dataclass
class FileAlignment:
    """:func:`alignment_of_files` for one file: its report, or the error that stopped it,
    and warnings (a torn last line, labels calibrated on their own human choices)."""

    path: Path
    report: AlignmentReport | None
    error: str | None
    warnings: list[str]


def alignment_of_files(paths: Sequence[str | os.PathLike[str]]) -> list[FileAlignment]:
    """AI labeler alignment (``z_acc`` with its 95% Wilson interval) and position bias of
    each labels file (:func:`rewards.alignment.alignment_report`); a file that cannot be read
    gets its error instead of a report."""
    results = []
    for path in paths:
        path = Path(path)
        try:
            found = read_jsonl(path)
            report = alignment_report(found.records, source=str(path))
        except (OSError, ValueError) as exc:
            results.append(FileAlignment(path, None, f"{path}: {exc}", []))
            continue
        warnings = []
        if found.bad_tail is not None:
            warnings.append(f"{path}: ignoring an incomplete last line")
        fit = sum(1 for r in found.records if (r.get("calibration") or {}).get("fit"))
        if fit:
            warnings.append(f"{path}: {fit} labels were calibrated on their own human choices "
                            "(calibration fit pairs); their alignment is not held out")
        results.append(FileAlignment(path, report, None, warnings))
    return results
