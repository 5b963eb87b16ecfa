"""Typed records returned by the data loaders. All text fields are plain ``str``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from rlaif_gym.files import display_path

T = TypeVar("T")

SourceKind = Literal["local", "hub", "sample"]



@dataclass(frozen=True)
class DataSource:
    """Where a split was read from: ``kind`` in {local, hub, sample}, ``location`` a path or
    hub id."""

    kind: SourceKind
    location: str

    def __str__(self) -> str:
        if self.kind == "hub":
            return f"{self.kind}:{self.location}"
        return f"{self.kind}:{display_path(self.location)}"


class RecordList(list, Generic[T]):
    """A list of records that remembers its :class:`DataSource` (``.source``)."""

    def __init__(self, records: list[T], source: DataSource) -> None:
        super().__init__(records)
        self.source = source


@dataclass(frozen=True)
class TldrPost:
    """A Reddit TL;DR post with its human-written reference summary."""

    id: str
    subreddit: str
    title: str
    post: str
    summary: str


@dataclass(frozen=True)
class TldrComparison:
    """One OpenAI human comparison of two summaries of the same post.

    ``choice`` is the index (0 or 1) of the preferred summary; ``confidence`` is the
    labeler's 1-9 confidence (``None`` when the source has none). ``id`` identifies the
    comparison; ``post_id`` is the Reddit post id (several comparisons share a post).
    """

    id: str
    subreddit: str
    title: str
    post: str
    summaries: tuple[str, str]
    choice: int
    confidence: int | None
    split: str
    policies: tuple[str, str] = ("", "")
    worker: str = ""
    post_id: str = ""


@dataclass(frozen=True)
class HHPair:
    """An Anthropic HH-RLHF record split into the shared dialogue and the two final turns.

    ``context`` is the dialogue before the final assistant turn, in the dataset's own form
    (``"\\n\\nHuman: ...\\n\\nAssistant: ..."``), ending with the last human turn.
    ``chosen`` / ``rejected`` are the final assistant responses without the
    ``"Assistant:"`` prefix. ``subset`` is ``"helpful-base"`` or ``"harmless-base"``.
    """

    id: str
    context: str
    chosen: str
    rejected: str
    subset: str


@dataclass(frozen=True)
class PreferencePair:
    """A task-agnostic pair to label: the judge sees ``context`` and two responses.

    ``human_choice`` is 0 or 1 (index of the human-preferred response) or ``None``.
    For the harmless task the human choice is the *less harmful* response.
    """

    id: str
    task: str
    context: str
    responses: tuple[str, str]
    human_choice: int | None = None
    confidence: int | None = None


@dataclass(frozen=True)
class PromptRecord:
    """One prompt for a text-generation episode.

    ``text`` is the plain task input that the judge sees (for TL;DR: subreddit, title and
    post; for HH: the dialogue context). ``reference`` is a reference completion when the
    dataset has one.
    """

    id: str
    task: str
    text: str
    reference: str | None = None
