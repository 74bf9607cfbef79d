"""Training objectives: each is a collator plus `loss(model, batch) -> (loss_sum, metric_sums)`.

The loop owns normalisation: an objective returns the *sum* of its per-unit losses (tokens for
language modelling, pairs for preference losses) and the batch says how many units it holds
(`batch["n_units"]`), so gradient accumulation and data parallelism divide by the global count of
units over the whole optimizer step — exactly one large batch.

Usage (lmtune.train.methods.build_objective picks the objective a config names):
    objective = sft_objective(packing=True, pad_id=tokenizer.pad_token_id)
    batch = objective.collate(encoded_examples)
    loss_sum, sums = objective.loss(model, batch)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from lmtune.data.collate import pack_collate, pad_collate
from lmtune.train.chunked_loss import head_returns_input, linear_cross_entropy, plain_output_head
from lmtune.train.validation import lm_summary

Batch = dict[str, Any]
LossFn = Callable[[torch.nn.Module, Batch], tuple[torch.Tensor, dict[str, torch.Tensor]]]


@dataclass
class Objective:
    """What a method adds to the one training loop."""

    name: str
    collate: Callable[[list], Batch]
    loss: LossFn
    units: Callable[[Any], int]
    """Number of loss units (e.g. supervised tokens) one encoded example contributes."""
    length: Callable[[Any], int]
    """Number of tokens of one encoded example (for throughput and length grouping)."""
    summarize: Callable[[dict[str, float], float], dict[str, float]]
    """Turn summed validation statistics and the unit count into eval_* metrics."""
    margins: Callable[[torch.nn.Module, Batch], dict[str, torch.Tensor]] | None = None
    """Preference objectives: per-pair margins (> 0 means the chosen answer wins), for held-out accuracy."""
    prepare: Callable[[torch.nn.Module, list, int], list] | None = None
    """Run once on the training and validation sets before training (e.g. precomputed reference log-probs)."""
    packs: bool = False
    """Batches are packed rows (restarting position ids, no attention mask): varlen attention applies."""


def supervised_tokens(encoded) -> int:
    """Tokens that carry loss once labels are shifted: positions whose next token is labelled."""
    return sum(1 for x in encoded.labels[1:] if x != -100)


HeadLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def causal_lm_loss(model: torch.nn.Module, batch: Batch, chunked: bool = True,
                   head_loss: HeadLoss = linear_cross_entropy) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Summed next-token cross-entropy, projecting to the vocabulary only where a target exists
    (`chunked`: through `head_loss`, which never holds all logits at once, for models whose logits are
    a plain linear head: lmtune's chunks, or Liger's fused kernel on CUDA)."""
    targets = batch["target_ids"]
    keep = targets != -100
    gold = targets[keep]
    inputs = {
        "input_ids": batch["input_ids"],
        "attention_mask": batch.get("attention_mask"),
        "position_ids": batch["position_ids"],
        "logits_to_keep": keep,  # boolean mask: outputs come back flattened to [n_kept, ...]
        "use_cache": False,
    }
    head = plain_output_head(model) if chunked else None
    if head is not None:
        with head_returns_input(head):
            hidden = model(**inputs).logits
        loss_sum, correct = head_loss(hidden, head.weight, head.bias, gold)
    else:
        logits = model(**inputs).logits.float()
        loss_sum = F.cross_entropy(logits, gold, reduction="sum")
        correct = (logits.argmax(-1) == gold).sum()
    return loss_sum, {"loss_sum": loss_sum.detach(), "n_correct": correct.detach()}


def full_logits_lm_loss(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Reference version of causal_lm_loss that computes logits at every position (for tests)."""
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=batch.get("attention_mask"),
        position_ids=batch["position_ids"],
        use_cache=False,
    )
    logits = out.logits.float().flatten(0, 1)
    targets = batch["target_ids"].flatten()
    loss_sum = F.cross_entropy(logits, targets, reduction="sum", ignore_index=-100)
    keep = targets != -100
    correct = (logits[keep].argmax(-1) == targets[keep]).sum()
    return loss_sum, {"loss_sum": loss_sum.detach(), "n_correct": correct.detach()}


def sft_objective(packing: bool, pad_id: int, pack_length: int | None = None, chunked_loss: bool = True,
                  head_loss: HeadLoss = linear_cross_entropy) -> Objective:
    """Supervised fine-tuning of a causal LM (answers only, or raw text); packed rows hold <= pack_length tokens."""

    def collate(items: list) -> Batch:
        batch = pack_collate(items, pack_length) if packing else pad_collate(items, pad_id)
        batch["n_units"] = batch["n_tokens"]
        return batch

    return Objective(
        name="sft",
        collate=collate,
        loss=functools.partial(causal_lm_loss, chunked=chunked_loss, head_loss=head_loss),
        units=supervised_tokens,
        length=lambda enc: len(enc.input_ids),
        summarize=lm_summary,
        packs=packing,
    )
