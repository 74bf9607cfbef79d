"""Evaluation metrics: classification by generation (with bootstrap intervals) and language modelling.

Usage:
    m = classification_metrics(["joy", None, "anger"], ["joy", "joy", "sadness"], ["anger", "joy", "sadness"])
    m["accuracy"], m["macro_f1"], m["confusion"]["matrix"], m["n_unparsed"]
    value, low, high = metric_with_ci(preds, refs, labels, metric="macro_f1", n_boot=1000, seed=0)
    lm_metrics(total_loss_sum=230.3, n_tokens=100, n_correct=41)   # loss, perplexity, token_accuracy

A prediction of None (the answer named no label) or a string outside label_names is "unparsed": it
counts as wrong for accuracy and as a miss (false negative) of the reference class for F1, and it has
its own column in the confusion matrix. Macro-F1 is averaged over all of label_names (scikit-learn's
f1_score with labels=label_names and zero_division=0).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from lmtune.stats import bootstrap_ci

UNPARSED = "unparsed"


def _encode(predictions: list[str | None], references: list[str], label_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Label indices for references and predictions; unparsed predictions get index len(label_names)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not references:
        raise ValueError("no examples to score")
    if len(set(label_names)) != len(label_names):
        raise ValueError(f"label_names has duplicates: {label_names}")
    index = {name: i for i, name in enumerate(label_names)}
    unknown = sorted({r for r in references if r not in index})
    if unknown:
        raise ValueError(f"references {unknown} are not in label_names {label_names}")
    refs = np.array([index[r] for r in references], dtype=np.int64)
    preds = np.array([index.get(p, len(label_names)) if p is not None else len(label_names) for p in predictions], dtype=np.int64)
    return refs, preds


def classification_metrics(predictions: list[str | None], references: list[str], label_names: list[str]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix (JSON-ready)."""
    # Imported here: scikit-learn pulls in pandas and pyarrow (~100 MB resident) that training never needs.
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    refs, preds = _encode(predictions, references, label_names)
    k = len(label_names)
    labels = list(range(k))
    precision, recall, f1, support = precision_recall_fscore_support(refs, preds, labels=labels, zero_division=0)
    # Rows are references (never unparsed), so the extra label only adds the "unparsed" column.
    matrix = confusion_matrix(refs, preds, labels=labels + [k])[:k]
    return {
        "n": int(len(refs)),
        "accuracy": float(accuracy_score(refs, preds)),
        "macro_f1": float(f1_score(refs, preds, labels=labels, average="macro", zero_division=0)),
        "n_unparsed": int((preds == k).sum()),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
            for i, name in enumerate(label_names)
        },
        "confusion": {"rows": list(label_names), "columns": [*label_names, UNPARSED], "matrix": matrix.tolist()},
    }


def metric_with_ci(
    predictions: list[str | None],
    references: list[str],
    label_names: list[str],
    metric: str = "macro_f1",
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """A metric and its seeded bootstrap interval: accuracy, macro_f1, macro_recall, f1:<label> (one class's
    F1) or f1:<label>,<label> (the F1 of those classes averaged)."""
    refs, preds = _encode(predictions, references, label_names)
    statistic = metric_statistic(metric, label_names)
    value = metric_value(predictions, references, label_names, metric)
    low, high = bootstrap_ci(lambda idx: statistic(refs[idx], preds[idx]), len(refs), n_boot, seed, level)
    return value, low, high


def metric_value(predictions: list[str | None], references: list[str], label_names: list[str], metric: str) -> float:
    """A metric's value alone (no interval), e.g. to compare prompts on the validation split."""
    refs, preds = _encode(predictions, references, label_names)
    return float(metric_statistic(metric, label_names)(refs[None, :], preds[None, :])[0])


def metric_statistic(metric: str, label_names: list[str]) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """statistic(refs, preds) -> one value per row of (batch, n) label-index arrays, for a metric name."""
    k = len(label_names)
    if metric == "accuracy":
        return lambda refs, preds: (refs == preds).mean(axis=1)
    if metric == "macro_f1":
        return lambda refs, preds: batched_macro_f1(refs, preds, k)
    if metric == "macro_recall":
        return lambda refs, preds: batched_macro_recall(refs, preds, k)
    names = [n.strip() for n in metric.removeprefix("f1:").split(",")]
    unknown = [n for n in names if n not in label_names]
    if not metric.startswith("f1:") or unknown or not names:
        raise ValueError(f"metric must be accuracy, macro_f1, macro_recall or f1:<label>[,<label>...] with labels "
                         f"from {label_names}, got {metric!r}")
    columns = [label_names.index(n) for n in names]
    return lambda refs, preds: batched_class_f1(refs, preds, k)[:, columns].mean(axis=1)


def batched_macro_recall(refs: np.ndarray, preds: np.ndarray, k: int) -> np.ndarray:
    """Recall averaged over classes 0..k-1 that occur, for each row of (batch, n) index arrays."""
    hits = np.stack([((refs == c) & (preds == c)).sum(axis=1) for c in range(k)], axis=1)
    support = np.stack([(refs == c).sum(axis=1) for c in range(k)], axis=1)
    # scikit-learn's recall_score(average="macro") over the classes present: absent ones have no recall.
    recall = np.divide(hits, support, out=np.zeros(hits.shape, dtype=np.float64), where=support > 0)
    return recall.sum(axis=1) / np.maximum((support > 0).sum(axis=1), 1)


def batched_macro_f1(refs: np.ndarray, preds: np.ndarray, k: int) -> np.ndarray:
    """Macro-F1 over classes 0..k-1 for each row of (batch, n) index arrays; index k is unparsed."""
    return batched_class_f1(refs, preds, k).mean(axis=1)


def batched_class_f1(refs: np.ndarray, preds: np.ndarray, k: int) -> np.ndarray:
    """(batch, k) F1 of each class 0..k-1 for each row of (batch, n) index arrays; index k is unparsed."""
    # scikit-learn scores one resample per call (about a millisecond each); counting all resamples'
    # confusion matrices with one bincount is ~100x faster and gives the same numbers (tested).
    batch = refs.shape[0]
    cells = (np.arange(batch)[:, None] * k + refs) * (k + 1) + preds
    counts = np.bincount(cells.ravel(), minlength=batch * k * (k + 1)).reshape(batch, k, k + 1)
    tp = np.diagonal(counts[:, :, :k], axis1=1, axis2=2)
    fn = counts.sum(axis=2) - tp
    fp = counts[:, :, :k].sum(axis=1) - tp
    denom = 2 * tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros(tp.shape, dtype=np.float64), where=denom > 0)


def lm_metrics(total_loss_sum: float, n_tokens: int, n_correct: int) -> dict:
    """Mean token loss, perplexity = exp(loss) and token accuracy from summed counts."""
    if n_tokens <= 0:
        raise ValueError(f"n_tokens must be positive, got {n_tokens}")
    loss = total_loss_sum / n_tokens
    # exp overflows to an error above ~709; an untrained model's perplexity is then just infinite.
    perplexity = math.exp(loss) if loss < 709 else math.inf
    return {"loss": loss, "perplexity": perplexity, "token_accuracy": n_correct / n_tokens}
