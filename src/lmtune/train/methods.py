"""Which model head and which objective a method needs: the one switch on `method.task`.

    task = model_task(cfg)                                  # causal_lm | sequence_classification
    model, tokenizer = load_model(cfg.model, task, num_labels(cfg, data))
    objective = build_objective(cfg, tokenizer, data)
"""

from __future__ import annotations

from lmtune.config import RunConfig
from lmtune.train.classification import class_weights, classification_objective
from lmtune.train.objectives import Objective, sft_objective

HEAD_TASKS = {"classification": "sequence_classification", "reward": "sequence_classification"}


def model_task(cfg: RunConfig) -> str:
    """The transformers head the method trains: a sequence-classification head or the LM head."""
    return HEAD_TASKS.get(cfg.method.task, "causal_lm")


def num_labels(cfg: RunConfig, data) -> int | None:
    """Outputs of a classification head (one score for a reward model); None for causal LMs."""
    if cfg.method.task == "reward":
        return 1
    if cfg.method.task == "classification":
        if not data.label_names:
            raise ValueError("method.task classification needs labelled data (text with a label)")
        return len(data.label_names)
    return None


def pad_id_of(tokenizer) -> int:
    """The id that pads batches (the EOS id when the tokenizer has no pad token)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def build_objective(cfg: RunConfig, tokenizer, data=None) -> Objective:
    """The objective named by cfg.method.task (`data`, the PreparedData, gives labels and class counts)."""
    task = cfg.method.task
    if task == "sft":
        return sft_objective(cfg.training.packing, pad_id_of(tokenizer), cfg.data.max_seq_len)
    if task == "classification":
        n_classes = num_labels(cfg, data)
        weights = class_weights(cfg.method.class_weights, data.encoded["train"], n_classes)
        return classification_objective(pad_id_of(tokenizer), n_classes, weights)
    raise ValueError(f"method.task {task!r} has no objective yet")
