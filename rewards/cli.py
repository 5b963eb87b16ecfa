"""``rlaif-gym label`` and ``rlaif-gym alignment``: AI preference labels and their agreement
with humans.

``label`` asks a judge model which of two responses is better for every pair of a task
(Lee et al. 2023, section 2.1) and appends one JSON line per pair to ``--out`` as it goes
(``PreferenceLabel.to_json()``, so ``PreferenceLabel.from_json`` reads every line back),
flushing after each line. Re-running the same command resumes: pairs whose id is already in
the file are skipped. The labeler configuration stored in every label (task, judge,
prompt, cot, shots) must match the run: the command refuses to mix configurations in one
file; write those to another file. ``--cot-max-tokens`` is not stored in the labels and so
cannot be checked. An incomplete last line left by a crash is reported and cut off;
complete labels are never removed.

``alignment`` prints, for each labels file, the AI labeler alignment ``z_acc`` with its 95%
confidence interval, the position bias and ``N`` (see :mod:`rewards.alignment`).

Exit codes: 0 success, 2 bad input (unreadable or inconsistent files, invalid pairs, a
judge that cannot be loaded), 130 interrupted. Labels written before an error stay.
Heavy imports (torch, models) happen inside the commands so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from rewards.alignment import alignment_report, format_table, read_labels_jsonl
from rlaif_gym.cli import non_negative_int, positive_int

TASKS: tuple[str, ...] = ("tldr", "helpful", "harmless")
PROMPTS: tuple[str, ...] = ("base", "detailed", "pointwise", "pmi")
DEFAULT_JUDGE = "qwen2.5-coder-1.5b-instruct"
#: Label fields that must agree for labels to share one file.
CONFIG_KEYS: tuple[str, ...] = ("task", "judge", "prompt", "cot", "shots")
#: Label fields that must agree too but may be absent (absent = the default): ``template``,
#: the ``--template`` given (a label without it used the task's packaged template).
OPTIONAL_CONFIG_KEYS: tuple[str, ...] = ("template",)


class LabelFileError(ValueError):
    """The output file cannot be resumed (unreadable, malformed or another configuration)."""


# --------------------------------------------------------------------------- backends
# Thin wrappers around the modules that do the work, imported lazily (they pull in torch).
# Tests replace these names with fakes.


def load_preference_pairs(task: str, **options: Any) -> Sequence[Any]:
    """:func:`rlaif_gym.data.load_preference_pairs`; ``limit`` is applied here when the
    loader has no such parameter, and options that are ``None`` keep the loader defaults."""
    from rlaif_gym.data import load_preference_pairs as impl

    limit = options.pop("limit", None)
    options = {k: v for k, v in options.items() if v is not None}
    if limit is not None and "limit" in inspect.signature(impl).parameters:
        return impl(task, limit=limit, **options)
    pairs = impl(task, **options)
    return pairs if limit is None else pairs[:limit]


def load_judge(spec: str, num_threads: int | None = None, **backend: Any) -> Any:
    """:func:`rewards.judges.load_judge`; ``backend`` options (``backend=``, ``base_urls=``,
    ``server=``...) only for the non-default backends, ``dtype=`` and ``batch_size=`` (the
    judge's forward batch, in prompts) only for the transformers one (``None`` values are
    dropped)."""
    from rewards.judges import load_judge as impl

    if backend.get("backend", "transformers") == "transformers":
        options = {k: backend.get(k) for k in ("dtype", "batch_size")}
        return impl(spec, num_threads=num_threads,
                    **{k: v for k, v in options.items() if v is not None})
    return impl(spec, **{k: v for k, v in backend.items() if v is not None})


def label_pairs(judge: Any, pairs: Sequence[Any], **options: Any) -> Iterator[Any]:
    """:func:`rewards.preference.label_pairs`; options that are ``None`` keep its defaults,
    and ``cot_max_tokens`` is refused if that function does not take it."""
    from rewards.preference import label_pairs as impl

    options = {k: v for k, v in options.items() if v is not None}
    params = inspect.signature(impl).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in options if k not in params and not takes_any]
    if unknown:
        raise ValueError(f"rewards.preference.label_pairs does not support {unknown}")
    return impl(judge, pairs, **options)


# --------------------------------------------------------------------------- parser


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``label`` and ``alignment`` subcommands."""
    p = subparsers.add_parser(
        "label",
        help="label preference pairs with an AI judge (resumable JSONL output)",
        description=(
            "Ask a judge model which response of each pair is better and append one JSON "
            "line per pair to --out. Re-running resumes where it stopped."
        ),
    )
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--pairs", default=None, metavar="PATH",
                   help="pairs file (default: the task's data from --data-dir/RLAIF_GYM_DATA)")
    p.add_argument("--data-dir", default=None, help="data folder (default: $RLAIF_GYM_DATA)")
    p.add_argument("--split", default=None, help="data split (default: the task's default)")
    p.add_argument("--high-confidence", action="store_true",
                   help="keep only high-confidence human comparisons (TL;DR or pair files)")
    p.add_argument("--limit", type=positive_int, default=None, help="label the first N pairs")
    p.add_argument("--ids", default=None, metavar="IDS.txt",
                   help="label only the pairs whose id is listed in this file (one per line), "
                        "e.g. the choosing half of benchmarks/choose_and_report.py")
    p.add_argument("--judge", default=DEFAULT_JUDGE, metavar="SPEC",
                   help=f"judge model (default: {DEFAULT_JUDGE})")
    p.add_argument("--prompt", default="base", choices=PROMPTS,
                   help="preamble variant; or pointwise: rate each response alone with the "
                        "d-RLAIF score prompt, P(first) = sigmoid(score difference); or pmi: "
                        "log P(response | context) - log P(response) under the judge, "
                        "P(first) = sigmoid(PMI difference) (the template's pmi prompts)")
    p.add_argument("--template", default=None, metavar="NAME|PATH",
                   help="prompt template for every pair instead of the task's packaged one "
                        "(a packaged name or a template .json file, see rewards/prompts.py)")
    p.add_argument("--cot", action="store_true", help="elicit a chain-of-thought rationale")
    p.add_argument("--cot-max-tokens", type=positive_int, default=None,
                   help="rationale length limit with --cot (default: the labeler's)")
    p.add_argument("--shots", type=non_negative_int, default=0, help="few-shot exemplars")
    p.add_argument("--batch-size", type=positive_int, default=8,
                   help="pairs per labeling step; the transformers judge runs their 2N prompts "
                        "as one forward batch (default %(default)s)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    p.add_argument("--dtype", default=None, choices=("bfloat16", "float16", "float32"),
                   help="judge weights dtype, transformers backend (default: the model's; the "
                        "bf16 judges load in float32 on a CPU without native bf16)")
    p.add_argument("--backend", default="transformers", choices=("transformers", "openai", "vllm"),
                   help="judge backend (default: transformers, in-process)")
    p.add_argument("--base-url", action="append", default=None, metavar="URL",
                   help="OpenAI-compatible server for --backend openai (repeat for replicas; "
                        "requests are balanced across them)")
    p.add_argument("--server", default="openai", choices=("openai", "vllm", "llamacpp"),
                   help="server kind for --backend openai (%(default)s)")
    p.add_argument("--served-model", default=None, help="request 'model' field (vLLM name)")
    p.add_argument("--concurrency", type=positive_int, default=None,
                   help="HTTP requests in flight (--backend openai)")
    p.add_argument("--out", required=True, metavar="LABELS.jsonl", help="output JSONL file")
    p.set_defaults(func=run_label)

    a = subparsers.add_parser(
        "alignment",
        help="AI labeler alignment (z_acc) and position bias of label files",
        description="Print z_acc with a 95% Wilson interval, position bias and N per file.",
    )
    a.add_argument("labels", nargs="+", metavar="LABELS.jsonl")
    a.add_argument("--json", action="store_true", help="one JSON object per file instead")
    a.set_defaults(func=run_alignment)


