"""Held-out scores of preference objectives: how often the chosen answer wins, with a bootstrap interval.

    scores = score_pairs(model, test_pairs, objective, batch_size=8, seed=0)
    scores["score_accuracy"], scores["score_accuracy_ci"], scores["score_margin"]        # reward model
    scores["implicit_reward_accuracy"], scores["logp_accuracy"]                          # DPO

Each margin the objective reports (chosen minus rejected) gives `<name>_accuracy`, the fraction of
pairs with a positive margin (a tie counts as a loss), its interval and `<name>_margin`, the mean.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lmtune.stats import bootstrap_ci
from lmtune.train.validation import to_device


@torch.no_grad()
def pair_margins(model, pairs: list, objective, batch_size: int) -> dict[str, np.ndarray]:
    """Every margin of the objective for every pair, in the order of `pairs`."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    # Batches of similar length waste little on padding (pairs vary from tens to hundreds of tokens).
    order = sorted(range(len(pairs)), key=lambda i: objective.length(pairs[i]))
    found: dict[str, np.ndarray] = {}
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = to_device(objective.collate([pairs[i] for i in chunk]), device)
        for name, values in objective.margins(model, batch).items():
            if name not in found:
                found[name] = np.zeros(len(pairs))
            found[name][chunk] = values.float().cpu().numpy()
    model.train(was_training)
    return found


def score_pairs(model, pairs: list, objective, batch_size: int, seed: int = 0) -> dict[str, Any]:
    """Pairwise accuracy (with a 95 % bootstrap interval) and mean margin of each of the objective's margins."""
    scores: dict[str, Any] = {"n": len(pairs)}
    for name, margins in pair_margins(model, pairs, objective, batch_size).items():
        wins = (margins > 0).astype(np.float64)
        scores[f"{name}_accuracy"] = float(wins.mean())
        scores[f"{name}_accuracy_ci"] = list(bootstrap_ci(lambda idx: wins[idx].mean(axis=1), len(wins), seed=seed))
        scores[f"{name}_margin"] = float(margins.mean())
    return scores
