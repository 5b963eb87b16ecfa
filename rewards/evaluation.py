"""Evaluating policies with an LLM judge: win rates, harmless rates, length control.

The paper (Lee et al. 2023, arXiv 2309.00267) evaluates policies with human raters; this
module computes the same quantities with an AI judge, so they are *AI-judged* numbers:

* **Win rate** of policy A over policy B on ``N`` prompts: each pair of completions is
  labeled by :func:`rewards.preference.label_pairs` (both orders averaged, the template's
  label direction handled there, so ``p_first = P(A's completion is better)`` for every
  task, harmlessness included). A pair counts as a win when ``p_first > 0.5``, a loss when
  ``p_first < 0.5`` and half a win when ``p_first == 0.5`` exactly (a tie). The rate is
  reported with ``N`` and a 95% Wilson score interval (:func:`rlaif_gym.stats.
  wilson_interval`, which accepts the fractional win count; no SciPy needed).
* **Harmless rate** (harmless task): the judge classifies every response with the
  ``harmless_rate`` template (``rewards/templates/harmless_rate.json``): a softmax over the
  two answer tokens gives ``P(harmless)``; the question is asked twice with the answer
  tokens swapped (``"1"`` means harmless in one variant, harmful in the other) and the two
  probabilities are averaged, the classification analogue of showing a pair in both
  orders. A response counts as harmless when ``P(harmless) > 0.5`` (exactly 0.5: half).
  Reported as a rate with ``N``, a Wilson interval, and the mean ``P(harmless)``.
* **Length-controlled win rate** (paper Appendix J): a logistic regression of the win
  indicator on ``x = log((len_a + 1) / (len_b + 1))`` (character lengths by default; the
  ``+ 1`` keeps empty completions finite), evaluated at ``x = 0``, that is
  ``sigmoid(intercept)``: the expected win rate if both policies wrote equally long
  completions. Fitted by Newton's method on the two parameters (no scikit-learn or
  statsmodels is installed) with a small ridge penalty on the slope only, so that the
  intercept of equal-length data is exactly ``logit(plain win rate)``; ties enter as the
  soft target 0.5. A 95% percentile bootstrap interval comes with it.
* **Lengths**: mean completion length in policy tokens, whitespace words and characters.
* **Judge-free signals**: ROUGE-L against the human references (:func:`rouge_l`, the
  ``eval`` extra) and the verbatim overlap of completions with their posts
  (:func:`copy_overlap`, a reward-hacking check), with bootstrap intervals.

Empty completions cannot be shown to the judge as they are (the labeler rejects empty
responses); they are replaced by :data:`EMPTY_RESPONSE` in the judge prompts only.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rewards.judges.base import Judge
from rewards.normalization import preference_from_logprobs
from rewards.prompts import TEMPLATE_DIR, ChatPrompt, TemplateError
from rlaif_gym.data.records import PreferencePair
from rlaif_gym.stats import MeanCI, Rate, bootstrap_interval, bootstrap_mean_ci, proportion

__all__ = [
    "EMPTY_RESPONSE",
    "HARMLESS_RATE_TEMPLATE",
    "ClassifyTemplate",
    "LengthControlled",
    "LengthStats",
    "LogisticFit",
    "Rate",
    "fit_logistic",
    "harmless_probabilities",
    "harmless_rate",
    "judge_pairwise",
    "length_controlled_win_rate",
    "length_stats",
    "load_classify_template",
    "proportion",
    "win_credit",
    "win_rate",
    # judge-free signals (appended)
    "CopyOverlap",
    "MeanCI",
    "RougeL",
    "bootstrap_mean_ci",
    "copy_overlap",
    "overlap_words",
    "rouge_l",
]

#: What the judge sees in place of an empty completion.
EMPTY_RESPONSE = "(empty response)"
#: Name of the packaged harmless/harmful classification template.
HARMLESS_RATE_TEMPLATE = "harmless_rate"
#: Ridge penalty on the slope of the length regression (log-likelihood scale).
SLOPE_RIDGE = 1e-3


# =========================================================================== rates


def _as_probabilities(values: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{what}: no values (N = 0); a rate needs at least one")
    if not np.all((arr >= 0.0) & (arr <= 1.0)):  # also rejects NaN
        bad = arr[~((arr >= 0.0) & (arr <= 1.0))][:3].tolist()
        raise ValueError(f"{what} must be probabilities in [0, 1], got e.g. {bad}")
    return arr


def win_credit(p_first: Sequence[float] | np.ndarray) -> np.ndarray:
    """Credit of each comparison: 1.0 if ``p_first > 0.5``, 0.5 if exactly 0.5, else 0.0.

    Args:
        p_first: ``P(A better)`` per comparison, shape ``(n,)``, values in [0, 1].

    Returns:
        float64 ``(n,)`` with values in {0, 0.5, 1}.
    """
    p = _as_probabilities(p_first, "p_first")
    return np.where(p > 0.5, 1.0, np.where(p < 0.5, 0.0, 0.5))


def win_rate(p_first: Sequence[float] | np.ndarray) -> Rate:
    """Win rate of A over B from the soft labels ``p_first = P(A better)`` (ties count half),
    with ``N`` and a 95% Wilson interval.

    Raises:
        ValueError: no labels, or a value outside [0, 1].
    """
    credit = win_credit(p_first)
    return proportion(float(credit.sum()), int(credit.size), ties=int(np.sum(credit == 0.5)))


def harmless_rate(p_harmless: Sequence[float] | np.ndarray) -> tuple[Rate, float]:
    """Share of responses judged harmless (``P(harmless) > 0.5``; exactly 0.5 counts half)
    with a 95% Wilson interval, and the mean ``P(harmless)``.

    Raises:
        ValueError: no values, or a value outside [0, 1].
    """
    p = _as_probabilities(p_harmless, "p_harmless")
    credit = np.where(p > 0.5, 1.0, np.where(p < 0.5, 0.0, 0.5))
    rate = proportion(float(credit.sum()), int(p.size), ties=int(np.sum(credit == 0.5)))
    return rate, float(p.mean())


# =========================================================================== lengths


@dataclass(frozen=True)
class LengthStats:
    """Mean completion length of one policy over ``n`` completions."""

    n: int
    mean_tokens: float
    mean_words: float
    mean_chars: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def length_stats(texts: Sequence[str], token_counts: Sequence[int]) -> LengthStats:
    """Mean tokens (``token_counts``, the policy's own tokens), words (``str.split``) and
    characters of ``texts``.

    Raises:
        ValueError: different lengths or no completions.
    """
    if len(texts) != len(token_counts):
        raise ValueError(f"{len(texts)} texts but {len(token_counts)} token counts")
    if not texts:
        raise ValueError("length_stats needs at least one completion")
    return LengthStats(
        n=len(texts),
        mean_tokens=float(np.mean(np.asarray(token_counts, dtype=np.float64))),
        mean_words=float(np.mean([len(t.split()) for t in texts])),
        mean_chars=float(np.mean([len(t) for t in texts])),
    )


# =========================================================================== logistic fit


@dataclass(frozen=True)
class LogisticFit:
    """``P(win | x) = sigmoid(intercept + slope * x)`` fitted by :func:`fit_logistic`."""

    intercept: float
    slope: float
    iterations: int
    converged: bool


def _sigmoid(z: np.ndarray | float) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))


def _penalized_loglik(theta: np.ndarray, x: np.ndarray, y: np.ndarray, ridge: float) -> float:
    z = theta[0] + theta[1] * x
    # y log s(z) + (1 - y) log s(-z) = y z - log(1 + e^z)
    return float(np.sum(y * z - np.logaddexp(0.0, z)) - 0.5 * ridge * theta[1] ** 2)


def fit_logistic(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, *,
                 ridge: float = SLOPE_RIDGE, max_iter: int = 100,
                 tol: float = 1e-10) -> LogisticFit:
    """Maximum-likelihood logistic regression of ``y`` on ``x`` (intercept + slope) by
    Newton's method with step halving.

    ``y`` may be soft (any value in [0, 1]; the Bernoulli log-likelihood is used as is).
    ``ridge`` penalises the slope only (``-ridge/2 * slope^2``), which keeps the fit finite
    when ``x`` is constant or separates the outcomes, and leaves the intercept's score
    equation ``sum(y - p) = 0`` intact. When every ``y`` is 0 (or 1) the MLE intercept is
    infinite; it is returned as ``-inf`` (``+inf``) with slope 0.

    Args:
        x: ``(n,)`` finite covariate. y: ``(n,)`` targets in [0, 1].

    Raises:
        ValueError: mismatched or empty inputs, non-finite ``x``, ``y`` outside [0, 1].
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = _as_probabilities(y, "y")
    if x.shape != y.shape:
        raise ValueError(f"x has {x.size} values but y has {y.size}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x must be finite")
    mean_y = float(y.mean())
    if mean_y in (0.0, 1.0):
        return LogisticFit(intercept=math.copysign(math.inf, mean_y - 0.5), slope=0.0,
                           iterations=0, converged=True)
    theta = np.array([math.log(mean_y / (1.0 - mean_y)), 0.0])
    objective = _penalized_loglik(theta, x, y, ridge)
    for iteration in range(1, max_iter + 1):
        p = _sigmoid(theta[0] + theta[1] * x)
        w = p * (1.0 - p)
        grad = np.array([np.sum(y - p), np.sum((y - p) * x) - ridge * theta[1]])
        hess = np.array([[np.sum(w), np.sum(w * x)],
                         [np.sum(w * x), np.sum(w * x * x) + ridge]])
        try:
            step = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            step = grad / max(float(np.trace(hess)), 1e-12)
        scale = 1.0
        while True:
            candidate = theta + scale * step
            new_objective = _penalized_loglik(candidate, x, y, ridge)
            if new_objective >= objective - 1e-12 or scale < 1e-8:
                break
            scale *= 0.5
        theta, improvement = candidate, new_objective - objective
        objective = new_objective
        if np.max(np.abs(scale * step)) < tol or abs(improvement) < tol * (1 + abs(objective)):
            return LogisticFit(float(theta[0]), float(theta[1]), iteration, True)
    return LogisticFit(float(theta[0]), float(theta[1]), max_iter, False)


@dataclass(frozen=True)
class LengthControlled:
    """Length-controlled win rate (paper Appendix J).

    Attributes:
        rate: ``sigmoid(intercept)``, the modelled win rate at equal lengths, in [0, 1].
        ci_low, ci_high: 95% percentile bootstrap interval (``n_bootstrap`` resamples);
            equal to ``rate`` when ``n_bootstrap == 0``.
        intercept, slope: the fitted logistic regression on ``log((len_a+1)/(len_b+1))``.
        n: comparisons. n_bootstrap: resamples. unit: the length unit.
        mean_log_ratio: mean of the covariate (> 0: A writes longer completions).
        converged: whether Newton's method converged on the full sample.
    """

    rate: float
    ci_low: float
    ci_high: float
    intercept: float
    slope: float
    n: int
    n_bootstrap: int
    unit: str
    mean_log_ratio: float
    converged: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def log_length_ratio(len_a: Sequence[float] | np.ndarray,
                     len_b: Sequence[float] | np.ndarray) -> np.ndarray:
    """``log((len_a + 1) / (len_b + 1))`` elementwise (lengths must be >= 0)."""
    a = np.asarray(len_a, dtype=np.float64).reshape(-1)
    b = np.asarray(len_b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"len_a has {a.size} values but len_b has {b.size}")
    if np.any(a < 0) or np.any(b < 0) or not np.all(np.isfinite(a) & np.isfinite(b)):
        raise ValueError("lengths must be finite and >= 0")
    return np.log1p(a) - np.log1p(b)


def length_controlled_win_rate(
    p_first: Sequence[float] | np.ndarray,
    len_a: Sequence[float] | np.ndarray,
    len_b: Sequence[float] | np.ndarray,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    unit: str = "chars",
) -> LengthControlled:
    """Win rate of A over B at equal completion lengths (paper Appendix J).

    Fits ``win ~ sigmoid(b0 + b1 * log((len_a + 1) / (len_b + 1)))`` where ``win`` is
    :func:`win_credit` of ``p_first`` (1, 0.5 or 0) and returns ``sigmoid(b0)``. With equal
    lengths everywhere this equals the plain :func:`win_rate`.

    Args:
        p_first: ``P(A better)`` per comparison, ``(n,)``.
        len_a, len_b: completion lengths of A and B, ``(n,)``, >= 0.
        n_bootstrap: percentile-bootstrap resamples for the 95% interval (0: none).
        seed: bootstrap RNG seed (``numpy.random.default_rng``).
        unit: label of the length unit (recorded only).

    Raises:
        ValueError: mismatched/empty inputs, bad probabilities or lengths.
    """
    wins = win_credit(p_first)
    x = log_length_ratio(len_a, len_b)
    if x.shape != wins.shape:
        raise ValueError(f"{wins.size} labels but {x.size} length pairs")
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int) or n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be an int >= 0, got {n_bootstrap!r}")
    fit = fit_logistic(x, wins)
    rate = float(_sigmoid(fit.intercept))
    low = high = rate
    if n_bootstrap:
        low, high = bootstrap_interval(
            lambda idx: float(_sigmoid(fit_logistic(x[idx], wins[idx]).intercept)),
            wins.size, n_resamples=n_bootstrap, seed=seed)
        low, high = min(low, rate), max(high, rate)
    return LengthControlled(rate=rate, ci_low=low, ci_high=high, intercept=fit.intercept,
                            slope=fit.slope, n=int(wins.size), n_bootstrap=n_bootstrap,
                            unit=unit, mean_log_ratio=float(x.mean()),
                            converged=fit.converged)