# --------------------------------------------------------------------------- label


def labeler_config(args: argparse.Namespace) -> dict[str, Any]:
    """The labeler configuration of this run, as stored in each label (``judge`` is the
    judge's name, which is its spec for the transformers backend)."""
    return {
        "task": args.task,
        "judge": args.judge,
        "prompt": args.prompt,
        "cot": bool(args.cot),
        "shots": int(args.shots),
        "template": getattr(args, "template", None),
    }


def _differing(record: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    return [k for k in CONFIG_KEYS + OPTIONAL_CONFIG_KEYS if record.get(k) != config.get(k)]


def _describe(config: Mapping[str, Any]) -> str:
    shown = list(CONFIG_KEYS)
    shown += [k for k in OPTIONAL_CONFIG_KEYS if config.get(k) is not None]
    return ", ".join(f"{k}={config.get(k)!r}" for k in shown)


def prepare_output(out: Path, config: Mapping[str, Any]) -> set[str]:
    """Check that ``out`` can take labels of ``config`` and return the ids already in it.

    Creates the parent folder. Cuts off an incomplete last line (reported on stderr) and
    adds a missing final newline, so that appending continues cleanly.

    Raises:
        LabelFileError: unreadable file, a malformed line before the last, a line without an
            ``id`` or a labeler field, or labels of another configuration.
    """
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        return set()
    try:
        found = read_labels_jsonl(out)
    except (OSError, ValueError) as exc:
        raise LabelFileError(f"cannot resume {out}: {exc}") from exc
    done: set[str] = set()
    for line_no, record in enumerate(found.records, start=1):
        if "id" not in record:
            raise LabelFileError(f"{out}: label {line_no} has no 'id'; not a labels file?")
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
        if found.bad_tail is not None:
            print(
                f"rlaif-gym label: warning: {out}: cutting off an incomplete last line "
                f"({len(found.bad_tail)} characters) left by an interrupted run; "
                f"{len(found.records)} complete labels kept",
                file=sys.stderr,
            )
            with out.open("r+b") as f:
                f.truncate(found.valid_end)
        elif found.missing_newline:
            with out.open("ab") as f:
                f.write(b"\n")
    except OSError as exc:
        raise LabelFileError(f"cannot repair {out}: {exc}") from exc
    return done


def label_to_record(label: Any, config: Mapping[str, Any]) -> dict[str, Any]:
    """The label's ``to_json()`` fields, with the run's ``template`` (when ``--template``
    was given), checked against the run's ``config``.

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


def read_ids(path: Path) -> set[str]:
    """Pair ids from a text file, one per line (blank lines and ``#`` comments ignored).

    Raises:
        OSError: unreadable file. ValueError: no id in it.
    """
    ids = {line.strip() for line in path.read_text(encoding="utf-8").splitlines()}
    ids = {i for i in ids if i and not i.startswith("#")}
    if not ids:
        raise ValueError("no pair id in the file")
    return ids


def _error(message: str) -> int:
    print(f"rlaif-gym label: error: {message}", file=sys.stderr)
    return 2


def run_label(args: argparse.Namespace) -> int:
    """Label the pairs described by ``args``; returns the exit code."""
    out = Path(args.out)
    config = labeler_config(args)
    try:
        done = prepare_output(out, config)
    except LabelFileError as exc:
        return _error(str(exc))

    try:
        pairs = load_preference_pairs(
            args.task, path=args.pairs, data_dir=args.data_dir, split=args.split,
            high_confidence=args.high_confidence, limit=args.limit,
        )
    except (OSError, ValueError, KeyError) as exc:
        return _error(f"cannot load {args.task} pairs: {exc}")

    if getattr(args, "ids", None) is not None:
        try:
            wanted = read_ids(Path(args.ids))
        except (OSError, ValueError) as exc:
            return _error(f"cannot read --ids {args.ids}: {exc}")
        unknown = wanted - {str(p.id) for p in pairs}
        if unknown:
            return _error(f"--ids {args.ids}: {len(unknown)} ids are not among the "
                          f"{len(pairs)} {args.task} pairs, e.g. {sorted(unknown)[:3]}")
        pairs = [p for p in pairs if str(p.id) in wanted]

    from rewards.preference import pair_problem

    todo, seen, invalid = [], set(done), []
    for pair in pairs:
        problem = pair_problem(pair)
        if problem is not None:
            invalid.append(f"{pair.id} ({problem})")
        elif str(pair.id) not in seen:
            seen.add(str(pair.id))
            todo.append(pair)
    if invalid:
        shown = ", ".join(invalid[:5]) + (" ..." if len(invalid) > 5 else "")
        print(f"rlaif-gym label: warning: skipping {len(invalid)} pairs that cannot be labeled: "
              f"{shown}", file=sys.stderr)
    skipped = len(pairs) - len(todo) - len(invalid)
    if not todo:
        print(f"all {len(pairs)} pairs are already labeled in {out}")
        return 0
    print(f"labeling {len(todo)} pairs with {args.judge} ({skipped} already in {out})",
          file=sys.stderr)

    if args.prompt in ("pointwise", "pmi") and (args.cot or args.shots):
        return _error(f"--prompt {args.prompt} scores each response alone: it takes no --cot "
                      "and no --shots")
    template = getattr(args, "template", None)
    if template is not None:
        from rewards.prompts import load_template

        try:
            load_template(template)
        except ValueError as exc:
            return _error(str(exc))
    backend = getattr(args, "backend", "transformers")
    if args.prompt == "pmi" and backend != "transformers":
        return _error("--prompt pmi needs the log-likelihood of each response, which only "
                      "--backend transformers computes")
    if backend == "openai" and not args.base_url:
        return _error("--backend openai needs --base-url URL")
    extra: dict[str, Any] = {}
    if backend == "openai":
        # the judge spec names the tokenizer whose chat template renders the prompts
        extra = {"backend": "openai", "base_urls": args.base_url, "server": args.server,
                 "model": args.served_model, "max_concurrency": args.concurrency}
    elif backend == "vllm":
        extra = {"backend": "vllm"}
    if backend == "transformers":
        # A labeling step of N pairs runs 2N prompts (both orders, or both responses when
        # pointwise or pmi): one forward batch, not the judge's default of 8 (a CoT step of 10
        # pairs decoded 8 + 8 + 4 prompts in three greedy runs: benchmarks/bench_judge_batch.py)
        extra["batch_size"] = 2 * args.batch_size
    if getattr(args, "dtype", None) is not None:
        if backend != "transformers":
            return _error("--dtype applies to --backend transformers (a server or vLLM picks "
                          "its own)")
        extra["dtype"] = args.dtype
    try:
        judge = load_judge(args.judge, num_threads=args.threads, **extra)
    except (OSError, ValueError, ImportError) as exc:
        return _error(f"cannot load judge {args.judge!r}: {exc}")

    written = 0
    try:
        with out.open("a", encoding="utf-8") as f:
            labels = label_pairs(
                judge, todo, prompt=args.prompt, cot=args.cot, shots=args.shots,
                batch_size=args.batch_size, cot_max_tokens=args.cot_max_tokens,
                template=template, progress=True,
            )
            for label in labels:
                f.write(json.dumps(label_to_record(label, config), ensure_ascii=False) + "\n")
                f.flush()
                written += 1
    except (OSError, ValueError) as exc:
        return _error(f"{exc} ({written} new labels were written to {out}; re-run to resume)")
    except KeyboardInterrupt:
        print(f"rlaif-gym label: interrupted; {written} new labels were written to {out}; "
              "re-run the same command to resume", file=sys.stderr)
        return 130
    finally:
        if written:
            print(f"wrote {written} labels to {out}", file=sys.stderr)

    found = read_labels_jsonl(out)
    print(format_table([alignment_report(found.records, source=str(out))]))
    return 0


# --------------------------------------------------------------------------- alignment


def run_alignment(args: argparse.Namespace) -> int:
    """Print alignment and position bias for each labels file; 2 if any file is bad."""
    reports, status = [], 0
    for path in args.labels:
        try:
            found = read_labels_jsonl(path)
            reports.append(alignment_report(found.records, source=str(path)))
        except (OSError, ValueError) as exc:
            print(f"rlaif-gym alignment: error: {path}: {exc}", file=sys.stderr)
            status = 2
            continue
        if found.bad_tail is not None:
            print(f"rlaif-gym alignment: warning: {path}: ignoring an incomplete last line",
                  file=sys.stderr)
        fit = sum(1 for r in found.records if (r.get("calibration") or {}).get("fit"))
        if fit:
            print(f"rlaif-gym alignment: warning: {path}: {fit} labels were calibrated on "
                  "their own human choices (`rlaif-gym calibrate` fit pairs); their alignment "
                  "is not held out", file=sys.stderr)
    if args.json:
        for report in reports:
            print(json.dumps(report.to_dict()))
    elif reports:
        print(format_table(reports))
    return status
