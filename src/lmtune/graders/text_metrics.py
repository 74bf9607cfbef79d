"""Generation metrics: BLEU, chrF, ROUGE, exact match and GSM8K-style numeric match.

Usage:
    m = generation_metrics(hypotheses, references)            # bleu, chrf, rouge1/2/L, exact_match, n
    m = generation_metrics(hypotheses, references, numeric=True)  # ... plus numeric_match
    gsm8k_answer("She makes 9 * 2 = $18.\\n#### 18")             # "18"
    per_example_scores(hypotheses, references, "rougeL")       # one score per pair, for the bootstrap
    low, high = bleu_ci(hypotheses, references, n_boot=200, seed=0)

BLEU and chrF are sacrebleu's corpus metrics with default settings (13a tokenizer), so the figures
match the `sacrebleu` command line; scores are on sacrebleu's 0-100 scale. ROUGE F-measures come from
Google's rouge-score (with the Porter stemmer) averaged over examples, on a 0-1 scale, like exact
match and numeric match. Each hypothesis has exactly one reference. sacrebleu and rouge-score are imported where they are used:
rouge-score loads nltk, which loads scikit-learn, pandas and pyarrow (~100 MB resident), and a training
run reaches this module (GSM8K answer parsing for rewards) without scoring any text.
"""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation
from typing import Literal

import numpy as np

