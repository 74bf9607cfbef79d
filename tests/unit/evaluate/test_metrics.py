"""Metrics on small hand-computed examples, bootstrap intervals and language-model metrics."""

import math

import numpy as np
import pytest
from sklearn.metrics import f1_score

from lmtune.evaluate.metrics import batched_macro_f1, classification_metrics, lm_metrics, metric_with_ci
from lmtune.stats import bootstrap_ci

LABELS = ["anger", "joy", "sadness"]
REFS = ["joy", "joy", "joy", "anger", "anger", "sadness"]
PREDS = ["joy", None, "anger", "anger", "joy", "sadness"]


def test_hand_computed_classification_metrics():
    m = classification_metrics(PREDS, REFS, LABELS)
    assert m["n"] == 6
    assert m["accuracy"] == pytest.approx(3 / 6)
    # anger: tp 1 fp 1 fn 1 -> F1 .5; joy: tp 1 fp 1 fn 2 -> F1 .4; sadness: tp 1 -> F1 1.
    assert m["per_class"]["anger"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert m["per_class"]["joy"] == pytest.approx({"precision": 0.5, "recall": 1 / 3, "f1": 0.4, "support": 3})
    assert m["per_class"]["sadness"] == pytest.approx({"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1})
    assert m["macro_f1"] == pytest.approx((0.5 + 0.4 + 1.0) / 3)
    assert m["n_unparsed"] == 1
    assert m["confusion"]["rows"] == LABELS
    assert m["confusion"]["columns"] == [*LABELS, "unparsed"]
    assert m["confusion"]["matrix"] == [[1, 1, 0, 0], [1, 1, 0, 1], [0, 0, 1, 0]]


def test_unparsed_and_unknown_predictions_count_as_wrong():
    m = classification_metrics([None, "neutral", "joy"], ["joy", "joy", "joy"], LABELS)
    assert m["accuracy"] == pytest.approx(1 / 3)
    assert m["n_unparsed"] == 2
    assert m["confusion"]["matrix"][1] == [0, 1, 0, 2]
    # joy: precision 1, recall 1/3 -> F1 .5; the other classes have no examples and no predictions -> 0.
    assert m["macro_f1"] == pytest.approx(0.5 / 3)


def test_perfect_predictions():
    m = classification_metrics(REFS, REFS, LABELS)
    assert m["accuracy"] == m["macro_f1"] == 1.0
    assert m["n_unparsed"] == 0


def test_bad_inputs_are_errors():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        classification_metrics(["joy", "joy"], ["joy"], LABELS)
    with pytest.raises(ValueError, match="not in label_names"):
        classification_metrics(["joy"], ["love"], LABELS)
    with pytest.raises(ValueError, match="no examples"):
        classification_metrics([], [], LABELS)


def test_batched_macro_f1_matches_scikit_learn():
    rng = np.random.default_rng(0)
    refs = rng.integers(0, 3, size=(20, 50))
    preds = rng.integers(0, 4, size=(20, 50))  # 3 = unparsed
    expected = [f1_score(r, p, labels=[0, 1, 2], average="macro", zero_division=0) for r, p in zip(refs, preds)]
    assert batched_macro_f1(refs, preds, 3) == pytest.approx(expected)


def _noisy_predictions(n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    refs = [LABELS[i] for i in rng.integers(0, 3, n)]
    preds = [r if rng.random() < 0.7 else (None if rng.random() < 0.3 else LABELS[rng.integers(0, 3)]) for r in refs]
    return preds, refs


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1"])
def test_bootstrap_interval_contains_value_and_is_deterministic(metric):
    preds, refs = _noisy_predictions()
    value, low, high = metric_with_ci(preds, refs, LABELS, metric=metric, n_boot=500, seed=1)
    assert value == pytest.approx(classification_metrics(preds, refs, LABELS)[metric])
    assert low < value < high
    assert high - low < 0.25  # 200 examples: a few points either side, not the whole range
    assert metric_with_ci(preds, refs, LABELS, metric=metric, n_boot=500, seed=1) == (value, low, high)
    assert metric_with_ci(preds, refs, LABELS, metric=metric, n_boot=500, seed=2) != (value, low, high)


def test_bootstrap_ci_of_a_mean_matches_the_normal_approximation():
    values = np.random.default_rng(0).normal(size=400)
    low, high = bootstrap_ci(lambda idx: values[idx].mean(axis=1), len(values), n_boot=2000, seed=0)
    half = 1.96 * values.std() / math.sqrt(len(values))
    assert low == pytest.approx(values.mean() - half, abs=0.02)
    assert high == pytest.approx(values.mean() + half, abs=0.02)


def test_lm_metrics():
    m = lm_metrics(total_loss_sum=230.0, n_tokens=100, n_correct=41)
    assert m == pytest.approx({"loss": 2.3, "perplexity": math.exp(2.3), "token_accuracy": 0.41})
    assert lm_metrics(1e6, 10, 0)["perplexity"] == math.inf
    with pytest.raises(ValueError):
        lm_metrics(1.0, 0, 0)


def test_macro_recall_and_f1_over_chosen_labels_match_scikit_learn():
    from sklearn.metrics import f1_score, recall_score

    preds, refs = _noisy_predictions(seed=3)
    index = {n: i for i, n in enumerate(LABELS)}
    y_true = [index[r] for r in refs]
    y_pred = [index.get(p, len(LABELS)) for p in preds]
    recall, low, high = metric_with_ci(preds, refs, LABELS, metric="macro_recall", n_boot=300, seed=0)
    assert recall == pytest.approx(recall_score(y_true, y_pred, labels=[0, 1, 2], average="macro", zero_division=0))
    assert low < recall < high
    pair = f"f1:{LABELS[0]},{LABELS[2]}"
    value, low, high = metric_with_ci(preds, refs, LABELS, metric=pair, n_boot=300, seed=0)
    per_class = f1_score(y_true, y_pred, labels=[0, 1, 2], average=None, zero_division=0)
    assert value == pytest.approx((per_class[0] + per_class[2]) / 2) and low < value < high
    one, _, _ = metric_with_ci(preds, refs, LABELS, metric=f"f1:{LABELS[1]}", n_boot=10)
    assert one == pytest.approx(per_class[1])
    with pytest.raises(ValueError, match="macro_recall or f1"):
        metric_with_ci(preds, refs, LABELS, metric="f1:nope")
