"""The losses on preference pairs (reward model, DPO, IPO): pure tensor functions.

Nothing here loads a model: the objectives run the forward passes and hand these functions
log-probabilities or scores. Every loss follows the loop's convention: it returns the *sum* of its
per-unit losses and a dict of detached metric sums, and the loop divides by the global unit count.
The unit is one pair.

Usage:
    logps, n = sequence_logps(logits[:, :-1], targets[:, 1:])        # caller shifts; [B], [B]
    loss_sum, sums = dpo_loss(pc, pr, rc, rr, beta=0.1)               # pairs
    loss_sum, sums = bradley_terry_loss(chosen_scores, rejected_scores)
    metrics = preference_summary(totals, n_pairs)                      # eval_loss, eval_reward_accuracy, ...
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Sums = dict[str, torch.Tensor]


def token_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Log-probability [B, T] of each target token under logits [B, T, V]; 0 where the target is -100."""
    # cross_entropy's log-softmax + gather avoids materialising a second [B, T, V] tensor of log-probs,
    # and ignore_index gives exactly 0 at padding/prompt positions.
    nll = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=-100, reduction="none")
    return -nll


def sequence_logps(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability [B] of each row's target tokens and the number of those tokens [B]."""
    return token_logps(logits, targets).sum(-1), (targets != -100).sum(-1)


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> tuple[torch.Tensor, Sums]:
    """Reward-model pairwise loss: sum of -log sigmoid(chosen - rejected) over pairs."""
    margin = chosen.float() - rejected.float()
    loss_sum = -F.logsigmoid(margin).sum()
    return loss_sum, {
        "loss_sum": loss_sum.detach(),
        "n_correct": (margin > 0).sum().detach(),
        "margin_sum": margin.sum().detach(),
        # The scores themselves play the part of DPO's implicit rewards, so one summary fits both.
        "chosen_reward_sum": chosen.float().sum().detach(),
        "rejected_reward_sum": rejected.float().sum().detach(),
    }


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    kind: Literal["sigmoid", "ipo"] = "sigmoid",
) -> tuple[torch.Tensor, Sums]:
    """DPO (sigmoid) or IPO loss summed over pairs, from per-sequence summed log-probs [B].

    sigmoid: -log sigmoid(beta * h) with h = (pc - rc) - (pr - rr)   (Rafailov et al. 2023)
    ipo:     (h - 1 / (2 beta))^2                                    (Azar et al. 2023, eq. 17)
    IPO uses the *summed* log-probs of each sequence, as in the paper; TRL averages them per token
    instead, which changes the scale of h and so the meaning of beta.
    """
    chosen_logratio = policy_chosen.float() - ref_chosen.float()
    rejected_logratio = policy_rejected.float() - ref_rejected.float()
    h = chosen_logratio - rejected_logratio
    if kind == "sigmoid":
        losses = -F.logsigmoid(beta * h)
    elif kind == "ipo":
        losses = (h - 1.0 / (2.0 * beta)) ** 2
    else:
        raise ValueError(f"dpo loss must be 'sigmoid' or 'ipo', got {kind!r}")
    loss_sum = losses.sum()
    chosen_reward = (beta * chosen_logratio).detach()
    rejected_reward = (beta * rejected_logratio).detach()
    return loss_sum, {
        "loss_sum": loss_sum.detach(),
        "n_correct": (chosen_reward > rejected_reward).sum(),
        "chosen_reward_sum": chosen_reward.sum(),
        "rejected_reward_sum": rejected_reward.sum(),
        "margin_sum": (chosen_reward - rejected_reward).sum(),
    }


def preference_summary(totals: dict[str, float], n_pairs: float) -> dict[str, float]:
    """Mean loss, reward accuracy, chosen/rejected rewards and margin from summed pair statistics."""
    names = {
        "loss_sum": "eval_loss",
        "n_correct": "eval_reward_accuracy",
        "chosen_reward_sum": "eval_chosen_reward",
        "rejected_reward_sum": "eval_rejected_reward",
        "margin_sum": "eval_margin",
    }
    if n_pairs == 0:
        return {name: float("nan") for name in names.values()}
    return {name: totals[key] / n_pairs for key, name in names.items() if key in totals}
