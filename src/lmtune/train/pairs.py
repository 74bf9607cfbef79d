"""Objectives on preference pairs: a reward model (Bradley-Terry) and DPO / IPO against a frozen reference.

    objective = reward_objective(pad_id)                                  # one-output head
    objective = dpo_objective(pad_id, beta=0.1, kind="sigmoid")           # LoRA: reference = adapter off
    objective = dpo_objective(pad_id, 0.1, reference=frozen_copy)         # full fine-tuning

A batch stacks the chosen answers of its pairs above the rejected ones ([2B, L], right-padded, loss
labels only on the answers) and counts one unit per pair. With LoRA the reference log-probabilities
come from the same weights with the adapter switched off, so no second copy of the model is held;
`precompute_reference` scores every pair once before training (objective.prepare) instead of at
every step. Per-pair margins (objective.margins) give held-out accuracies with bootstrap intervals.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from lmtune.data.collate import pad_collate
from lmtune.train.objectives import Batch, Objective
from lmtune.train.preference import bradley_terry_loss, dpo_loss, preference_summary


def pair_collate(items: list, pad_id: int) -> Batch:
    """[chosen_1..chosen_B, rejected_1..rejected_B] padded; precomputed reference log-probs if the items carry them."""
    batch = pad_collate([it[0] for it in items] + [it[1] for it in items], pad_id)
    batch["n_units"] = len(items)
    if items and len(items[0]) == 4:
        batch["ref_logps"] = torch.tensor([it[2] for it in items] + [it[3] for it in items], dtype=torch.float32)
    return batch


def sequence_logps(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Summed log-probability [2B] of each row's answer tokens, projecting only where a target exists."""
    targets = batch["target_ids"]
    keep = targets != -100
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                position_ids=batch["position_ids"], logits_to_keep=keep, use_cache=False)
    token_logps = -F.cross_entropy(out.logits.float(), targets[keep], reduction="none")
    rows = keep.nonzero(as_tuple=True)[0]
    return torch.zeros(targets.shape[0], device=token_logps.device).index_add(0, rows, token_logps)


def peft_of(model: torch.nn.Module) -> Any:
    """The peft model inside any DDP / compile wrapper, or None for a plain model."""
    inner = getattr(model, "module", model)  # DDP / compile wrappers keep the real model in .module
    inner = getattr(inner, "_orig_mod", inner)
    return inner if hasattr(inner, "disable_adapter") else None


def reference_logps(model: torch.nn.Module, batch: Batch, reference: torch.nn.Module | None,
                    own_logps: torch.Tensor | None = None) -> torch.Tensor:
    """Log-probs [2B] under the frozen reference: a given model, or the policy with its adapter off.

    build_objective always gives full fine-tuning its frozen copy, so a plain model without one is
    the untouched base being scored as a baseline, and is its own reference: its `own_logps`, when
    the caller has them, are returned instead of a second pass."""
    if "ref_logps" in batch:
        return batch["ref_logps"]
    with torch.no_grad():
        if reference is not None:
            return sequence_logps(reference, batch)
        peft = peft_of(model)
        if peft is None:  # the base before any update (baseline scoring): it is its own reference
            return own_logps.detach() if own_logps is not None else sequence_logps(model, batch)
        with peft.disable_adapter():  # nests safely: peft restores the state it found
            return sequence_logps(peft, batch)


def _pair_objective(name: str, pad_id: int, loss, margins, prepare=None) -> Objective:
    """What every pair objective shares: the stacked collate, one unit per pair, the preference summary."""
    return Objective(
        name=name,
        collate=lambda items: pair_collate(items, pad_id),
        loss=loss,
        units=lambda pair: 1,
        length=lambda pair: len(pair[0].input_ids) + len(pair[1].input_ids),
        summarize=preference_summary,
        margins=margins,
        prepare=prepare,
    )


def dpo_objective(pad_id: int, beta: float, kind: str = "sigmoid", reference: torch.nn.Module | None = None,
                  precompute: bool = False) -> Objective:
    """DPO (sigmoid) or IPO on chosen/rejected pairs; the reference is `reference` or the adapter switched off."""

    def split(logps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        half = logps.shape[0] // 2
        return logps[:half], logps[half:]

    def loss(model: torch.nn.Module, batch: Batch):
        ref_c, ref_r = split(reference_logps(model, batch, reference))
        pol_c, pol_r = split(sequence_logps(model, batch))
        return dpo_loss(pol_c, pol_r, ref_c, ref_r, beta, kind)

    @torch.no_grad()
    def margins(model: torch.nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        logps = sequence_logps(model, batch)
        ref_c, ref_r = split(reference_logps(model, batch, reference, own_logps=logps))
        pol_c, pol_r = split(logps)
        return {"implicit_reward": beta * ((pol_c - ref_c) - (pol_r - ref_r)), "logp": pol_c - pol_r}

    @torch.no_grad()
    def prepare(model: torch.nn.Module, pairs: list, batch_size: int) -> list:
        device = next(model.parameters()).device
        out = []
        for start in range(0, len(pairs), batch_size):
            chunk = [p[:2] for p in pairs[start : start + batch_size]]
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                     for k, v in pair_collate(chunk, pad_id).items()}
            ref_c, ref_r = split(reference_logps(model, batch, reference))
            out += [(*p, float(c), float(r)) for p, c, r in zip(chunk, ref_c.tolist(), ref_r.tolist())]
        return out

    return _pair_objective("dpo", pad_id, loss, margins, prepare if precompute else None)


def reward_objective(pad_id: int) -> Objective:
    """A one-output head trained so that score(chosen) > score(rejected) (Bradley-Terry)."""

    def scores(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()[:, 0]
        half = out.shape[0] // 2
        return out[:half], out[half:]

    def loss(model: torch.nn.Module, batch: Batch):
        return bradley_terry_loss(*scores(model, batch))

    @torch.no_grad()
    def margins(model: torch.nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        chosen, rejected = scores(model, batch)
        return {"score": chosen - rejected}

    return _pair_objective("reward", pad_id, loss, margins)