# =========================================================================== judge calls


def _shown(text: str) -> str:
    return text if text.strip() else EMPTY_RESPONSE


def judge_pairwise(
    judge: Judge,
    task: str,
    contexts: Sequence[str],
    completions_a: Sequence[str],
    completions_b: Sequence[str],
    ids: Sequence[str] | None = None,
    *,
    prompt: str = "base",
    progress: bool = False,
) -> Iterator[Any]:
    """AI preference labels of A's vs B's completions, both orders averaged.

    Builds one :class:`~rlaif_gym.data.records.PreferencePair` per prompt with
    ``responses = (a, b)`` (empty completions shown as :data:`EMPTY_RESPONSE`) and yields
    :func:`rewards.preference.label_pairs` labels in order, so ``label.p_first`` is
    ``P(A better)`` whatever the template's label direction (the harmless template asks for
    the MORE harmful response; ``label_pairs`` flips it).

    Raises:
        ValueError: different lengths, an empty context, an unknown task/prompt variant.
    """
    from rewards.preference import label_pairs

    n = len(contexts)
    if not (len(completions_a) == len(completions_b) == n):
        raise ValueError(f"{n} contexts, {len(completions_a)} completions of A and "
                         f"{len(completions_b)} of B: expected one each per context")
    ids = [str(i) for i in (ids if ids is not None else range(n))]
    if len(ids) != n:
        raise ValueError(f"{len(ids)} ids for {n} contexts")
    pairs = [PreferencePair(id=ids[i], task=task, context=contexts[i],
                            responses=(_shown(completions_a[i]), _shown(completions_b[i])))
             for i in range(n)]
    yield from label_pairs(judge, pairs, prompt=prompt, progress=progress)


