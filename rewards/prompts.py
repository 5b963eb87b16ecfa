"""Prompt templates for AI feedback (Lee et al. 2023, "RLAIF vs. RLHF", arXiv 2309.00267).

A template is data (``rewards/templates/<task>.json``, or any JSON file a user passes by
path) with two parts:

* ``preference``: the pairwise labeling prompt of section 2.1 of the paper:

  1. a *preamble* (variants such as ``"base"`` and ``"detailed"``),
  2. optional few-shot *exemplars* (context, two responses, optional rationale, label),
  3. the *sample to annotate* (``sample_format`` with ``{context}``, ``{a}``, ``{b}``),
  4. the *ending* (``"Preferred Summary="``) whose next token is the label ``"1"``/``"2"``.

  ``label_selects`` says what the label picks: ``"better"`` (summaries, helpfulness) or
  ``"worse"`` (harmlessness: the judge names the MORE HARMFUL response, so
  P(response A preferred) = P(response B picked)). For chain-of-thought (CoT) the ending is
  replaced by ``cot_ending`` (a request for a rationale) and the assistant turn starts with
  ``cot_prefix`` (``"Rationale:"``).

* ``score``: the direct (d-RLAIF) prompt asking for a 1-10 rating of one response; its
  ``ending`` (``"SCORE: "``) ends with a space so that the next token is the first digit.

* ``pmi`` (optional): the prompts of PMI labels (``prompt="pmi"`` in
  :mod:`rewards.preference`), which ask no question: the judge's log-likelihood of a response
  after ``conditional`` (with ``{context}``) minus its log-likelihood after ``unconditional``
  (no context), i.e. the pointwise mutual information between context and response. The
  response is written as ``response_format`` (``" {response}\n"``); with ``"chat": true``
  both prompts are user messages rendered through the judge's chat template and the response
  is the assistant turn.

Rendering produces a :class:`ChatPrompt`: one user message (preamble, exemplars, sample and,
for CoT, the rationale request) and an ``assistant_prefix`` that the judge appends after the
chat template's generation prompt (:meth:`rewards.judges.Judge.render`), i.e. the ending is
*prefilled* as the start of the assistant turn and the next token is the label digit.

Context and responses are stripped of surrounding whitespace before formatting (TL;DR
summaries start with a space, HH contexts with ``"\\n\\n"``).
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rlaif_gym.errors import UsageError

__all__ = [
    "TEMPLATE_DIR",
    "ChatPrompt",
    "Exemplar",
    "PmiTemplate",
    "PreferenceTemplate",
    "PromptTemplate",
    "ScoreTemplate",
    "TemplateError",
    "available_templates",
    "load_template",
    "render_plain",
    "render_preference_messages",
    "render_score_messages",
]

#: Folder of the packaged templates (``<name>.json``).
TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"

LabelSelects = Literal["better", "worse"]


class TemplateError(UsageError):
    """A template file is missing, is not valid JSON, or lacks/mistypes a field."""


@dataclass(frozen=True)
class Exemplar:
    """A worked few-shot example. ``label`` is 1 or 2 (the response the label picks, in the
    sense of the template's ``label_selects``); ``rationale`` is used by CoT prompts."""

    context: str
    a: str
    b: str
    label: int
    rationale: str | None = None


@dataclass(frozen=True)
class PreferenceTemplate:
    """Pairwise labeling prompt. See the module docstring for the meaning of each field."""

    preambles: Mapping[str, str]
    sample_format: str
    ending: str
    labels: tuple[str, str]
    label_selects: LabelSelects
    cot_ending: str
    cot_prefix: str
    exemplars: tuple[Exemplar, ...] = ()
    cot_preambles: Mapping[str, str] = field(default_factory=dict)
    exemplar_header: str = "\u00bb\u00bb\u00bb\u00bb Example \u00bb\u00bb\u00bb\u00bb"
    exemplar_footer: str = (
        "\u00bb\u00bb\u00bb\u00bb Follow the instructions and the example(s) above "
        "\u00bb\u00bb\u00bb\u00bb"
    )


@dataclass(frozen=True)
class ScoreTemplate:
    """Direct 1-10 rating prompt: ``sample_format`` has ``{context}`` and ``{response}``;
    ``ending`` is prefilled in the assistant turn and should end with the text right before
    the score digit (``"SCORE: "``)."""

    preamble: str
    sample_format: str
    ending: str


@dataclass(frozen=True)
class PmiTemplate:
    """PMI labeling prompts: ``conditional`` has exactly ``{context}``, ``unconditional``
    no placeholder, ``response_format`` exactly ``{response}``; ``chat``: render the two
    prompts as user messages through the judge's chat template (the response is then the
    assistant turn) instead of using them as plain text."""

    conditional: str
    unconditional: str
    response_format: str = " {response}\n"
    chat: bool = False


@dataclass(frozen=True)
class PromptTemplate:
    """A loaded template file. ``preference`` / ``score`` are ``None`` when the file has no
    such section."""

    name: str
    task: str
    preference: PreferenceTemplate | None
    score: ScoreTemplate | None
    source: str = ""
    pmi: PmiTemplate | None = None
    notes: tuple[str, ...] = ()
    path: Path | None = None

    def require_preference(self) -> PreferenceTemplate:
        if self.preference is None:
            raise TemplateError(f"template {self.name!r} has no 'preference' section")
        return self.preference

    def require_score(self) -> ScoreTemplate:
        if self.score is None:
            raise TemplateError(f"template {self.name!r} has no 'score' section")
        return self.score

    def require_pmi(self) -> PmiTemplate:
        if self.pmi is None:
            raise TemplateError(f"template {self.name!r} has no 'pmi' section (prompt='pmi' "
                                "needs its conditional and unconditional prompts)")
        return self.pmi


@dataclass(frozen=True)
class ChatPrompt:
    """What a judge renders: chat ``messages`` plus the text prefilled at the start of the
    assistant turn.

    ``shared_user_head`` (preference prompts only) is the start of the user message that does
    not depend on the order of the two responses (preamble, exemplars and the context line),
    so both orders of a pair share the rendered prefix up to it.
    """

    messages: tuple[Mapping[str, str], ...]
    assistant_prefix: str
    shared_user_head: str | None = None

    @property
    def user_content(self) -> str:
        return self.messages[-1]["content"]


# --------------------------------------------------------------------------- loading


def available_templates() -> list[str]:
    """Names of the packaged templates (``load_template(name)`` accepts them)."""
    return sorted(p.stem for p in TEMPLATE_DIR.glob("*.json"))


def load_template(name_or_path: str | Path | PromptTemplate) -> PromptTemplate:
    """Load a packaged template by name (``"tldr"``, ``"helpful"``, ``"harmless"``) or a
    template JSON file by path. A :class:`PromptTemplate` is returned unchanged.

    Raises:
        TemplateError: unknown name (the message lists the packaged ones), unreadable file,
            invalid JSON, or a missing/mistyped field (the message names it).
    """
    if isinstance(name_or_path, PromptTemplate):
        return name_or_path
    path = _resolve_template_path(name_or_path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TemplateError(f"cannot read template file {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise TemplateError(f"template file {path} is not valid JSON: {exc}") from exc
    return _parse_template(raw, path)


def _resolve_template_path(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    looks_like_path = isinstance(name_or_path, Path) or text.endswith(".json") or "/" in text
    if looks_like_path:
        path = Path(text).expanduser()
        if not path.is_file():
            raise TemplateError(f"template file not found: {path}")
        return path
    path = TEMPLATE_DIR / f"{text}.json"
    if not path.is_file():
        raise TemplateError(
            f"unknown template {text!r}; packaged templates: {', '.join(available_templates())}, "
            "or pass the path of a template .json file"
        )
    return path


def _get(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise TemplateError(f"{where}: missing field {key!r}")
    value = obj[key]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise TemplateError(f"{where}: field {key!r} must be {names}, got {type(value).__name__}")
    return value


def _check_fields(fmt: str, expected: set[str], where: str) -> None:
    try:
        found = {f for _, f, _, _ in string.Formatter().parse(fmt) if f is not None}
    except ValueError as exc:
        raise TemplateError(f"{where}: bad format string {fmt!r}: {exc}") from exc
    if found != expected:
        raise TemplateError(
            f"{where}: placeholders {sorted(found)} found, expected exactly {sorted(expected)} "
            "(write literal braces as {{ and }})"
        )


def _str_map(value: object, where: str) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise TemplateError(f"{where} must be an object mapping variant names to strings")
    return dict(value)


def _parse_template(raw: object, path: Path) -> PromptTemplate:
    where = f"template {path}"
    if not isinstance(raw, Mapping):
        raise TemplateError(f"{where}: top level must be a JSON object")
    name = raw.get("name", path.stem)
    task = raw.get("task", name)
    pref_raw, score_raw = raw.get("preference"), raw.get("score")
    if pref_raw is None and score_raw is None:
        raise TemplateError(f"{where}: needs a 'preference' and/or a 'score' section")
    notes = raw.get("notes", ())
    notes = (notes,) if isinstance(notes, str) else tuple(str(n) for n in notes)
    return PromptTemplate(
        name=str(name),
        task=str(task),
        preference=None if pref_raw is None else _parse_preference(pref_raw, f"{where} preference"),
        score=None if score_raw is None else _parse_score(score_raw, f"{where} score"),
        source=str(raw.get("source", "")),
        pmi=None if raw.get("pmi") is None else _parse_pmi(raw["pmi"], f"{where} pmi"),
        notes=notes,
        path=path,
    )


def _parse_preference(raw: object, where: str) -> PreferenceTemplate:
    if not isinstance(raw, Mapping):
        raise TemplateError(f"{where} must be a JSON object")
    preambles = _str_map(_get(raw, "preambles", Mapping, where), f"{where}.preambles")
    if not preambles:
        raise TemplateError(f"{where}.preambles is empty; define at least one variant")
    sample_format = _get(raw, "sample_format", str, where)
    _check_fields(sample_format, {"context", "a", "b"}, f"{where}.sample_format")
    labels = tuple(raw.get("labels", ("1", "2")))
    valid = len(labels) == 2 and all(isinstance(x, str) and x for x in labels)
    if not valid or labels[0] == labels[1]:
        raise TemplateError(f"{where}.labels must be two different non-empty strings, got {labels}")
    selects = raw.get("label_selects", "better")
    if selects not in ("better", "worse"):
        raise TemplateError(f"{where}.label_selects must be 'better' or 'worse', got {selects!r}")
    exemplars = []
    for i, ex in enumerate(raw.get("exemplars", ())):
        ex_where = f"{where}.exemplars[{i}]"
        if not isinstance(ex, Mapping):
            raise TemplateError(f"{ex_where} must be a JSON object")
        label = _get(ex, "label", int, ex_where)
        if label not in (1, 2):
            raise TemplateError(f"{ex_where}.label must be 1 or 2, got {label!r}")
        rationale = ex.get("rationale")
        if rationale is not None and not isinstance(rationale, str):
            raise TemplateError(f"{ex_where}.rationale must be a string or null")
        exemplars.append(
            Exemplar(
                context=_get(ex, "context", str, ex_where),
                a=_get(ex, "a", str, ex_where),
                b=_get(ex, "b", str, ex_where),
                label=label,
                rationale=rationale,
            )
        )
    extra = {}
    for key in ("exemplar_header", "exemplar_footer"):
        if key in raw:
            extra[key] = _get(raw, key, str, where)
    return PreferenceTemplate(
        preambles=preambles,
        sample_format=sample_format,
        ending=_get(raw, "ending", str, where),
        labels=(labels[0], labels[1]),
        label_selects=selects,
        cot_ending=_get(raw, "cot_ending", str, where),
        cot_prefix=str(raw.get("cot_prefix", "Rationale:")),
        exemplars=tuple(exemplars),
        cot_preambles=_str_map(raw.get("cot_preambles", {}), f"{where}.cot_preambles"),
        **extra,
    )


def _parse_score(raw: object, where: str) -> ScoreTemplate:
    if not isinstance(raw, Mapping):
        raise TemplateError(f"{where} must be a JSON object")
    sample_format = _get(raw, "sample_format", str, where)
    _check_fields(sample_format, {"context", "response"}, f"{where}.sample_format")
    return ScoreTemplate(
        preamble=_get(raw, "preamble", str, where),
        sample_format=sample_format,
        ending=_get(raw, "ending", str, where),
    )


def _parse_pmi(raw: object, where: str) -> PmiTemplate:
    if not isinstance(raw, Mapping):
        raise TemplateError(f"{where} must be a JSON object")
    conditional = _get(raw, "conditional", str, where)
    _check_fields(conditional, {"context"}, f"{where}.conditional")
    unconditional = _get(raw, "unconditional", str, where)
    _check_fields(unconditional, set(), f"{where}.unconditional")
    response_format = raw.get("response_format", PmiTemplate.response_format)
    if not isinstance(response_format, str):
        raise TemplateError(f"{where}: field 'response_format' must be str")
    _check_fields(response_format, {"response"}, f"{where}.response_format")
    chat = raw.get("chat", False)
    if not isinstance(chat, bool):
        raise TemplateError(f"{where}: field 'chat' must be true or false, got {chat!r}")
    if not unconditional.strip() and not chat:
        raise TemplateError(f"{where}.unconditional is empty: a plain prompt needs at least "
                            "one token before the response")
    return PmiTemplate(conditional, unconditional, response_format, chat)


# --------------------------------------------------------------------------- rendering


def _clean(text: str, what: str) -> str:
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str, got {type(text).__name__}")
    return text.strip()


def _split_sample(fmt: str, context: str, a: str, b: str) -> tuple[str, str]:
    """Format the sample and split it into (order-independent head, rest).

    The head ends at the line break before the first response placeholder, so the split is a
    natural token boundary (the responses' lines start fresh)."""
    marker_a, marker_b = "\ue000", "\ue001"
    probe = fmt.format(context=context, a=marker_a, b=marker_b)
    first = min(probe.index(marker_a), probe.index(marker_b))
    cut = probe.rfind("\n", 0, first) + 1 or first
    full = fmt.format(context=context, a=a, b=b)
    return full[:cut], full[cut:]


def _render_exemplar(tpl: PreferenceTemplate, ex: Exemplar, cot: bool) -> str:
    sample = tpl.sample_format.format(
        context=ex.context.strip(), a=ex.a.strip(), b=ex.b.strip()
    )
    reasoning = ""
    if cot and ex.rationale:
        reasoning = f"{tpl.cot_prefix} {ex.rationale.strip()}\n"
    return f"{sample}\n{reasoning}{tpl.ending}{tpl.labels[ex.label - 1]}"


def _exemplar_block(tpl: PreferenceTemplate, shots: int, cot: bool) -> str:
    if shots == 0:
        return ""
    parts = []
    for ex in tpl.exemplars[:shots]:
        parts.append(tpl.exemplar_header)
        parts.append(_render_exemplar(tpl, ex, cot))
    parts.append(tpl.exemplar_footer)
    return "\n".join(parts) + "\n\n"


def _preamble(tpl: PreferenceTemplate, prompt: str, cot: bool) -> str:
    if prompt not in tpl.preambles:
        raise ValueError(
            f"unknown prompt variant {prompt!r}; this template defines: "
            f"{', '.join(sorted(tpl.preambles))}"
        )
    if cot and prompt in tpl.cot_preambles:
        return tpl.cot_preambles[prompt]
    return tpl.preambles[prompt]


def render_preference_messages(
    template: str | Path | PromptTemplate,
    context: str,
    a: str,
    b: str,
    *,
    prompt: str = "base",
    cot: bool = False,
    shots: int = 0,
) -> ChatPrompt:
    """The pairwise prompt showing ``a`` as response 1 and ``b`` as response 2.

    Non-CoT: the user message is ``preamble + exemplars + sample`` and the assistant turn is
    prefilled with ``ending`` (the next token is the label). CoT: the user message also ends
    with ``cot_ending`` and the assistant turn is prefilled with ``cot_prefix``; the caller
    generates the rationale and then appends ``"\\n" + ending`` to score the label.

    Args:
        template: a template name, path or loaded :class:`PromptTemplate`.
        context, a, b: the task input and the two responses (whitespace-stripped here).
        prompt: preamble variant (``"base"``, ``"detailed"``, ...).
        cot: chain-of-thought variant.
        shots: number of exemplars (``0 <= shots <= len(exemplars)``).

    Raises:
        ValueError: unknown variant, bad ``shots``. TemplateError: no preference section.
    """
    tpl = load_template(template).require_preference()
    n_ex = len(tpl.exemplars)
    if isinstance(shots, bool) or not isinstance(shots, int) or not 0 <= shots <= n_ex:
        raise ValueError(
            f"shots must be an integer in [0, {len(tpl.exemplars)}] for this template "
            f"(it has {len(tpl.exemplars)} exemplars), got {shots!r}"
        )
    preamble = _preamble(tpl, prompt, cot)
    head, rest = _split_sample(
        tpl.sample_format, _clean(context, "context"), _clean(a, "response a"),
        _clean(b, "response b"),
    )
    shared = f"{preamble}\n\n{_exemplar_block(tpl, shots, cot)}{head}"
    user = shared + rest
    if cot:
        user = f"{user}\n\n{tpl.cot_ending}"
    prefix = tpl.cot_prefix if cot else tpl.ending
    return ChatPrompt(({"role": "user", "content": user},), prefix, shared_user_head=shared)


def render_score_messages(
    template: str | Path | PromptTemplate, context: str, response: str
) -> ChatPrompt:
    """The direct 1-10 rating prompt for one response: the user message is
    ``preamble + "\\n\\n" + sample`` and the assistant turn is prefilled with the score
    ``ending`` (e.g. ``"SCORE: "``), so the next token is the first digit of the score."""
    tpl = load_template(template).require_score()
    sample = tpl.sample_format.format(
        context=_clean(context, "context"), response=_clean(response, "response")
    )
    user = f"{tpl.preamble}\n\n{sample}"
    return ChatPrompt(({"role": "user", "content": user},), tpl.ending)


def render_plain(messages: Sequence[Mapping[str, str]], assistant_prefix: str = "") -> str:
    """Plain-text rendering for tokenizers without a chat template: message contents joined
    by blank lines, then a newline and the assistant prefix (as in the paper's prompts)."""
    body = "\n\n".join(m["content"] for m in messages)
    return f"{body}\n{assistant_prefix}"
