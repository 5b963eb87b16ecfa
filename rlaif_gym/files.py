"""Crash-safe files: atomic writes, appended JSON Lines and their tolerant reader (core layer).

Every file rlaif-gym writes goes through here, so one set of rules holds everywhere:

* a file that is *replaced* (a report, a JSON summary, a plot, a split file) is written to a
  temporary sibling, flushed, fsynced and renamed over the target (:func:`atomic_write`,
  :func:`write_json`, :func:`write_jsonl`): a crash leaves the old file or the new one,
  never half of one;
* a file that *grows* (labels, judgments, metrics) gets one complete line per record,
  flushed after each (:class:`JsonlAppender`); a crash can only tear the last line;
* :func:`read_jsonl` reads such a file back and tolerates exactly that torn last line (it
  reports it, the caller decides whether to cut it off with :func:`truncate_torn_tail`).
  A torn write never ends in a newline (the newline is the last byte written), so a last
  line that ends in one but is not JSON is an error, not a crash remnant.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

__all__ = [
    "JsonlAppender",
    "display_path",
    "JsonlContent",
    "atomic_path",
    "atomic_write",
    "read_json",
    "read_jsonl",
    "truncate_torn_tail",
    "write_json",
    "write_jsonl",
]


_PACKAGE_PARENT = Path(__file__).resolve().parent.parent


def display_path(path: str | os.PathLike[str]) -> str:
    """``path`` as reports and messages that may be committed show it: never absolute (an
    absolute path names this machine). A file below the folder that holds the ``rlaif_gym``
    package is shown from there (``rlaif_gym/data/sample/...``), any other absolute path
    relative to the working folder."""
    text = os.fspath(path)
    if not os.path.isabs(text):
        return text
    resolved = Path(text).resolve()
    if resolved.is_relative_to(_PACKAGE_PARENT):
        return str(resolved.relative_to(_PACKAGE_PARENT))
    return os.path.relpath(text)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is fsynced and renamed over
    ``path`` (parents created), on error it is removed and ``path`` is untouched.

    For writers that want a path (``fig.savefig(tmp)``, ``torch.save(obj, tmp)``). The
    temporary name keeps ``path``'s suffix, so format detection by suffix still works.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}",
                                dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)  # mkstemp makes it private; outputs are meant to be shared
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Replace ``path`` with ``data`` (text as UTF-8) atomically; returns the path."""
    with atomic_path(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
    return Path(path)


def write_json(path: str | os.PathLike[str], data: Any, *, indent: int | None = 1) -> Path:
    """Replace ``path`` with ``data`` as JSON (UTF-8, a final newline) atomically."""
    return atomic_write(path, json.dumps(data, indent=indent, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """The JSON value in ``path`` (UTF-8)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_jsonl(path: str | os.PathLike[str], records: Iterable[Mapping[str, Any]]) -> Path:
    """Replace ``path`` with one JSON object per line, atomically."""
    lines = "".join(json.dumps(dict(r), ensure_ascii=False) + "\n" for r in records)
    return atomic_write(path, lines)


class JsonlAppender:
    """Appends JSON objects to a JSON Lines file, one complete line per record, flushed (and
    with ``fsync=True`` fsynced) after each, so a crash can only tear the last line. An
    existing file is first made to end cleanly (:func:`truncate_torn_tail`), so a record is
    never glued to a torn line.

    Use as a context manager::

        with JsonlAppender(path) as out:
            out.write({"id": "a", ...})

    Raises:
        ValueError: the existing file is not a JSON Lines file (it is left unchanged).
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_file() and self.path.stat().st_size:
            truncate_torn_tail(read_jsonl(self.path))
        self.fsync = fsync
        self._fh: IO[str] = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def write(self, record: Mapping[str, Any]) -> None:
        """Append ``record`` as one line and flush it."""
        self._fh.write(json.dumps(dict(record), ensure_ascii=False) + "\n")
        self._fh.flush()
        if self.fsync:
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class JsonlContent:
    """What :func:`read_jsonl` found.

    Attributes:
        path: the file.
        records: one dict per complete, valid line, in file order.
        valid_end: byte offset just after the last valid line (where appending continues).
        bad_tail: a torn last line (not JSON and no final newline), or ``None``.
        missing_newline: the last valid line has no trailing newline.
    """

    path: Path
    records: list[dict[str, Any]]
    valid_end: int
    bad_tail: str | None = None
    missing_newline: bool = False


def read_jsonl(path: str | os.PathLike[str]) -> JsonlContent:
    """Read a JSON Lines file of objects, tolerating only a torn *last* line.

    Blank lines are skipped. A last line that is not valid JSON *and has no final newline*
    (a write cut short by a crash) is returned in ``bad_tail`` instead of raising; the caller
    decides whether to cut it off (:func:`truncate_torn_tail`).

    Raises:
        OSError: the file cannot be read.
        ValueError: a line is not valid JSON (other than a torn last line), or a line is not
            a JSON object (the message gives the line number).
    """
    path = Path(path)
    data = path.read_bytes()
    records: list[dict[str, Any]] = []
    valid_end = 0
    offset = 0
    lines = data.split(b"\n")
    last_index = max(i for i, line in enumerate(lines) if line.strip()) if data.strip() else -1
    for index, raw in enumerate(lines):
        line_end = offset + len(raw) + (1 if index < len(lines) - 1 else 0)
        if raw.strip():
            try:
                record = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                torn = index == last_index and not data[offset:].rstrip(b" \t\r").endswith(b"\n")
                if torn:
                    text = raw.decode("utf-8", errors="replace")
                    return JsonlContent(path, records, valid_end, bad_tail=text)
                raise ValueError(
                    f"{path}: line {index + 1} is not valid JSON ({exc}); only a torn last line "
                    "(no final newline, as a crash mid-write leaves it) is tolerated"
                ) from exc
            if not isinstance(record, dict):
                raise ValueError(
                    f"{path}: line {index + 1} is {type(record).__name__}, expected a JSON object"
                )
            records.append(record)
            valid_end = line_end
        offset = line_end
    missing_newline = bool(records) and not data[:valid_end].endswith(b"\n")
    return JsonlContent(path, records, valid_end, missing_newline=missing_newline)


def truncate_torn_tail(content: JsonlContent) -> None:
    """Make ``content.path`` end cleanly after its last valid record, so appending continues
    on a fresh line: cut off a torn last line, or add a missing final newline.

    Raises:
        ValueError: the file holds no valid record at all (then it is not a file this
            library wrote, and nothing is cut).
        OSError: the file cannot be written.
    """
    if content.bad_tail is not None:
        if not content.records:
            raise ValueError(f"{content.path} holds no JSON record, only the line "
                             f"{content.bad_tail[:60]!r}: not a JSON Lines file written by "
                             "rlaif-gym; refusing to change it")
        with open(content.path, "r+b") as fh:
            fh.truncate(content.valid_end)
    elif content.missing_newline:
        with open(content.path, "ab") as fh:
            fh.write(b"\n")