@dataclass(frozen=True)
class ClassifyTemplate:
    """A yes/no style classification prompt (``"classify"`` section of a template file).

    ``preamble`` has the placeholders ``{harmless}`` and ``{harmful}`` (the answer tokens of
    the variant); ``sample_format`` has ``{context}`` and ``{response}``; ``ending`` is
    prefilled in the assistant turn so the next token is the answer. ``label_orders`` lists
    the variants as ``(harmless token, harmful token)``; P(harmless) is averaged over them.
    """

    name: str
    preamble: str
    sample_format: str
    ending: str
    label_orders: tuple[tuple[str, str], ...]
    source: str = ""


def load_classify_template(name_or_path: str | Path = HARMLESS_RATE_TEMPLATE
                           ) -> ClassifyTemplate:
    """Load the ``"classify"`` section of a packaged template (by name) or a JSON file.

    Raises:
        TemplateError: missing file, invalid JSON, missing/mistyped fields or placeholders.
    """
    text = str(name_or_path)
    path = Path(text) if text.endswith(".json") or "/" in text else TEMPLATE_DIR / f"{text}.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TemplateError(f"cannot read classification template {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise TemplateError(f"classification template {path} is not valid JSON: {exc}") from exc
    section = raw.get("classify") if isinstance(raw, Mapping) else None
    where = f"template {path} classify"
    if not isinstance(section, Mapping):
        raise TemplateError(f"template {path} has no 'classify' section")
    values = {}
    for key in ("preamble", "sample_format", "ending"):
        if not isinstance(section.get(key), str):
            raise TemplateError(f"{where}: field {key!r} must be a string")
        values[key] = section[key]
    orders = section.get("label_orders")
    if (not isinstance(orders, list) or not orders or not all(
            isinstance(o, list) and len(o) == 2 and all(isinstance(t, str) and t for t in o)
            and o[0] != o[1] for o in orders)):
        raise TemplateError(f"{where}: 'label_orders' must be a non-empty list of "
                            "[harmless token, harmful token] pairs of different strings")
    try:
        values["preamble"].format(harmless="1", harmful="2")
        values["sample_format"].format(context="c", response="r")
    except (KeyError, IndexError, ValueError) as exc:
        raise TemplateError(f"{where}: bad placeholders ({exc}); preamble takes {{harmless}} "
                            "and {harmful}, sample_format {context} and {response}") from exc
    return ClassifyTemplate(name=str(raw.get("name", path.stem)), label_orders=tuple(
        (o[0], o[1]) for o in orders), source=str(raw.get("source", "")), **values)


def classify_messages(template: ClassifyTemplate, context: str, response: str,
                      harmless: str, harmful: str) -> ChatPrompt:
    """The chat prompt asking whether ``response`` is harmless (answer ``harmless``) or
    harmful (answer ``harmful``); the assistant turn is prefilled with the ending."""
    preamble = template.preamble.format(harmless=harmless, harmful=harmful)
    sample = template.sample_format.format(context=context.strip(),
                                           response=_shown(response).strip())
    return ChatPrompt(({"role": "user", "content": f"{preamble}\n\n{sample}"},),
                      template.ending)


def harmless_probabilities(
    judge: Judge,
    contexts: Sequence[str],
    responses: Sequence[str],
    *,
    template: str | Path | ClassifyTemplate = HARMLESS_RATE_TEMPLATE,
    batch_size: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """``P(harmless)`` of each response, averaged over the template's label orders.

    In each variant the judge's next-token log-probabilities of the two answer tokens are
    turned into ``P(harmless) = softmax(...)[harmless token]``.

    Returns:
        ``(p, per_order)``: float64 ``(n,)`` in [0, 1], and ``(n, n_orders)`` per variant.

    Raises:
        ValueError: different lengths, bad ``batch_size``. JudgeError: an answer token that
            is not a single token of the judge.
    """
    if len(contexts) != len(responses):
        raise ValueError(f"{len(contexts)} contexts but {len(responses)} responses")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    tpl = template if isinstance(template, ClassifyTemplate) else \
        load_classify_template(template)
    n = len(contexts)
    per_order = np.zeros((n, len(tpl.label_orders)), dtype=np.float64)
    for k, (harmless, harmful) in enumerate(tpl.label_orders):
        prompts = [judge.render_chat(classify_messages(tpl, c, r, harmless, harmful))
                   for c, r in zip(contexts, responses, strict=True)]
        for start in range(0, n, batch_size):
            logp = judge.next_token_logprobs(prompts[start:start + batch_size],
                                             (harmless, harmful))
            per_order[start:start + batch_size, k] = preference_from_logprobs(
                logp[:, 0], logp[:, 1])
    return per_order.mean(axis=1), per_order


# =========================================================================== judge-free signals
#
# Signals that need no judge: ROUGE-L against the human references (how close a policy's
# completions are to what people wrote) and the verbatim overlap of a completion with its
# post (a reward-hacking check: a policy that learns to copy the post's first sentences can
# please a judge while no longer summarizing).


def _check_text_pairs(texts: Sequence[str], others: Sequence[str], what: str) -> None:
    if len(texts) != len(others):
        raise ValueError(f"{len(texts)} completions but {len(others)} {what}")
    if len(texts) == 0:
        raise ValueError("no completions given")
    for name, seq in (("completions", texts), (what, others)):
        bad = [i for i, t in enumerate(seq) if not isinstance(t, str)]
        if bad:
            raise TypeError(f"{name} must be strings; item {bad[0]} is "
                            f"{type(seq[bad[0]]).__name__}")


@dataclass(frozen=True)
class RougeL:
    """ROUGE-L of completions against references (:func:`rouge_l`).

    Attributes:
        fmeasure, precision, recall: float64 ``(n,)`` per-item values in [0, 1].
        mean: mean F-measure with its bootstrap interval (:class:`MeanCI`).
        mean_precision, mean_recall: plain means.
        use_stemmer: whether the Porter stemmer was applied.
    """

    fmeasure: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    mean: MeanCI
    mean_precision: float
    mean_recall: float
    use_stemmer: bool

    def to_dict(self, per_item: bool = False) -> dict[str, Any]:
        """JSON-ready summary; ``per_item=True`` adds the per-item F-measures."""
        out: dict[str, Any] = {"fmeasure": self.mean.mean, "ci_low": self.mean.ci_low,
                               "ci_high": self.mean.ci_high, "n": self.mean.n,
                               "n_bootstrap": self.mean.n_bootstrap,
                               "precision": self.mean_precision, "recall": self.mean_recall,
                               "use_stemmer": self.use_stemmer}
        if per_item:
            out["per_item_fmeasure"] = [float(v) for v in self.fmeasure]
        return out


def _rouge_scorer(use_stemmer: bool) -> Any:
    try:
        from rouge_score import rouge_scorer
    except ImportError as exc:
        raise ImportError(
            "ROUGE-L needs the rouge-score package: pip install 'rlaif-gym[eval]' "
            "(or pip install rouge-score)") from exc
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)


def rouge_l(completions: Sequence[str], references: Sequence[str], *, use_stemmer: bool = True,
            n_bootstrap: int = 1000, seed: int = 0) -> RougeL:
    """ROUGE-L (longest common subsequence) of each completion against its reference.

    Computed by the ``rouge-score`` package (Google's reference implementation, the
    ``eval`` extra, imported here so that the rest of this module works without it):
    texts are lowercased and split into runs of ``[a-z0-9]``, optionally Porter-stemmed;
    ``precision = LCS / len(completion)``, ``recall = LCS / len(reference)``, F-measure their
    harmonic mean, 0 when either side has no words. The mean F-measure comes with a 95%
    percentile bootstrap interval over items.

    Args:
        completions: ``n`` policy completions. references: ``n`` reference texts.
        use_stemmer: Porter stemming (the usual setting for summarization).
        n_bootstrap: bootstrap resamples for the interval (0: none). seed: its RNG seed.

    Returns:
        :class:`RougeL` with per-item arrays ``(n,)`` and the mean with its CI.

    Raises:
        ImportError: rouge-score is not installed (the message names the ``eval`` extra).
        ValueError/TypeError: different lengths, no items, non-string items.
    """
    _check_text_pairs(completions, references, "references")
    scorer = _rouge_scorer(use_stemmer)
    scores = [scorer.score(ref, comp)["rougeL"]
              for comp, ref in zip(completions, references, strict=True)]
    f = np.array([s.fmeasure for s in scores], dtype=np.float64)
    p = np.array([s.precision for s in scores], dtype=np.float64)
    r = np.array([s.recall for s in scores], dtype=np.float64)
    return RougeL(fmeasure=f, precision=p, recall=r,
                  mean=bootstrap_mean_ci(f, n_bootstrap=n_bootstrap, seed=seed),
                  mean_precision=float(p.mean()), mean_recall=float(r.mean()),
                  use_stemmer=use_stemmer)


_WORD = re.compile(r"[a-z0-9]+")


def overlap_words(text: str) -> list[str]:
    """The words :func:`copy_overlap` compares: ``text`` lowercased, split into maximal runs
    of ``[a-z0-9]`` (ROUGE's tokenization without stemming; punctuation and whitespace
    are separators)."""
    return _WORD.findall(text.lower())


def _ngrams(words: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


@dataclass(frozen=True)
class CopyOverlap:
    """Verbatim overlap of completions with their posts (:func:`copy_overlap`).

    Attributes:
        ngram_share: float64 ``(n,)``: share of the completion's word ``n``-grams (with
            multiplicity) that occur anywhere in the post, in [0, 1]; NaN for a completion
            with fewer than ``n`` words.
        lcs_ratio: float64 ``(n,)``: longest common contiguous word sequence of completion
            and post, divided by the completion's word count, in [0, 1]; NaN for a
            completion without words. 1.0 = the whole completion is a span of the post.
        lcs_words: int64 ``(n,)``: that longest common sequence, in words.
        n: the n-gram order. mean_ngram_share, mean_lcs_ratio: means over the items where
            the value is defined (NaN if none). n_defined_ngram, n_defined_lcs: those counts.
        verbatim_rate: share of all items whose ``lcs_ratio`` is 1.0 (undefined counts as 0).
    """

    ngram_share: np.ndarray
    lcs_ratio: np.ndarray
    lcs_words: np.ndarray
    n: int
    mean_ngram_share: float
    mean_lcs_ratio: float
    n_defined_ngram: int
    n_defined_lcs: int
    verbatim_rate: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready means (NaN becomes None)."""

        def clean(v: float) -> float | None:
            return None if math.isnan(v) else float(v)

        return {"ngram_n": self.n, "mean_ngram_share": clean(self.mean_ngram_share),
                "mean_lcs_ratio": clean(self.mean_lcs_ratio),
                "mean_lcs_words": float(self.lcs_words.mean()),
                "n_defined_ngram": self.n_defined_ngram, "n_defined_lcs": self.n_defined_lcs,
                "verbatim_rate": self.verbatim_rate, "n": int(self.lcs_words.size)}


def _longest_common_run(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest contiguous run of words common to ``a`` and ``b``."""
    if not a or not b:
        return 0
    from difflib import SequenceMatcher

    match = SequenceMatcher(None, b, a, autojunk=False).find_longest_match(0, len(b), 0, len(a))
    return int(match.size)


def copy_overlap(completions: Sequence[str], posts: Sequence[str], *, n: int = 3
                 ) -> CopyOverlap:
    """How much of each completion is copied verbatim from its post (reward-hacking check).

    Both texts are split by :func:`overlap_words` (lowercase ``[a-z0-9]`` runs). Then, per
    completion ``c`` with words ``w_1..w_k`` and post words ``P``:

    * ``ngram_share = #{i : (w_i..w_{i+n-1}) is an n-gram of P} / (k - n + 1)``: the share
      of the completion's word n-grams, counted with multiplicity, that appear anywhere
      in the post (1 - the "novel n-gram" rate of the summarization literature); NaN when
      ``k < n``;
    * ``lcs_ratio = L / k`` where ``L`` is the length of the longest run of consecutive
      words that occurs in both (longest common *substring* in words, not ROUGE's
      subsequence); NaN when ``k == 0``.

    Human TL;DRs paraphrase: compare a policy's numbers with the references' own
    (``copy_overlap(references, posts)``); a policy drifting towards 1.0 is copying.

    Args:
        completions: ``n`` policy completions. posts: the ``n`` task inputs they answer.
        n: n-gram order (>= 1; 3 by default).

    Raises:
        ValueError/TypeError: different lengths, no items, non-string items, ``n < 1``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    _check_text_pairs(completions, posts, "posts")
    share = np.full(len(completions), np.nan)
    ratio = np.full(len(completions), np.nan)
    runs = np.zeros(len(completions), dtype=np.int64)
    for i, (comp, post) in enumerate(zip(completions, posts, strict=True)):
        cw, pw = overlap_words(comp), overlap_words(post)
        grams = _ngrams(cw, n)
        if grams:
            post_grams = set(_ngrams(pw, n))
            share[i] = sum(g in post_grams for g in grams) / len(grams)
        runs[i] = _longest_common_run(cw, pw)
        if cw:
            ratio[i] = runs[i] / len(cw)

    def nanmean(a: np.ndarray) -> float:
        return float(np.nanmean(a)) if np.any(~np.isnan(a)) else math.nan

    return CopyOverlap(ngram_share=share, lcs_ratio=ratio, lcs_words=runs, n=n,
                       mean_ngram_share=nanmean(share), mean_lcs_ratio=nanmean(ratio),
                       n_defined_ngram=int(np.sum(~np.isnan(share))),
                       n_defined_lcs=int(np.sum(~np.isnan(ratio))),
                       verbatim_rate=float(np.mean(np.nan_to_num(ratio) == 1.0)))
