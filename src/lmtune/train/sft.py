"""Supervised fine-tuning (sft): next-token cross-entropy on answers (or raw text), packed or padded.

    objective = SftObjective(packing=True, pad_id=tokenizer.pad_token_id)
    batch = objective.collate(encoded_examples)
    loss_sum, sums = objective.loss(model, batch)     # summed over supervised tokens

The SFT record (`SFT`, listed in train/methods.py) builds it from a run config.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from lmtune.data.collate import pack_collate, pad_collate
from lmtune.train.chunked_loss import head_returns_input, linear_cross_entropy, plain_output_head
from lmtune.train.kernels import liger_linear_cross_entropy, resolve_kernels
from lmtune.train.objective import Batch, Method, Objective, pad_id_of
from lmtune.train.validation import lm_summary


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


class SftObjective(Objective):
    """Supervised fine-tuning of a causal LM (answers only, or raw text); packed rows hold <= pack_length tokens."""

    name = "sft"

    def __init__(self, packing: bool, pad_id: int, pack_length: int | None = None, chunked_loss: bool = True,
                 head_loss: HeadLoss = linear_cross_entropy):
        self.packing, self.pad_id, self.pack_length = packing, pad_id, pack_length
        self.chunked_loss, self.head_loss = chunked_loss, head_loss
        self.packs = packing

    def collate(self, items: list) -> Batch:
        """Packed rows (or right-padded ones); one unit per supervised token."""
        batch = pack_collate(items, self.pack_length) if self.packing else pad_collate(items, self.pad_id)
        batch["n_units"] = batch["n_tokens"]
        return batch

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Summed next-token cross-entropy over the batch's supervised tokens."""
        return causal_lm_loss(model, batch, chunked=self.chunked_loss, head_loss=self.head_loss)

    def units(self, item: Any) -> int:
        """Supervised tokens of one encoded example."""
        return supervised_tokens(item)

    def length(self, item: Any) -> int:
        """Tokens of one encoded example."""
        return len(item.input_ids)

    def summarize(self, totals: dict[str, float], n_units: float) -> dict[str, float]:
        """Mean loss, perplexity and token accuracy."""
        return lm_summary(totals, n_units)


def build_sft(cfg, tokenizer, data=None, model=None) -> SftObjective:
    """The SFT objective of a run config; the fused head loss follows training.kernels like fit's patches."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    liger = resolve_kernels(cfg.training.kernels, device) == "liger"
    return SftObjective(cfg.training.packing, pad_id_of(tokenizer), cfg.data.max_seq_len, cfg.training.chunked_loss,
                        liger_linear_cross_entropy if liger else linear_cross_entropy)


SFT = Method(name="sft", build=build_sft, api_type="supervised")
