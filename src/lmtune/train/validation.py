"""Validation pass: the objective's metrics summed over a held-out set, across all processes."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from lmtune.train.objective import Objective


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Move the tensors of a batch to a device (other values stay as they are)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def evaluate_loss(model, dataset: list, objective: "Objective", batch_size: int, accelerator) -> dict[str, float]:
    """Loss, perplexity and token accuracy (for LM objectives) of `model` on `dataset`."""
    was_training = model.training
    model.eval()
    rank, world = accelerator.process_index, accelerator.num_processes
    shard = dataset[rank::world]
    sums: dict[str, torch.Tensor] = {}
    units = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    for start in range(0, len(shard), batch_size):
        batch = to_device(objective.collate(shard[start : start + batch_size]), accelerator.device)
        with accelerator.autocast():
            _, batch_sums = objective.loss(model, batch)
        for key, value in batch_sums.items():
            sums[key] = sums.get(key, 0) + value.double()
        units += batch["n_units"]
    keys = sorted(sums)
    packed = torch.stack([units] + [torch.as_tensor(sums[k], device=accelerator.device) for k in keys])
    if world > 1:
        packed = accelerator.reduce(packed, reduction="sum")
    n = packed[0].item()
    totals = {k: packed[i + 1].item() for i, k in enumerate(keys)}
    if was_training:
        model.train()
    return objective.summarize(totals, n)


def lm_summary(totals: dict[str, float], n_units: float) -> dict[str, float]:
    """Mean loss, perplexity and token accuracy from summed LM statistics."""
    if n_units == 0:
        return {"eval_loss": float("nan"), "eval_perplexity": float("nan"), "eval_token_accuracy": float("nan")}
    loss = totals["loss_sum"] / n_units
    return {
        "eval_loss": loss,
        "eval_perplexity": math.exp(min(loss, 50.0)),
        "eval_token_accuracy": totals.get("n_correct", 0.0) / n_units,
    }
