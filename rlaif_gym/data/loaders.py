"""Load the RLAIF datasets from a local folder, the Hugging Face Hub or the embedded sample.

Three sources, chosen by ``source=``:

* ``"local"``: a data folder (``data_dir=`` or ``$RLAIF_GYM_DATA``) laid out as
  :data:`DATA_LAYOUT`. Files are read with the standard library (``json``/``gzip``) so that
  every error names the file and the line.
* ``"hub"``: :func:`datasets.load_dataset` on the canonical hub datasets (:data:`HUB_TLDR_POSTS`,
  :data:`HUB_COMPARISONS`, :data:`HUB_HH`).
* ``"sample"``: about 30 short original examples per task shipped in ``rlaif_gym/data/sample/``,
  for smoke runs. ``split="sample"`` always selects it.

``source="auto"`` (the default) uses the data folder when one is given or set in the
environment, else the hub (skipped when ``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE`` is true),
else the sample, announcing the fallback with a :class:`DataSourceWarning`. Without network,
one quick connection attempt (:func:`hub_reachable`, at most 3 s, once per process) finds the
hub unreachable before the hub client would retry for about 20 s per dataset; set
``HF_HUB_OFFLINE=1`` (or pass ``source=``) to skip even that.

Every source goes through the same row -> record functions (:func:`post_from_row`,
:func:`comparison_from_row`, :func:`hh_pair_from_row`, :func:`pair_from_row`).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from rlaif_gym.data.records import (
    DataSource,
    HHPair,
    PreferencePair,
    RecordList,
    TldrComparison,
    TldrPost,
)

T = TypeVar("T")

#: Environment variable naming the local data folder.
ENV_DATA_DIR = "RLAIF_GYM_DATA"

#: OpenAI labeler confidences (1-9 scale) counted as high confidence: 1, 2 (summary 0) and
#: 8, 9 (summary 1).
HIGH_CONFIDENCE = frozenset({1, 2, 8, 9})

SOURCES = ("auto", "local", "hub", "sample")
TASKS = ("tldr", "helpful", "harmless")

HUB_TLDR_POSTS = "vwxyzjn/summarize_from_feedback_tldr_3_filtered"
HUB_COMPARISONS = "openai/summarize_from_feedback"
HUB_COMPARISONS_FALLBACK = "trl-internal-testing/tldr-preference-trl-style"
HUB_HH = "Anthropic/hh-rlhf"

SAMPLE_DIR = Path(__file__).resolve().parent / "sample"
SAMPLE_TLDR = "tldr_posts.jsonl"
SAMPLE_HH = {"helpful": "hh_helpful.jsonl", "harmless": "hh_harmless.jsonl"}

#: Final-turn marker of an HH dialogue; the response follows it after one space.
ASSISTANT_MARKER = "\n\nAssistant:"
#: ``context + ASSISTANT_PREFIX + response`` rebuilds the original HH string (see
#: :func:`split_hh_dialogue`).
ASSISTANT_PREFIX = ASSISTANT_MARKER + " "

DATA_LAYOUT = """\
<data_dir>/
  tldr/<split>.jsonl                     TL;DR posts, OpenAI fields id/subreddit/title/post/summary
  tldr/dove_sample/<split>.json          ...or DOVE fields instruction_id/subreddit/title/
                                         instruction/gold_response (JSON Lines)
  openai_summarize_from_feedback/comparisons/*.json
                                         OpenAI comparison batch files (JSON Lines: info,
                                         summaries, choice, split, extra.confidence, ...)
  hh_rlhf/helpful-base/<split>.jsonl.gz  Anthropic HH-RLHF, JSON Lines with chosen/rejected
  hh_rlhf/harmless-base/<split>.jsonl.gz (plain .jsonl also accepted)"""

PAIR_FILE_FORMATS = """\
  * OpenAI comparison batch (JSON Lines, .json/.jsonl): {"info": {...}, "summaries": [...],
    "choice": 0|1, "split": ..., "extra": {"confidence": ...}}
  * Anthropic HH-RLHF (JSON Lines, optionally .gz): {"chosen": "...", "rejected": "..."}
  * rlaif-gym pairs (JSON Lines, optionally .gz): {"id": ..., "context": ..., "responses": [a, b],
    "human_choice": 0|1|null (optional), "confidence": int|null (optional)}"""

_TRUE_VALUES = {"1", "ON", "YES", "TRUE"}
_POST_SPLITS = {"train": "train", "validation": "validation", "valid": "validation",
                "val": "validation", "test": "test"}
_COMPARISON_SPLITS = {"train": ("train",), "valid1": ("valid1",), "valid2": ("valid2",),
                      "validation": ("valid1", "valid2")}
_HH_SUBSETS = {"helpful": "helpful", "helpful-base": "helpful",
               "harmless": "harmless", "harmless-base": "harmless"}
_HH_SPLITS = ("train", "test")
_DOVE_POST_FIELDS = ("instruction_id", "subreddit", "title", "instruction", "gold_response")
_OPENAI_POST_FIELDS = ("id", "subreddit", "title", "post", "summary")


class DataSourceWarning(UserWarning):
    """The loader fell back to another source (for example the embedded sample)."""


class HubUnavailableError(RuntimeError):
    """``datasets.load_dataset`` failed (no network, missing package, unknown repository)."""


# --------------------------------------------------------------------------- formatting


def format_tldr_post(subreddit: str, title: str, post: str) -> str:
    """The TL;DR task input: ``"SUBREDDIT: r/{subreddit}\\nTITLE: {title}\\nPOST: {post}"``.

    ``title`` and ``post`` are stripped of surrounding whitespace.
    """
    return f"SUBREDDIT: r/{subreddit}\nTITLE: {title.strip()}\nPOST: {post.strip()}"


def split_hh_dialogue(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Split an HH ``chosen``/``rejected`` pair into ``(context, chosen_response,
    rejected_response)``.

    Rule: cut both strings at their LAST ``"\\n\\nAssistant:"``. If the two prefixes differ
    (a response itself contains ``"\\n\\nAssistant:"``; 9 helpful-base and 5 harmless-base
    test records do), cut both at the last ``"\\n\\nAssistant:"`` inside their longest common
    prefix instead, so the context is always shared. A response is the text after the marker
    with one leading space removed, hence for every record whose marker is followed by a space
    (all records of the real test splits)::

        context + "\\n\\nAssistant: " + chosen_response == chosen

    Raises:
        ValueError: a string has no ``"\\n\\nAssistant:"`` turn, or no shared one.
    """
    for name, text in (("chosen", chosen), ("rejected", rejected)):
        if ASSISTANT_MARKER not in text:
            raise ValueError(f"{name} dialogue has no {ASSISTANT_MARKER!r} turn: {text[:80]!r}")
    cut_c, cut_r = chosen.rfind(ASSISTANT_MARKER), rejected.rfind(ASSISTANT_MARKER)
    if chosen[:cut_c] == rejected[:cut_r]:
        cut = cut_c
    else:
        common = os.path.commonprefix([chosen, rejected])
        cut = common.rfind(ASSISTANT_MARKER)
        if cut < 0:
            raise ValueError(
                f"chosen and rejected share no {ASSISTANT_MARKER!r} turn; they start "
                f"{chosen[:60]!r} and {rejected[:60]!r}"
            )
    return chosen[:cut], _response_after(chosen[cut:]), _response_after(rejected[cut:])


def _response_after(tail: str) -> str:
    """``tail`` starts with the assistant marker; drop it and one following space."""
    rest = tail[len(ASSISTANT_MARKER):]
    return rest[1:] if rest.startswith(" ") else rest


# --------------------------------------------------------------------------- row -> record


def _get(row: Mapping[str, Any], name: str, where: str, kinds: type | tuple[type, ...] = str,
         optional: bool = False, hint: str = "") -> Any:
    """``row[name]`` checked against ``kinds``; ``None`` allowed when ``optional``."""
    if not isinstance(row, Mapping):
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if name not in row or (row[name] is None and not optional):
        raise ValueError(f"{where}: missing field {name!r}{hint}")
    value = row[name]
    if value is None:
        return None
    if isinstance(value, bool) and kinds is not bool or not isinstance(value, kinds):
        want = kinds.__name__ if isinstance(kinds, type) else "/".join(k.__name__ for k in kinds)
        raise ValueError(f"{where}: field {name!r} must be {want}, got {value!r:.60}")
    return value


def post_from_row(row: Mapping[str, Any], where: str) -> TldrPost:
    """A :class:`TldrPost` from OpenAI ``tldr_3_filtered`` fields (id, subreddit, title, post,
    summary) or DOVE fields (instruction_id, subreddit, title, instruction, gold_response).
    The summary is stripped; other text is kept as is. Extra fields are ignored."""
    dove = isinstance(row, Mapping) and ("instruction_id" in row or "gold_response" in row)
    names = _DOVE_POST_FIELDS if dove else _OPENAI_POST_FIELDS
    hint = (f" (a TL;DR post needs OpenAI fields {'/'.join(_OPENAI_POST_FIELDS)} or DOVE fields "
            f"{'/'.join(_DOVE_POST_FIELDS)})")
    post_id, subreddit, title, post, summary = (_get(row, n, where, hint=hint) for n in names)
    return TldrPost(id=post_id, subreddit=subreddit, title=title, post=post,
                    summary=summary.strip())


def _summaries(value: Any, where: str) -> list[Mapping[str, Any]]:
    """Normalise ``summaries``: a list of ``{text, policy, note}`` objects, or the
    dict-of-lists form that ``datasets`` gives for a ``Sequence`` of dicts."""
    if isinstance(value, Mapping):
        texts = value.get("text")
        if not isinstance(texts, list):
            raise ValueError(f"{where}: field 'summaries' has no list 'text'")
        policies = value.get("policy") or [""] * len(texts)
        value = [{"text": t, "policy": p} for t, p in zip(texts, policies, strict=False)]
    if not isinstance(value, list) or len(value) != 2:
        n = len(value) if isinstance(value, list) else type(value).__name__
        raise ValueError(f"{where}: field 'summaries' must hold exactly 2 summaries, got {n}")
    return value


def comparison_from_row(row: Mapping[str, Any], record_id: str, where: str
                        ) -> TldrComparison | None:
    """A :class:`TldrComparison` from an OpenAI comparison row (local batch line or hub row).

    Returns ``None`` for CNN/DM rows (``info.post`` empty and ``info.article`` set), which are
    not TL;DR comparisons. Summary texts are kept as given (OpenAI's start with a space).
    """
    info = _get(row, "info", where, Mapping)
    info_where = f"{where}: info"
    if info.get("post") is None and info.get("article") is not None:
        return None
    summaries = []
    for k, item in enumerate(_summaries(_get(row, "summaries", where, (list, Mapping)), where)):
        item_where = f"{where}: summaries[{k}]"
        summaries.append((_get(item, "text", item_where),
                          _get(item, "policy", item_where, optional=True) or ""))
    choice = _get(row, "choice", where, int)
    if choice not in (0, 1):
        raise ValueError(f"{where}: field 'choice' must be 0 or 1, got {choice!r}")
    extra = (_get(row, "extra", where, Mapping, optional=True) or {}) if "extra" in row else {}
    confidence = None
    if "confidence" in extra:
        confidence = _get(extra, "confidence", f"{where}: extra", int, optional=True)
    return TldrComparison(
        id=record_id,
        subreddit=_get(info, "subreddit", info_where),
        title=_get(info, "title", info_where),
        post=_get(info, "post", info_where),
        summaries=(summaries[0][0], summaries[1][0]),
        choice=choice,
        confidence=confidence,
        split=_get(row, "split", where),
        policies=(summaries[0][1], summaries[1][1]),
        worker=(_get(row, "worker", where, optional=True) or "") if "worker" in row else "",
        post_id=_get(info, "id", info_where),
    )


def hh_pair_from_row(row: Mapping[str, Any], subset: str, split: str, index: int,
                     where: str) -> HHPair:
    """An :class:`HHPair` from ``{"chosen", "rejected"}``; ``id = f"{subset}-{split}-{index}"``
    where ``index`` is the 1-based line (local) or row (hub) number."""
    chosen = _get(row, "chosen", where)
    rejected = _get(row, "rejected", where)
    try:
        context, chosen_resp, rejected_resp = split_hh_dialogue(chosen, rejected)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc
    return HHPair(id=f"{subset}-{split}-{index}", context=context, chosen=chosen_resp,
                  rejected=rejected_resp, subset=f"{subset}-base")


def pair_from_row(row: Mapping[str, Any], task: str, where: str) -> PreferencePair:
    """A :class:`PreferencePair` from the rlaif-gym pair format ``{"id", "context",
    "responses": [a, b], "human_choice"?, "confidence"?, "task"?}``."""
    responses = _get(row, "responses", where, list)
    if len(responses) != 2 or not all(isinstance(r, str) for r in responses):
        raise ValueError(f"{where}: field 'responses' must be a list of 2 strings")
    human_choice = _get(row, "human_choice", where, int, optional=True) \
        if "human_choice" in row else None
    if human_choice not in (None, 0, 1):
        raise ValueError(f"{where}: field 'human_choice' must be 0, 1 or null, "
                         f"got {human_choice!r}")
    row_task = _get(row, "task", where, optional=True) if "task" in row else None
    if row_task is not None and row_task != task:
        raise ValueError(f"{where}: record is for task {row_task!r}, but task={task!r} was asked")
    confidence = _get(row, "confidence", where, int, optional=True) \
        if "confidence" in row else None
    return PreferencePair(id=str(_get(row, "id", where, (str, int))), task=task,
                          context=_get(row, "context", where),
                          responses=(responses[0], responses[1]),
                          human_choice=human_choice, confidence=confidence)


def comparison_to_pair(c: TldrComparison) -> PreferencePair:
    """TL;DR comparison -> pair: the formatted post, the two summaries stripped, the human
    choice and confidence."""
    return PreferencePair(id=c.id, task="tldr",
                          context=format_tldr_post(c.subreddit, c.title, c.post),
                          responses=(c.summaries[0].strip(), c.summaries[1].strip()),
                          human_choice=c.choice, confidence=c.confidence)


def hh_to_pair(p: HHPair, task: str) -> PreferencePair:
    """HH pair -> preference pair: ``responses = (chosen, rejected)``, ``human_choice = 0``
    (for harmless the chosen response is the less harmful one)."""
    return PreferencePair(id=p.id, task=task, context=p.context,
                          responses=(p.chosen, p.rejected), human_choice=0)


# --------------------------------------------------------------------------- files


def _read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, value)`` for each non-blank line (1-based); gzip when the name
    ends in ``.gz``. Raises ValueError naming ``path:line`` on malformed JSON."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{lineno}: malformed JSON ({exc.msg} at column "
                                     f"{exc.colno}); expected one JSON object per line") from None
    except (gzip.BadGzipFile, UnicodeDecodeError, EOFError) as exc:
        raise ValueError(f"{path}: cannot read as {'gzip ' if opener is gzip.open else ''}"
                         f"UTF-8 JSON Lines: {exc}") from exc


def _first_existing(candidates: list[Path], what: str) -> Path:
    for path in candidates:
        if path.is_file():
            return path
    tried = "\n".join(f"  {p}" for p in candidates)
    raise FileNotFoundError(f"no {what} file; tried:\n{tried}\nA data folder is laid out as:\n"
                            f"{DATA_LAYOUT}")


def _natural_key(path: Path) -> list[Any]:
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", path.name)]


def _nonempty(records: list[T], source: DataSource, what: str) -> RecordList[T]:
    if not records:
        raise ValueError(f"{what} is empty ({source})")
    return RecordList(records, source)


# --------------------------------------------------------------------------- source choice


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The local data folder: ``data_dir`` if given, else ``$RLAIF_GYM_DATA`` if set and
    non-empty, else ``None``.

    Raises:
        FileNotFoundError: the folder given (or named by the variable) does not exist; the
            message names it and shows the expected layout (:data:`DATA_LAYOUT`).
        NotADirectoryError: it exists but is a file.
    """
    origin = "data_dir"
    if data_dir is None:
        env = os.environ.get(ENV_DATA_DIR, "").strip()
        if not env:
            return None
        data_dir, origin = env, f"${ENV_DATA_DIR}"
    if not isinstance(data_dir, (str, os.PathLike)):
        raise TypeError(f"data_dir must be a str or path, got {type(data_dir).__name__}")
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"data folder {path} (from {origin}) does not exist; expected a "
                                f"folder laid out as:\n{DATA_LAYOUT}")
    if not path.is_dir():
        raise NotADirectoryError(f"data folder {path} (from {origin}) is not a directory")
    return path.resolve()


def _offline_reason() -> str | None:
    """``"HF_HUB_OFFLINE=1"`` (or the datasets variable) when hub access is switched off."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        value = os.environ.get(name, "")
        if value.strip().upper() in _TRUE_VALUES:
            return f"{name}={value} is set"
    return None


#: Seconds :func:`hub_reachable` waits for a connection to the hub.
HUB_PROBE_TIMEOUT = 3.0
_hub_probe: dict[str, bool] = {}


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT) -> bool:
    """Whether a TCP connection to the Hugging Face Hub (``$HF_ENDPOINT``, default
    huggingface.co, port 443) opens within ``timeout`` seconds. Asked once per process and
    endpoint; the answer is cached, so an offline machine pays the wait once instead of the
    hub client's retries (about 20 s per dataset)."""
    import socket
    import threading
    from urllib.parse import urlparse

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if endpoint not in _hub_probe:
        url = urlparse(endpoint)
        host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme !=
                                                                      "http" else 80)
        result: list[bool] = []

        def probe() -> None:
            try:
                socket.create_connection((host, port), timeout=timeout).close()
                result.append(True)
            except OSError:
                result.append(False)

        thread = threading.Thread(target=probe, daemon=True)  # DNS has no timeout of its own
        thread.start()
        thread.join(timeout + 0.5)
        _hub_probe[endpoint] = bool(result and result[0])
    return _hub_probe[endpoint]


def _hub_load(repo: str, split: str, **kwargs: Any) -> Iterable[Mapping[str, Any]]:
    """``datasets.load_dataset(repo, split=split, **kwargs)``; any failure (no network,
    package missing, unknown repo) becomes :class:`HubUnavailableError`."""
    try:
        from datasets import load_dataset

        return load_dataset(repo, split=split, **kwargs)
    except Exception as exc:
        extra = "".join(f", {k}={v!r}" for k, v in kwargs.items())
        raise HubUnavailableError(f"load_dataset({repo!r}, split={split!r}{extra}) failed: "
                                  f"{type(exc).__name__}: {exc}") from exc


def _check_choice(name: str, value: object, allowed: Iterable[object]) -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; expected one of {allowed}")


def _dispatch(what: str, split: object, data_dir: str | os.PathLike[str] | None, source: str, *,
              local: Callable[[Path], RecordList[T]], hub: Callable[[], RecordList[T]],
              sample: Callable[[], RecordList[T]]) -> RecordList[T]:
    """Pick the source (see the module docstring) and call its loader."""
    _check_choice("source", source, SOURCES)
    if split == "sample" or source == "sample":
        return sample()
    if source == "hub":
        return hub()
    root = resolve_data_dir(data_dir)
    if root is not None:
        return local(root)
    if source == "local":
        raise FileNotFoundError(f"source='local' needs a data folder: pass data_dir= or set "
                                f"${ENV_DATA_DIR}; the folder is laid out as:\n{DATA_LAYOUT}")
    reason = _offline_reason()
    if reason is None and not hub_reachable():
        reason = (f"the Hugging Face Hub is not reachable (no connection within "
                  f"{HUB_PROBE_TIMEOUT:.0f} s)")
    if reason is None:
        try:
            return hub()
        except HubUnavailableError as exc:
            reason = f"the Hugging Face Hub is unavailable ({exc})"
    records = sample()
    warnings.warn(
        f"{what}: no data folder given and {reason}; using the embedded sample "
        f"({len(records)} records, {records.source}). For the real data pass data_dir=... or set "
        f"{ENV_DATA_DIR} to a folder laid out as rlaif_gym.data.DATA_LAYOUT.",
        DataSourceWarning, stacklevel=4)
    return records


# --------------------------------------------------------------------------- TL;DR posts


def _local_posts(root: Path, split: str) -> RecordList[TldrPost]:
    names = [split] + (["valid"] if split == "validation" else [])
    tldr = root / "tldr"
    candidates = [tldr / f"{n}{ext}" for n in names for ext in (".jsonl", ".jsonl.gz", ".json")]
    candidates += [tldr / "dove_sample" / f"{n}{ext}" for n in names for ext in (".json", ".jsonl")]
    path = _first_existing(candidates, f"TL;DR posts for split {split!r}")
    posts = [post_from_row(row, f"{path}:{n}") for n, row in _read_jsonl(path)]
    return _nonempty(posts, DataSource("local", str(path)), f"TL;DR split {split!r} in {path}")


def _hub_posts(split: str) -> RecordList[TldrPost]:
    rows = _hub_load(HUB_TLDR_POSTS, split)
    where = f"{HUB_TLDR_POSTS}[{split}] row"
    posts = [post_from_row(row, f"{where} {i}") for i, row in enumerate(rows)]
    return _nonempty(posts, DataSource("hub", f"{HUB_TLDR_POSTS}:{split}"),
                     f"TL;DR split {split!r}")


def _sample_post_rows() -> tuple[Path, list[tuple[int, Any]]]:
    path = SAMPLE_DIR / SAMPLE_TLDR
    return path, list(_read_jsonl(path))


def _sample_posts() -> RecordList[TldrPost]:
    path, rows = _sample_post_rows()
    posts = [post_from_row(row, f"{path}:{n}") for n, row in rows]
    return _nonempty(posts, DataSource("sample", str(path)), "TL;DR sample")


def load_tldr_posts(split: str = "test", data_dir: str | os.PathLike[str] | None = None,
                    source: str = "auto") -> RecordList[TldrPost]:
    """Reddit TL;DR posts with their reference summaries.

    Args:
        split: ``"train"``, ``"validation"`` (alias ``"valid"``), ``"test"`` or ``"sample"``.
        data_dir: local data folder (default ``$RLAIF_GYM_DATA``). Looks for
            ``tldr/<split>.jsonl`` (also ``.jsonl.gz``/``.json``, OpenAI field names), then
            ``tldr/dove_sample/<split>.json`` (DOVE field names).
        source: ``"auto"``, ``"local"``, ``"hub"`` (:data:`HUB_TLDR_POSTS`) or ``"sample"``.

    Returns:
        A :class:`RecordList` of :class:`TldrPost` with ``.source``. The sample has 30 posts
        (any split).
    """
    if split != "sample":
        _check_choice("TL;DR split", split, _POST_SPLITS)
        split = _POST_SPLITS[split]
    return _dispatch("load_tldr_posts", split, data_dir, source,
                     local=lambda root: _local_posts(root, split),
                     hub=lambda: _hub_posts(split), sample=_sample_posts)


# --------------------------------------------------------------------------- comparisons


def _select_comparisons(records: Iterable[TldrComparison], split: str | None,
                        high_confidence: bool, source: DataSource
                        ) -> RecordList[TldrComparison]:
    records = list(records)
    found = Counter(r.split for r in records)
    keep = records if split is None else [r for r in records
                                          if r.split in _COMPARISON_SPLITS[split]]
    if high_confidence:
        keep = [r for r in keep if r.confidence in HIGH_CONFIDENCE]
    if not keep:
        detail = f" with confidence in {sorted(HIGH_CONFIDENCE)}" if high_confidence else ""
        raise ValueError(f"no TL;DR comparisons for split {split!r}{detail} in {source} "
                         f"(splits found: {dict(found)})")
    return RecordList(keep, source)


def _local_comparisons(root: Path, split: str | None, high_confidence: bool
                       ) -> RecordList[TldrComparison]:
    folder = root / "openai_summarize_from_feedback" / "comparisons"
    if not folder.is_dir():
        raise FileNotFoundError(f"no comparisons folder {folder}; put the OpenAI batch files "
                                f"(JSON Lines *.json) there. A data folder is laid out as:\n"
                                f"{DATA_LAYOUT}")
    files = sorted((p for p in folder.iterdir() if p.is_file()
                    and p.name.endswith((".json", ".jsonl", ".json.gz", ".jsonl.gz"))),
                   key=_natural_key)
    if not files:
        raise FileNotFoundError(f"comparisons folder {folder} holds no *.json/*.jsonl batch "
                                f"files (OpenAI comparison JSON Lines)")
    records = []
    for path in files:
        stem = path.name.split(".")[0]
        for n, row in _read_jsonl(path):
            record = comparison_from_row(row, f"{stem}-{n}", f"{path}:{n}")
            if record is not None:
                records.append(record)
    return _select_comparisons(records, split, high_confidence,
                               DataSource("local", str(folder)))


def _hub_comparisons(split: str | None, high_confidence: bool) -> RecordList[TldrComparison]:
    if split is None:
        hub_splits = ["train", "validation"]
    else:
        hub_splits = ["train"] if split == "train" else ["validation"]
    attempts = [(HUB_COMPARISONS, {"name": "comparisons", "revision": "refs/convert/parquet"}),
                (HUB_COMPARISONS, {"data_dir": "comparisons", "revision": "refs/convert/parquet"}),
                (HUB_COMPARISONS_FALLBACK, {})]
    errors: list[str] = []
    for repo, kwargs in attempts:
        try:
            loaded = [(s, _hub_load(repo, s, **kwargs)) for s in hub_splits]
        except HubUnavailableError as exc:
            errors.append(str(exc))
            if isinstance(exc.__cause__, (ConnectionError, TimeoutError)):
                break  # no network: the other attempts would fail the same way
            continue
        records = []
        for hub_split, rows in loaded:
            for i, row in enumerate(rows):
                record = comparison_from_row(row, f"{hub_split}-{i}",
                                             f"{repo}[{hub_split}] row {i}")
                if record is not None:
                    records.append(record)
        location = f"{repo}:{'+'.join(hub_splits)}"
        return _select_comparisons(records, split, high_confidence, DataSource("hub", location))
    raise HubUnavailableError("no hub copy of the TL;DR comparisons could be loaded: "
                              + " | ".join(errors))


def _sample_comparisons(high_confidence: bool) -> RecordList[TldrComparison]:
    """Sample comparisons: each sample post's reference summary against its worse summary.
    Even lines put the reference first; confidences cycle 1,2,3 (choice 0) / 9,8,7
    (choice 1) so ``high_confidence`` keeps about two thirds."""
    path, rows = _sample_post_rows()
    records = []
    for k, (n, row) in enumerate(rows):
        where = f"{path}:{n}"
        post = post_from_row(row, where)
        worse = _get(row, "worse_summary", where)
        choice = k % 2
        texts = [post.summary, worse] if choice == 0 else [worse, post.summary]
        policies = ["ref", "worse"] if choice == 0 else ["worse", "ref"]
        confidence = (1, 2, 3)[k % 3] if choice == 0 else (9, 8, 7)[k % 3]
        openai_row = {
            "info": {"id": post.id, "subreddit": post.subreddit, "title": post.title,
                     "post": post.post},
            "summaries": [{"text": " " + t, "policy": p, "note": ""}
                          for t, p in zip(texts, policies, strict=True)],
            "choice": choice, "split": "sample", "worker": "sample", "batch": "sample",
            "extra": {"confidence": confidence},
        }
        records.append(comparison_from_row(openai_row, f"sample-{n}", where))
    return _select_comparisons(records, None, high_confidence, DataSource("sample", str(path)))


def load_tldr_comparisons(split: str | None = None,
                          data_dir: str | os.PathLike[str] | None = None,
                          high_confidence: bool = False,
                          source: str = "auto") -> RecordList[TldrComparison]:
    """OpenAI human comparisons of two TL;DR summaries (Stiennon et al. 2020).

    Args:
        split: ``None`` (all), ``"train"``, ``"valid1"``, ``"valid2"``, ``"validation"``
            (valid1 + valid2) or ``"sample"``; filters on each record's own ``split`` field.
        data_dir: local data folder; reads every ``*.json``/``*.jsonl`` batch file in
            ``openai_summarize_from_feedback/comparisons/`` in natural name order.
        high_confidence: keep only confidences in :data:`HIGH_CONFIDENCE` (1, 2, 8, 9).
        source: ``"auto"``, ``"local"``, ``"hub"`` or ``"sample"``.

    Returns:
        :class:`TldrComparison` records. ``id`` is ``"{batch file stem}-{line}"`` (local),
        ``"{hub split}-{row}"`` (hub) or ``"sample-{line}"``; ``post_id`` is the Reddit id.
        CNN/DM comparisons are skipped. The sample ignores ``split`` (all 30, split
        ``"sample"``).

    Raises:
        ValueError: no record left after the split/confidence filter (names the split).
    """
    if split not in (None, "sample"):
        _check_choice("comparison split", split, [None, *_COMPARISON_SPLITS])
    return _dispatch("load_tldr_comparisons", split, data_dir, source,
                     local=lambda root: _local_comparisons(root, split, high_confidence),
                     hub=lambda: _hub_comparisons(split, high_confidence),
                     sample=lambda: _sample_comparisons(high_confidence))


# --------------------------------------------------------------------------- HH-RLHF


def _hh_subset(subset: str) -> str:
    _check_choice("HH subset", subset, _HH_SUBSETS)
    return _HH_SUBSETS[subset]


def _local_hh(root: Path, subset: str, split: str) -> RecordList[HHPair]:
    folder = root / "hh_rlhf" / f"{subset}-base"
    path = _first_existing([folder / f"{split}.jsonl.gz", folder / f"{split}.jsonl"],
                           f"HH-RLHF {subset}-base split {split!r}")
    pairs = [hh_pair_from_row(row, subset, split, n, f"{path}:{n}")
             for n, row in _read_jsonl(path)]
    return _nonempty(pairs, DataSource("local", str(path)),
                     f"HH-RLHF {subset}-base split {split!r} in {path}")


def _hub_hh(subset: str, split: str) -> RecordList[HHPair]:
    rows = _hub_load(HUB_HH, split, data_dir=f"{subset}-base")
    where = f"{HUB_HH}/{subset}-base[{split}] row"
    pairs = [hh_pair_from_row(row, subset, split, i, f"{where} {i}")
             for i, row in enumerate(rows, 1)]
    return _nonempty(pairs, DataSource("hub", f"{HUB_HH}/{subset}-base:{split}"),
                     f"HH-RLHF {subset}-base split {split!r}")


def _sample_hh(subset: str) -> RecordList[HHPair]:
    path = SAMPLE_DIR / SAMPLE_HH[subset]
    pairs = [hh_pair_from_row(row, subset, "sample", n, f"{path}:{n}")
             for n, row in _read_jsonl(path)]
    return _nonempty(pairs, DataSource("sample", str(path)), f"HH {subset} sample")


def load_hh(subset: str, split: str = "test", data_dir: str | os.PathLike[str] | None = None,
            source: str = "auto") -> RecordList[HHPair]:
    """Anthropic HH-RLHF pairs split into shared context and final responses.

    Args:
        subset: ``"helpful"``/``"helpful-base"`` or ``"harmless"``/``"harmless-base"``.
        split: ``"train"``, ``"test"`` or ``"sample"``.
        data_dir: local data folder; reads ``hh_rlhf/<subset>-base/<split>.jsonl.gz`` (or
            ``.jsonl``).
        source: ``"auto"``, ``"local"``, ``"hub"`` (:data:`HUB_HH`) or ``"sample"``.

    Returns:
        :class:`HHPair` records with ``id = f"{subset}-{split}-{n}"`` (``n`` the 1-based line
        or hub row; subset short name) split by :func:`split_hh_dialogue`. Records with
        ``chosen == rejected`` are kept (2 in helpful-base test).
    """
    subset = _hh_subset(subset)
    if split != "sample":
        _check_choice("HH split", split, _HH_SPLITS)
    return _dispatch(f"load_hh({subset!r})", split, data_dir, source,
                     local=lambda root: _local_hh(root, subset, split),
                     hub=lambda: _hub_hh(subset, split), sample=lambda: _sample_hh(subset))


# --------------------------------------------------------------------------- pairs


def _detect_pair_format(row: Any, where: str) -> str:
    if isinstance(row, Mapping):
        if "info" in row and "summaries" in row:
            return "openai"
        if "chosen" in row and "rejected" in row:
            return "hh"
        if "context" in row and "responses" in row:
            return "pairs"
    keys = sorted(row) if isinstance(row, Mapping) else type(row).__name__
    raise ValueError(f"{where}: unrecognised preference record (keys {keys}); accepted "
                     f"formats:\n{PAIR_FILE_FORMATS}")


def _pairs_from_file(task: str, path: str | os.PathLike[str], split: str | None,
                     high_confidence: bool) -> RecordList[PreferencePair]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"preference file {file} does not exist; accepted formats:\n"
                                f"{PAIR_FILE_FORMATS}")
    rows = list(_read_jsonl(file))
    if not rows:
        raise ValueError(f"preference file {file} is empty")
    fmt = _detect_pair_format(rows[0][1], f"{file}:{rows[0][0]}")
    source = DataSource("local", str(file))
    if fmt == "openai":
        if task != "tldr":
            raise ValueError(f"{file} holds OpenAI TL;DR comparisons, but task={task!r}")
        if split is not None:
            _check_choice("comparison split", split, [None, *_COMPARISON_SPLITS])
        stem = file.name.split(".")[0]
        found = (comparison_from_row(row, f"{stem}-{n}", f"{file}:{n}") for n, row in rows)
        chosen = _select_comparisons([c for c in found if c is not None], split,
                                     high_confidence, source)
        return RecordList([comparison_to_pair(c) for c in chosen], source)
    if fmt == "hh":
        if task == "tldr":
            raise ValueError(f"{file} holds HH-RLHF chosen/rejected pairs, but task='tldr'")
        if high_confidence:
            raise ValueError("high_confidence=True needs confidence labels; HH-RLHF has none")
        label = split or file.name.split(".")[0]
        return RecordList([hh_to_pair(hh_pair_from_row(row, task, label, n, f"{file}:{n}"), task)
                           for n, row in rows], source)
    pairs = [pair_from_row(row, task, f"{file}:{n}") for n, row in rows]
    if high_confidence:
        pairs = [p for p in pairs if p.confidence in HIGH_CONFIDENCE]
    return _nonempty(pairs, source, f"pairs in {file} with confidence in "
                     f"{sorted(HIGH_CONFIDENCE)}")


def load_preference_pairs(task: str, path: str | os.PathLike[str] | None = None,
                          data_dir: str | os.PathLike[str] | None = None,
                          split: str | None = None, high_confidence: bool = False,
                          source: str = "auto", limit: int | None = None
                          ) -> RecordList[PreferencePair]:
    """Task-agnostic pairs for AI labelling.

    Args:
        task: ``"tldr"``, ``"helpful"`` or ``"harmless"``.
        path: an explicit JSON Lines file (format detected from its first record, see
            :data:`PAIR_FILE_FORMATS`; ``data_dir``/``source`` are then ignored); otherwise
            the task's dataset is loaded with :func:`load_tldr_comparisons` / :func:`load_hh`.
        data_dir, source: as for the dataset loaders.
        split: TL;DR: a comparison split (``None`` = all); HH: ``"train"``/``"test"``
            (``None`` = ``"test"``). For an HH ``path`` it only labels the ids (default: the
            file name before the first dot); for a pair file it is ignored.
        high_confidence: keep confidences in :data:`HIGH_CONFIDENCE` (TL;DR or pair files).
        limit: keep the first ``limit`` pairs (after filtering).

    Returns:
        TL;DR: ``context = format_tldr_post(...)``, ``responses`` the two summaries stripped,
        ``human_choice = choice``. HH: ``responses = (chosen, rejected)``, ``human_choice = 0``.
    """
    _check_choice("task", task, TASKS)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    if path is not None:
        pairs = _pairs_from_file(task, path, split, high_confidence)
    elif task == "tldr":
        comparisons = load_tldr_comparisons(split, data_dir, high_confidence, source)
        pairs = RecordList([comparison_to_pair(c) for c in comparisons], comparisons.source)
    else:
        if high_confidence:
            raise ValueError("high_confidence=True needs confidence labels; HH-RLHF has none")
        hh = load_hh(task, split or "test", data_dir, source)
        pairs = RecordList([hh_to_pair(p, task) for p in hh], hh.source)
    if limit is not None:
        pairs = RecordList(pairs[:limit], pairs.source)
    return pairs
