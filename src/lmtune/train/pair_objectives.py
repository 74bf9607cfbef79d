"""Objectives on preference pairs: a reward model (Bradley-Terry) and DPO / IPO against a frozen reference.

    objective = RewardObjective(pad_id)                                   # one-output head
    objective = DpoObjective(pad_id, beta=0.1, kind="sigmoid")            # LoRA: reference = adapter off
    objective = DpoObjective(pad_id, 0.1, reference=frozen_copy)          # full fine-tuning

A batch stacks the chosen answers of its pairs above the rejected ones ([2B, L], right-padded, loss
labels only on the answers) and counts one unit per pair. With LoRA the reference log-probabilities
come from the same weights with the adapter switched off, so no second copy of the model is held;
`precompute_reference` scores every pair once before training (objective.prepare) instead of at
every step. Per-pair margins (objective.margins) give held-out accuracies with bootstrap intervals.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F

from lmtune.data.collate import pad_collate
from lmtune.train.objective import Batch, Method, Objective, pad_id_of
from lmtune.train.pair_losses import bradley_terry_loss, dpo_loss, preference_summary


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


class PairObjective(Objective):
    """What every pair objective shares: the stacked collate, one unit per pair, the preference summary."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def collate(self, items: list) -> Batch:
        """Chosen rows above rejected rows."""
        return pair_collate(items, self.pad_id)

    def units(self, item: Any) -> int:
        """One pair."""
        return 1

    def length(self, item: Any) -> int:
        """Tokens of both answers of the pair."""
        return len(item[0].input_ids) + len(item[1].input_ids)

    def summarize(self, totals: dict[str, float], n_units: float) -> dict[str, float]:
        """Mean loss, reward accuracy, chosen/rejected rewards and margin."""
        return preference_summary(totals, n_units)


def _halves(logps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    half = logps.shape[0] // 2
    return logps[:half], logps[half:]


class DpoObjective(PairObjective):
    """DPO (sigmoid) or IPO on chosen/rejected pairs; the reference is `reference` or the adapter switched off."""

    name = "dpo"

    def __init__(self, pad_id: int, beta: float, kind: str = "sigmoid", reference: torch.nn.Module | None = None,
                 precompute: bool = False):
        super().__init__(pad_id)
        self.beta, self.kind, self.reference = beta, kind, reference
        if not precompute:
            self.prepare = None  # the reference is scored at every step instead

    def loss(self, model: torch.nn.Module, batch: Batch):
        """Summed DPO / IPO loss of the batch's pairs."""
        ref_c, ref_r = _halves(reference_logps(model, batch, self.reference))
        pol_c, pol_r = _halves(sequence_logps(model, batch))
        return dpo_loss(pol_c, pol_r, ref_c, ref_r, self.beta, self.kind)

    @torch.no_grad()
    def margins(self, model: torch.nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        """Implicit reward margin and log-prob margin of each pair."""
        logps = sequence_logps(model, batch)
        ref_c, ref_r = _halves(reference_logps(model, batch, self.reference, own_logps=logps))
        pol_c, pol_r = _halves(logps)
        return {"implicit_reward": self.beta * ((pol_c - ref_c) - (pol_r - ref_r)), "logp": pol_c - pol_r}

    @torch.no_grad()
    def prepare(self, model: torch.nn.Module, pairs: list, batch_size: int) -> list:
        """The pairs with their reference log-probs, scored once before training."""
        device = next(model.parameters()).device
        out = []
        for start in range(0, len(pairs), batch_size):
            chunk = [p[:2] for p in pairs[start : start + batch_size]]
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                     for k, v in pair_collate(chunk, self.pad_id).items()}
            ref_c, ref_r = _halves(reference_logps(model, batch, self.reference))
            out += [(*p, float(c), float(r)) for p, c, r in zip(chunk, ref_c.tolist(), ref_r.tolist())]
        return out


class RewardObjective(PairObjective):
    """A one-output head trained so that score(chosen) > score(rejected) (Bradley-Terry)."""

    name = "reward"

    @staticmethod
    def _scores(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()[:, 0]
        return _halves(out)

    def loss(self, model: torch.nn.Module, batch: Batch):
        """Summed Bradley-Terry loss of the batch's pairs."""
        return bradley_terry_loss(*self._scores(model, batch))

    @torch.no_grad()
    def margins(self, model: torch.nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        """Score margin of each pair."""
        chosen, rejected = self._scores(model, batch)
        return {"score": chosen - rejected}


def build_dpo(cfg, tokenizer, data=None, model=None) -> DpoObjective:
    """DPO of a run config; full fine-tuning copies `model` (the base before any update) as its reference."""
    reference = None
    if cfg.method.peft == "none":
        if model is None:
            raise ValueError("DPO with full fine-tuning needs the model to copy its frozen reference from")
        # Full fine-tuning: the reference must be a frozen copy (LoRA just switches its adapter off).
        reference = copy.deepcopy(model).eval().requires_grad_(False)
    d = cfg.method.dpo
    return DpoObjective(pad_id_of(tokenizer), d.beta, d.loss, reference, d.precompute_reference)


def build_reward(cfg, tokenizer, data=None, model=None) -> RewardObjective:
    """The reward-model objective (it reads no method section)."""
    return RewardObjective(pad_id_of(tokenizer))


REWARD = Method(name="reward", build=build_reward, head="sequence_classification", items="pairs",
                outputs=lambda data: 1, evaluation="pairs", baseline="own_head", head_only=True)
DPO = Method(name="dpo", build=build_dpo, items="pairs", evaluation="pairs", config_section="dpo",
             copies_reference=True, api_type="dpo")
