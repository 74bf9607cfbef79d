"""Is the fine-tuned system really better than the baseline? Paired tests on the SAME examples.

Usage:
    mcnemar(base_correct, tuned_correct)                 # {"b", "c", "statistic", "p_value", "test"}
    paired_bootstrap(base_scores, tuned_scores, n_boot=1000, seed=0)   # {"delta", "ci", "p_value", ...}
    paired_bootstrap_macro_f1(base_preds, tuned_preds, references, label_names, n_boot=1000, seed=0)

Both tests are paired: each example is scored by both systems, so the noise that comes from which
examples happen to be in the test set cancels out, and a small but consistent gain can be detected.
System "a" is the baseline and "b" the candidate; a positive delta means b is better.

Paired bootstrap p-value (exact definition). Draw n_boot resamples of example indices (the same
rows for both systems, seeded like metrics.bootstrap_ci, so the intervals agree with it) and compute
the resampled deltas d_1..d_B. Let k be the number of d_i on the other side of 0 from the observed
delta, ties with 0 included (d_i <= 0 when delta > 0, d_i >= 0 when delta < 0, all of them when
delta == 0). Then p = min(1, 2 * (k + 1) / (B + 1)). The +1 keeps p above 0 (a finite bootstrap
cannot show p < 2 / (B + 1)), and counting ties makes identical systems get p = 1.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy.stats import binomtest, chi2

from lmtune.evaluate.metrics import _encode, batched_macro_f1

# Below this many discordant pairs the chi-square approximation is poor, so use the exact test.
EXACT_BELOW = 25


def mcnemar(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> dict:
    """McNemar's test on paired right/wrong outcomes: exact binomial if b + c < 25, else chi-square."""
    a = np.asarray(correct_a, dtype=bool)
    b_ = np.asarray(correct_b, dtype=bool)
    if a.shape != b_.shape or a.ndim != 1:
        raise ValueError(f"correct_a and correct_b must be lists of the same length, got {a.shape} and {b_.shape}")
    b = int((a & ~b_).sum())  # a right, b wrong
    c = int((~a & b_).sum())  # a wrong, b right
    n = b + c
    if n == 0:
        # No discordant pair: the data say nothing about a difference.
        return {"b": 0, "c": 0, "statistic": 0.0, "p_value": 1.0, "test": "mcnemar-exact"}
    if n < EXACT_BELOW:
        # Under H0 each discordant pair goes either way with probability 1/2.
        p = binomtest(min(b, c), n, 0.5, alternative="two-sided").pvalue
        return {"b": b, "c": c, "statistic": float(min(b, c)), "p_value": float(min(1.0, p)), "test": "mcnemar-exact"}
    statistic = (abs(b - c) - 1) ** 2 / n  # Edwards' continuity correction
    return {"b": b, "c": c, "statistic": float(statistic), "p_value": float(chi2.sf(statistic, df=1)), "test": "mcnemar-chi2"}


def _mean_statistic(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return values[idx].mean(axis=1)


def paired_bootstrap(
    scores_a: Sequence[float],
    scores_b: Sequence[float],
    n_boot: int = 1000,
    seed: int = 0,
    statistic: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    level: float = 0.95,
) -> dict:
    """Paired bootstrap of statistic(b) - statistic(a): point delta, percentile CI and two-sided p.

    statistic(values, idx) gets one system's per-example values (1-D array) and a (rows, n) index
    matrix and returns one value per row; the default is the mean. Both systems are resampled with
    the same index rows, which is what makes the test paired.
    """
    a = np.asarray(scores_a)
    b = np.asarray(scores_b)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"scores_a and scores_b must be lists of the same length, got {a.shape} and {b.shape}")
    n = len(a)
    if n < 1 or n_boot < 1 or not 0 < level < 1:
        raise ValueError(f"need n >= 1, n_boot >= 1 and 0 < level < 1, got {n}, {n_boot}, {level}")
    stat = statistic or _mean_statistic
    full = np.arange(n)[None, :]
    delta = float(stat(b, full)[0] - stat(a, full)[0])
    # Same generator and draw as metrics.bootstrap_ci, so a seed means the same resamples everywhere.
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    deltas = np.asarray(stat(b, idx), dtype=np.float64) - np.asarray(stat(a, idx), dtype=np.float64)
    alpha = (1 - level) / 2
    low, high = np.quantile(deltas, [alpha, 1 - alpha])
    if delta > 0:
        other_side = int((deltas <= 0).sum())
    elif delta < 0:
        other_side = int((deltas >= 0).sum())
    else:
        other_side = n_boot
    p = min(1.0, 2 * (other_side + 1) / (n_boot + 1))
    return {"delta": delta, "ci": [float(low), float(high)], "p_value": p, "n": n, "n_boot": n_boot, "level": level}


def paired_bootstrap_macro_f1(
    preds_a: list[str | None],
    preds_b: list[str | None],
    references: list[str],
    label_names: list[str],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Paired bootstrap of macro-F1(b) - macro-F1(a); unparsed predictions count as in metrics.py."""
    refs, enc_a = _encode(preds_a, references, label_names)
    _, enc_b = _encode(preds_b, references, label_names)
    k = len(label_names)

    def macro_f1(preds: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return batched_macro_f1(refs[idx], preds[idx], k)

    return paired_bootstrap(enc_a, enc_b, n_boot=n_boot, seed=seed, statistic=macro_f1, level=level)


def versus_baselines(systems: dict[str, dict], label_names: list[str] | None, seed: int = 0) -> dict[str, dict]:
    """Fine-tuned vs every other system on the same test examples, one entry per test: McNemar on
    accuracy and a paired bootstrap of macro-F1 for labels; a paired bootstrap of the main score otherwise."""
    if "fine-tuned" not in systems:
        return {}
    tuned = systems["fine-tuned"].get("predictions") or []
    results: dict[str, dict] = {}
    for name, scores in systems.items():
        base = scores.get("predictions") or []
        if name == "fine-tuned" or not base or len(base) != len(tuned):
            continue
        refs = [p["reference"] for p in tuned]
        if label_names and "macro_f1" in scores:
            right_a = [p["parsed"] == r for p, r in zip(base, refs)]
            right_b = [p["parsed"] == r for p, r in zip(tuned, refs)]
            results[f"fine-tuned vs {name}, accuracy"] = {"metric": "accuracy", **mcnemar(right_a, right_b)}
            results[f"fine-tuned vs {name}, macro-F1"] = {
                "metric": "macro_f1", "test": "paired-bootstrap", **paired_bootstrap_macro_f1(
                    [p["parsed"] for p in base], [p["parsed"] for p in tuned], refs, label_names, seed=seed)}
        else:
            from lmtune.graders.text_metrics import per_example_scores

            metric = "numeric_match" if "numeric_match" in scores else "exact_match"
            a = per_example_scores([p["output"] for p in base], refs, metric)
            b = per_example_scores([p["output"] for p in tuned], refs, metric)
            results[f"fine-tuned vs {name}, {metric}"] = {
                "metric": metric, "test": "paired-bootstrap", **paired_bootstrap(a, b, seed=seed)}
    return results
