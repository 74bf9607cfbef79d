"""Which model head and which objective a method needs: the one switch on `method.task`.

    task = model_task(cfg)                                  # causal_lm | sequence_classification
    model, tokenizer = load_model(cfg.model, task, num_labels(cfg, data))
    objective = build_objective(cfg, tokenizer, data)      # after apply_peft: DPO may copy a reference
    fit(model, training_items(cfg, data, "train"), training_items(cfg, data, "validation"), objective, ...)
"""

from __future__ import annotations

import copy

import torch

from lmtune.config import RunConfig
from lmtune.train.chunked_loss import linear_cross_entropy
from lmtune.train.classification import class_weights, classification_objective
from lmtune.train.grpo import grpo_objective, load_reward, monitor_name, reward_of
from lmtune.train.kernels import liger_linear_cross_entropy, resolve_kernels
from lmtune.train.objectives import Objective, sft_objective
from lmtune.train.pairs import dpo_objective, reward_objective

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


PAIR_TASKS = ("reward", "dpo")


def training_items(cfg: RunConfig, data, split: str) -> list:
    """What the loop iterates over: encoded examples or pairs, or for GRPO the prompts themselves."""
    if cfg.method.task == "grpo":
        return list(data.examples.get(split) or [])
    items = list(data.encoded.get(split) or [])
    if cfg.method.task in PAIR_TASKS and items and not isinstance(items[0], tuple):
        raise ValueError(f"method.task {cfg.method.task} needs preference pairs (prompt, chosen, rejected); "
                         f"the {split} data are {data.examples[split][0].kind} examples")
    return items


def build_objective(cfg: RunConfig, tokenizer, data=None, model=None) -> Objective:
    """The objective named by cfg.method.task (`data` gives labels and class counts; `model`, the base
    before any adapter, is what DPO with full fine-tuning copies as its frozen reference)."""
    task = cfg.method.task
    if task == "sft":
        # The fused head loss follows training.kernels like the model patches fit applies (kernels.py).
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        liger = resolve_kernels(cfg.training.kernels, device) == "liger"
        return sft_objective(cfg.training.packing, pad_id_of(tokenizer), cfg.data.max_seq_len, cfg.training.chunked_loss,
                             liger_linear_cross_entropy if liger else linear_cross_entropy)
    if task == "classification":
        n_classes = num_labels(cfg, data)
        weights = class_weights(cfg.method.class_weights, data.encoded["train"], n_classes)
        return classification_objective(pad_id_of(tokenizer), n_classes, weights)
    if task == "reward":
        return reward_objective(pad_id_of(tokenizer))
    if task == "dpo":
        reference = None
        if cfg.method.peft == "none":
            if model is None:
                raise ValueError("DPO with full fine-tuning needs the model to copy its frozen reference from")
            # Full fine-tuning: the reference must be a frozen copy (LoRA just switches its adapter off).
            reference = copy.deepcopy(model).eval().requires_grad_(False)
        d = cfg.method.dpo
        return dpo_objective(pad_id_of(tokenizer), d.beta, d.loss, reference, d.precompute_reference)
    if task == "grpo":
        grpo = cfg.method.grpo
        monitors = {monitor_name(spec): load_reward(spec, cfg.data) for spec in grpo.monitor}
        if len(monitors) != len(grpo.monitor):
            raise ValueError(f"method.grpo.monitor: two rewards share a function name in {grpo.monitor}")
        return grpo_objective(tokenizer, grpo, cfg.data, reward_of(grpo, cfg.data, cfg.model.cache_dir), monitors)
    raise ValueError(f"unknown method.task {task!r}")