from lmtune.evaluate.metrics import bootstrap_ci

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
PerExampleMetric = Literal["exact_match", "numeric_match", "rouge1", "rouge2", "rougeL"]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
# A number: optional minus (not when it follows a word or digit, so "16-3" is 16 then 3, not -3),
# an integer part with well-formed thousands commas or plain digits, and an optional decimal part.
# "$" is left out on purpose: "$18" yields "18".
_NUMBER = re.compile(r"(?:(?<![\w.])[-\u2212])?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


def _check(hypotheses: list[str], references: list[str]) -> None:
    """Raise ValueError unless there is one reference per hypothesis and at least one pair."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        raise ValueError("no examples to score")


def bleu(hypotheses: list[str], references: list[str]) -> float:
    """Corpus BLEU (sacrebleu defaults, 0-100)."""
    from sacrebleu.metrics import BLEU

    _check(hypotheses, references)
    return float(BLEU().corpus_score(hypotheses, [references]).score)


def chrf(hypotheses: list[str], references: list[str]) -> float:
    """Corpus chrF (sacrebleu defaults, 0-100)."""
    from sacrebleu.metrics import CHRF

    _check(hypotheses, references)
    return float(CHRF().corpus_score(hypotheses, [references]).score)


def _rouge_per_example(hypotheses: list[str], references: list[str]) -> dict[str, list[float]]:
    """ROUGE F-measure of every pair, by rouge type."""
    from rouge_score import rouge_scorer

    _check(hypotheses, references)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    out: dict[str, list[float]] = {t: [] for t in ROUGE_TYPES}
    for hyp, ref in zip(hypotheses, references):
        scores = scorer.score(ref, hyp)  # rouge-score takes (target, prediction)
        for t in ROUGE_TYPES:
            out[t].append(float(scores[t].fmeasure))
    return out


def rouge(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """Mean rouge1, rouge2 and rougeL F-measures over examples (0-1)."""
    per = _rouge_per_example(hypotheses, references)
    return {t: float(np.mean(v)) for t, v in per.items()}


def _strip_punct(text: str) -> str:
    """Drop Unicode punctuation and whitespace at both ends, keeping it inside ("3.5", "o'clock")."""
    def junk(c: str) -> bool:
        return c.isspace() or unicodedata.category(c).startswith("P")

    start, end = 0, len(text)
    while start < end and junk(text[start]):
        start += 1
    while end > start and junk(text[end - 1]):
        end -= 1
    return text[start:end]


def normalize_answer(text: str) -> str:
    """NFKC, lowercase, strip surrounding punctuation, drop articles, collapse whitespace (SQuAD-like)."""
    text = _strip_punct(unicodedata.normalize("NFKC", text).lower())
    return " ".join(_ARTICLES.sub(" ", text).split())


def _exact_per_example(hypotheses: list[str], references: list[str]) -> list[float]:
    _check(hypotheses, references)
    return [float(normalize_answer(h) == normalize_answer(r)) for h, r in zip(hypotheses, references)]


def exact_match(hypotheses: list[str], references: list[str]) -> float:
    """Fraction of pairs equal after normalize_answer (0-1)."""
    return float(np.mean(_exact_per_example(hypotheses, references)))


def _canonical_number(raw: str) -> str | None:
    """'1,000' -> '1000', '18.0' -> '18', '−5' -> '-5'; None when it does not parse."""
    try:
        value = Decimal(raw.replace(",", "").replace("\u2212", "-"))
    except InvalidOperation:
        return None
    if value == 0:
        return "0"  # avoids "-0" and "0E+1"
    return format(value.normalize(), "f")


def gsm8k_answer(text: str | None) -> str | None:
    """Final numeric answer: the number after the last '####', else the last number in the text."""
    if not text:
        return None
    text = unicodedata.normalize("NFKC", text)
    head, sep, tail = text.rpartition("####")
    if sep:
        after = _NUMBER.findall(tail)
        if after:
            return _canonical_number(after[0])
    # No "####" (a free-form generation), or nothing numeric after it: fall back to the last number.
    numbers = _NUMBER.findall(text)
    return _canonical_number(numbers[-1]) if numbers else None


def _numeric_per_example(hypotheses: list[str], references: list[str]) -> list[float]:
    _check(hypotheses, references)
    out = []
    for hyp, ref in zip(hypotheses, references):
        want = gsm8k_answer(ref)
        out.append(float(want is not None and gsm8k_answer(hyp) == want))
    return out


def numeric_match(hypotheses: list[str], references: list[str]) -> float:
    """Fraction of pairs whose gsm8k_answer agrees (a reference without a number never matches)."""
    return float(np.mean(_numeric_per_example(hypotheses, references)))


def per_example_scores(hypotheses: list[str], references: list[str], metric: PerExampleMetric) -> list[float]:
    """One score per pair for exact_match, numeric_match or a rouge type, to bootstrap over."""
    if metric == "exact_match":
        return _exact_per_example(hypotheses, references)
    if metric == "numeric_match":
        return _numeric_per_example(hypotheses, references)
    if metric in ROUGE_TYPES:
        return _rouge_per_example(hypotheses, references)[metric]
    raise ValueError(f"metric must be one of exact_match, numeric_match, {', '.join(ROUGE_TYPES)}; got {metric!r}")


def bleu_ci(
    hypotheses: list[str], references: list[str], n_boot: int = 200, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of corpus BLEU, resampling sentence pairs; same seed, same interval."""
    from sacrebleu.metrics import BLEU

    _check(hypotheses, references)
    metric = BLEU()  # corpus BLEU does not decompose into per-sentence scores, so rescore each resample

    def statistic(indices: np.ndarray) -> np.ndarray:
        return np.array([
            metric.corpus_score([hypotheses[i] for i in row], [[references[i] for i in row]]).score for row in indices
        ])

    return bootstrap_ci(statistic, len(hypotheses), n_boot, seed, level)


def generation_metrics(hypotheses: list[str], references: list[str], numeric: bool = False) -> dict:
    """bleu, chrf, rouge1, rouge2, rougeL, exact_match, numeric_match (when numeric) and n."""
    out: dict = {"bleu": bleu(hypotheses, references), "chrf": chrf(hypotheses, references)}
    out.update(rouge(hypotheses, references))
    out["exact_match"] = exact_match(hypotheses, references)
    if numeric:
        out["numeric_match"] = numeric_match(hypotheses, references)
    out["n"] = len(hypotheses)
    return out
