"""The classification objective: a sequence-classification head trained with (weighted) cross-entropy.

    weights = class_weights("auto", train_encoded, n_classes=4)     # n / (k * n_class), mean weight 1
    objective = ClassificationObjective(pad_id, n_classes=4, weights=weights)

The unit is one labelled example: a batch returns the sum of w[y] * CE over its examples and the
loop divides by the number of examples in the whole optimizer step. With `auto` weights the mean
weight over the training examples is exactly 1, so the loss keeps the scale of the unweighted one.
Validation sums per-class true positives and counts, so eval_macro_f1 is exact across batches and
processes and can drive early stopping (`training.early_stopping.metric: eval_macro_f1, mode: max`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from lmtune.data.encode import IGNORE
from lmtune.train.objective import Batch, Method, Objective, pad_id_of


def class_weights(spec: str | Sequence[float], train: list, n_classes: int) -> list[float] | None:
    """Loss weight per class: None for `none`, n / (k * n_class) for `auto`, or the given list."""
    if isinstance(spec, str):
        if spec == "none":
            return None
        if spec != "auto":
            raise ValueError(f"method.class_weights: expected none, auto or a list of numbers, got {spec!r}")
        counts = Counter(e.target for e in train if e.target != IGNORE)
        n = sum(counts.values())
        missing = [c for c in range(n_classes) if counts[c] == 0]
        if missing:
            raise ValueError(f"method.class_weights auto: classes {missing} have no training example")
        return [n / (n_classes * counts[c]) for c in range(n_classes)]
    weights = [float(w) for w in spec]
    if len(weights) != n_classes:
        raise ValueError(f"method.class_weights has {len(weights)} values for {n_classes} classes")
    if any(w <= 0 for w in weights):
        raise ValueError("method.class_weights must all be positive")
    return weights


def classification_collate(items: list, pad_id: int) -> Batch:
    """Right-padded input_ids with attention_mask, the class targets and the count of labelled rows."""
    width = max((len(e.input_ids) for e in items), default=0)
    input_ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, enc in enumerate(items):
        input_ids[row, : len(enc.input_ids)] = torch.tensor(enc.input_ids, dtype=torch.long)
        attention_mask[row, : len(enc.input_ids)] = 1
    targets = torch.tensor([e.target for e in items], dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "targets": targets,
            "n_units": int((targets != IGNORE).sum())}


def head_logits(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """[B, n_classes] scores of the head (decoders score their last non-padding token)."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()


def classification_loss(weights: list[float] | None, n_classes: int):
    """loss(model, batch) -> (sum of w[y] * cross-entropy, per-class counts for exact macro-F1)."""

    def loss(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = head_logits(model, batch)
        targets = batch["targets"]
        w = torch.tensor(weights, dtype=logits.dtype, device=logits.device) if weights else None
        # reduction="none" gives w[y_i] * CE_i per row (the weighted mean would divide by sum(w[y]) instead).
        per_row = F.cross_entropy(logits, targets, weight=w, reduction="none", ignore_index=IGNORE)
        loss_sum = per_row.sum()
        keep = targets != IGNORE
        pred, gold = logits.argmax(-1)[keep], targets[keep]
        sums: dict[str, torch.Tensor] = {"loss_sum": loss_sum.detach(), "n_correct": (pred == gold).sum()}
        for c in range(n_classes):
            sums[f"tp_{c}"] = ((pred == c) & (gold == c)).sum()
            sums[f"pred_{c}"] = (pred == c).sum()
            sums[f"gold_{c}"] = (gold == c).sum()
        return loss_sum, sums

    return loss


def classification_summary(n_classes: int):
    """summarize(totals, n) -> eval_loss, eval_accuracy and eval_macro_f1 from summed counts."""

    def summarize(totals: dict[str, float], n: float) -> dict[str, float]:
        if n == 0:
            return {"eval_loss": float("nan"), "eval_accuracy": float("nan"), "eval_macro_f1": float("nan")}
        f1s = []
        for c in range(n_classes):
            denominator = totals.get(f"pred_{c}", 0.0) + totals.get(f"gold_{c}", 0.0)
            f1s.append(2 * totals.get(f"tp_{c}", 0.0) / denominator if denominator else 0.0)
        return {
            "eval_loss": totals["loss_sum"] / n,
            "eval_accuracy": totals.get("n_correct", 0.0) / n,
            "eval_macro_f1": sum(f1s) / n_classes,
        }

    return summarize


class ClassificationObjective(Objective):
    """Sequence classification on the one loop: one unit per labelled example."""

    name = "classification"

    def __init__(self, pad_id: int, n_classes: int, weights: list[float] | None = None):
        self.pad_id = pad_id
        self._loss = classification_loss(weights, n_classes)
        self._summarize = classification_summary(n_classes)

    def collate(self, items: list) -> dict[str, Any]:
        """Right-padded rows with their class targets."""
        return classification_collate(items, self.pad_id)

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Sum of w[y] * cross-entropy, with per-class counts for an exact macro-F1."""
        return self._loss(model, batch)

    def units(self, item: Any) -> int:
        """1 for a labelled example."""
        return int(item.target != IGNORE)

    def length(self, item: Any) -> int:
        """Tokens of one encoded text."""
        return len(item.input_ids)

    def summarize(self, totals: dict[str, float], n_units: float) -> dict[str, float]:
        """eval_loss, eval_accuracy and eval_macro_f1."""
        return self._summarize(totals, n_units)


def n_classes_of(data) -> int:
    """The head's outputs: one per label of the prepared data."""
    if not data.label_names:
        raise ValueError("method.task classification needs labelled data (text with a label)")
    return len(data.label_names)


def build_classification(cfg, tokenizer, data=None, model=None) -> ClassificationObjective:
    """The classification objective of a run config, with method.class_weights from the training split."""
    n_classes = n_classes_of(data)
    weights = class_weights(cfg.method.class_weights, data.encoded["train"], n_classes)
    return ClassificationObjective(pad_id_of(tokenizer), n_classes, weights)


CLASSIFICATION = Method(name="classification", build=build_classification, head="sequence_classification",
                        encoding="sequence", outputs=n_classes_of, evaluation="head", baseline="prompted_lm",
                        config_section="class_weights", head_only=True)
