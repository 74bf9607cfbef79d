"""TweetEval hate: does a bag-of-n-grams model escape HatEval's test-set shift? (No.)

    python dev/probes/hate_tfidf_baseline.py        # about 11 s on 2 cores

A scikit-learn logistic regression on TF-IDF word 1-2-grams and on character 2-5-grams, three
regularisation strengths each, trained on the 9,000 training tweets. Prints validation and test
macro-F1 (the TweetEval metric) and the share of test tweets predicted hateful (true share: 42 %),
to compare with the paper's FastText (50.6) and LSTM (52.6) and with lmtune's models
(docs/results.md). All six test scores are printed, so picking one would overstate the result.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "tweeteval" / "hate"


def split(name: str) -> tuple[list[str], np.ndarray]:
    """Tweets and integer labels of one TweetEval split."""
    texts = (DATA / f"{name}_text.txt").read_text(encoding="utf-8").splitlines()
    labels = np.array([int(x) for x in (DATA / f"{name}_labels.txt").read_text().split()])
    return texts, labels


def main() -> None:
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = split("train"), split("val"), split("test")
    print(f"hateful share: train {train_y.mean():.3f}, validation {val_y.mean():.3f}, test {test_y.mean():.3f}")
    for analyzer, ngrams in (("word", (1, 2)), ("char_wb", (2, 5))):
        vectorizer = TfidfVectorizer(analyzer=analyzer, ngram_range=ngrams, min_df=2, sublinear_tf=True)
        features = vectorizer.fit_transform(train_x)
        for c in (0.3, 1.0, 3.0):
            model = LogisticRegression(C=c, max_iter=2000).fit(features, train_y)
            val_pred = model.predict(vectorizer.transform(val_x))
            test_pred = model.predict(vectorizer.transform(test_x))
            print(f"{analyzer} {ngrams[0]}-{ngrams[1]}-grams, C {c}: validation macro-F1 "
                  f"{100 * f1_score(val_y, val_pred, average='macro'):.1f}, test "
                  f"{100 * f1_score(test_y, test_pred, average='macro'):.1f}, "
                  f"test predicted hateful {test_pred.mean():.1%}")


if __name__ == "__main__":
    main()
