"""Paired significance tests: McNemar on hand-computed tables, paired bootstrap of means and macro-F1."""

import math

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import f1_score

from lmtune.stats import bootstrap_ci
from lmtune.evaluate.significance import mcnemar, paired_bootstrap, paired_bootstrap_macro_f1

LABELS = ["anger", "joy", "sadness"]


def _table(b: int, c: int, both_right: int, both_wrong: int) -> tuple[list[bool], list[bool]]:
    """Paired outcomes with b (a right, b wrong) and c (a wrong, b right) discordant pairs."""
    a = [True] * b + [False] * c + [True] * both_right + [False] * both_wrong
    b_ = [False] * b + [True] * c + [True] * both_right + [False] * both_wrong
    return a, b_


def test_mcnemar_exact_on_small_table():
    a, b = _table(10, 2, 5, 3)
    r = mcnemar(a, b)
    assert (r["b"], r["c"], r["test"]) == (10, 2, "mcnemar-exact")
    assert r["p_value"] == pytest.approx(binomtest(2, 12, 0.5).pvalue)
    # By hand: 2 * P(X <= 2), X ~ Binomial(12, 1/2) = 2 * (1 + 12 + 66) / 4096.
    assert r["p_value"] == pytest.approx(2 * 79 / 4096)
    assert mcnemar(b, a)["p_value"] == pytest.approx(r["p_value"])  # symmetric


def test_mcnemar_chi2_with_continuity_correction_on_large_table():
    a, b = _table(30, 10, 50, 10)
    r = mcnemar(a, b)
    assert (r["b"], r["c"], r["test"]) == (30, 10, "mcnemar-chi2")
    statistic = (abs(30 - 10) - 1) ** 2 / 40
    assert r["statistic"] == pytest.approx(statistic)
    # Chi-square with 1 degree of freedom: P(X > s) = erfc(sqrt(s / 2)).
    assert r["p_value"] == pytest.approx(math.erfc(math.sqrt(statistic / 2)))
    assert r["p_value"] < 0.01


def test_mcnemar_switches_to_chi2_at_25_discordant_pairs():
    assert mcnemar(*_table(13, 11, 0, 0))["test"] == "mcnemar-exact"
    assert mcnemar(*_table(14, 11, 0, 0))["test"] == "mcnemar-chi2"


def test_mcnemar_identical_systems_give_p_one():
    outcomes = [True, False, True, True, False]
    r = mcnemar(outcomes, outcomes)
    assert (r["b"], r["c"], r["p_value"]) == (0, 0, 1.0)


def test_mcnemar_rejects_unpaired_inputs():
    with pytest.raises(ValueError, match="same length"):
        mcnemar([True, False], [True])


def _scores(n: int = 200, gain: float = 0.5, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, 1.0, n)
    return a, a + gain + rng.normal(0.0, 0.3, n)


def test_paired_bootstrap_delta_is_mean_difference_and_deterministic():
    a, b = _scores()
    r = paired_bootstrap(list(a), list(b), n_boot=500, seed=3)
    assert r["delta"] == pytest.approx(b.mean() - a.mean())
    assert r == paired_bootstrap(list(a), list(b), n_boot=500, seed=3)
    assert r["ci"] != paired_bootstrap(list(a), list(b), n_boot=500, seed=4)["ci"]


def test_paired_bootstrap_ci_matches_metrics_bootstrap_ci_on_the_difference():
    a, b = _scores(gain=0.1)
    r = paired_bootstrap(a, b, n_boot=300, seed=7)
    diff = b - a
    assert r["ci"] == pytest.approx(list(bootstrap_ci(lambda idx: diff[idx].mean(axis=1), len(diff), 300, 7)))


def test_paired_bootstrap_p_value_follows_the_documented_definition():
    a, b = _scores(n=30, gain=0.05, seed=5)
    r = paired_bootstrap(a, b, n_boot=400, seed=2)
    idx = np.random.default_rng(2).integers(0, 30, size=(400, 30))
    deltas = b[idx].mean(axis=1) - a[idx].mean(axis=1)
    other_side = (deltas <= 0).sum() if r["delta"] > 0 else (deltas >= 0).sum()
    assert 0 < other_side < 400  # the case where the definition matters
    assert r["p_value"] == pytest.approx(min(1.0, 2 * (other_side + 1) / 401))


def test_paired_bootstrap_strong_difference_is_significant():
    a, b = _scores(gain=0.5)
    r = paired_bootstrap(a, b, n_boot=1000, seed=0)
    assert r["p_value"] < 0.01
    assert 0 < r["ci"][0] < r["delta"] < r["ci"][1]
    worse = paired_bootstrap(b, a, n_boot=1000, seed=0)
    assert worse["delta"] == pytest.approx(-r["delta"]) and worse["ci"][1] < 0 and worse["p_value"] < 0.01


def test_paired_bootstrap_identical_systems():
    a, _ = _scores()
    r = paired_bootstrap(a, a, n_boot=200, seed=0)
    assert r["delta"] == 0.0 and r["p_value"] == 1.0 and r["ci"] == [0.0, 0.0]


def test_paired_bootstrap_no_real_difference_is_not_significant():
    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 1.0, 100)
    b = a + rng.normal(0.0, 1.0, 100)  # noise only, no gain
    r = paired_bootstrap(a, b, n_boot=1000, seed=0)
    assert r["p_value"] > 0.05 and r["ci"][0] < 0 < r["ci"][1]


def test_paired_bootstrap_rejects_unpaired_inputs():
    with pytest.raises(ValueError, match="same length"):
        paired_bootstrap([1.0, 0.0], [1.0])


def _sk_macro_f1(preds, refs):
    cleaned = [p if p in LABELS else "unparsed" for p in preds]
    return f1_score(refs, cleaned, labels=LABELS, average="macro", zero_division=0)


def test_paired_bootstrap_macro_f1_matches_sklearn():
    rng = np.random.default_rng(0)
    refs = list(rng.choice(LABELS, 120))
    # a: right 50 % of the time, sometimes unparsed; b: right 90 % of the time.
    preds_a = [r if rng.random() < 0.5 else rng.choice([*LABELS, None]) for r in refs]
    preds_b = [r if rng.random() < 0.9 else rng.choice(LABELS) for r in refs]
    r = paired_bootstrap_macro_f1(preds_a, preds_b, refs, LABELS, n_boot=200, seed=1)
    assert r["delta"] == pytest.approx(_sk_macro_f1(preds_b, refs) - _sk_macro_f1(preds_a, refs))
    assert r["p_value"] < 0.01 and r["ci"][0] > 0
    # The interval is the percentile interval of sklearn's macro-F1 difference on the same resamples.
    ra, rb, rr = np.array(preds_a, dtype=object), np.array(preds_b, dtype=object), np.array(refs, dtype=object)
    sk = lambda idx: np.array([_sk_macro_f1(rb[i], rr[i]) - _sk_macro_f1(ra[i], rr[i]) for i in idx])  # noqa: E731
    assert r["ci"] == pytest.approx(list(bootstrap_ci(sk, len(refs), 200, 1)))


def test_paired_bootstrap_macro_f1_identical_predictions():
    refs = ["joy", "anger", "sadness", "joy"]
    preds = ["joy", "joy", None, "joy"]
    r = paired_bootstrap_macro_f1(preds, preds, refs, LABELS, n_boot=100, seed=0)
    assert r["delta"] == 0.0 and r["p_value"] == 1.0
