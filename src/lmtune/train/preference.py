"""Pure tensor pieces of preference learning (reward model, DPO, IPO) and online RL (GRPO).

Nothing here loads a model: the objectives run the forward passes and hand these functions
log-probabilities or scores. Every loss follows the loop's convention: it returns the *sum* of its
per-unit losses and a dict of detached metric sums, and the loop divides by the global unit count.
The unit is one pair for bradley_terry_loss and dpo_loss, one completion token for grpo_loss.

Usage:
    logps, n = sequence_logps(logits[:, :-1], targets[:, 1:])        # caller shifts; [B], [B]
    loss_sum, sums = dpo_loss(pc, pr, rc, rr, beta=0.1)               # pairs
    loss_sum, sums = bradley_terry_loss(chosen_scores, rejected_scores)
    metrics = preference_summary(totals, n_pairs)                      # eval_loss, eval_reward_accuracy, ...
    adv = group_advantages(rewards, group_size=8)                      # zero mean within each group
    loss_sum, sums = grpo_loss(new, old, ref, adv, mask, clip_eps=0.2, kl_coef=0.04)  # tokens
"""

from __future__ import annotations

from typing import Literal, Sequence

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


def group_advantages(
    rewards: torch.Tensor | Sequence[float],
    group_size: int | None = None,
    eps: float = 1e-4,
    scale: bool = True,
) -> torch.Tensor:
    """GRPO advantages (r - group mean) / (group std + eps), in the shape of `rewards`.

    `rewards` is [n_groups, group_size], or flat [n_groups * group_size] with `group_size` given
    (completions of one prompt next to each other). The std is the unbiased one, as in the GRPO paper
    and TRL; scale=False skips the division (Dr. GRPO). A group whose rewards are all equal carries no
    signal and gets exactly 0, not a division of rounding noise by eps.
    """
    r = torch.as_tensor(rewards, dtype=torch.float32)
    shape = r.shape
    if r.dim() == 1:
        if group_size is None or group_size < 2 or r.numel() % group_size:
            raise ValueError(f"{r.numel()} flat rewards need a group_size >= 2 that divides them, got {group_size}")
        r = r.view(-1, group_size)
    elif r.dim() != 2 or r.shape[1] < 2:
        raise ValueError(f"rewards must be [n_groups, group_size >= 2] or flat, got shape {tuple(shape)}")
    centred = r - r.mean(dim=1, keepdim=True)
    adv = centred / (r.std(dim=1, keepdim=True) + eps) if scale else centred
    constant = (r == r[:, :1]).all(dim=1, keepdim=True)
    return torch.where(constant, torch.zeros_like(adv), adv).view(shape)


def grpo_loss(
    new_logps: torch.Tensor,
    old_logps: torch.Tensor | None,
    ref_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
    kl_coef: float,
) -> tuple[torch.Tensor, Sums]:
    """Clipped-surrogate GRPO loss with a k3 KL penalty, summed over completion tokens.

    Inputs are per-token log-probs [B, T] of the sampled completions under the policy being trained
    (new), the policy that sampled them (old; None means new.detach(), i.e. one update per batch) and
    the frozen reference (None when kl_coef is 0 to skip its forward pass); advantages are [B] and
    mask [B, T] marks completion tokens. Per token:
        ratio = exp(new - old);  surrogate = min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)
        kl = exp(ref - new) - (ref - new) - 1   (Schulman's k3: unbiased, always >= 0)
        loss = -(surrogate - kl_coef * kl)
    The unit is one completion token (DAPO's token-level normalisation): the loop divides the sum by
    the number of completion tokens in the whole optimizer step, so long completions are not
    down-weighted per token as with the per-sequence mean of the original GRPO.
    n_clipped counts tokens whose clip is active (the gradient through the ratio is zero there).
    """
    keep = mask.bool()
    m = keep.to(new_logps.dtype)
    old = new_logps.detach() if old_logps is None else old_logps.detach()
    # where(), not multiplying by the mask: padding may hold -inf log-probs, and inf * 0 is nan.
    ratio = torch.exp(torch.where(keep, new_logps - old, 0.0))
    adv = advantages.to(new_logps.dtype).unsqueeze(-1)
    surrogate = torch.minimum(ratio * adv, torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv)
    if ref_logps is None:
        if kl_coef != 0:
            raise ValueError("grpo_loss needs ref_logps when kl_coef is not 0")
        kl = torch.zeros_like(new_logps)
    else:
        delta = torch.where(keep, ref_logps.detach() - new_logps, 0.0)
        kl = torch.exp(delta) - delta - 1.0
    per_token = -(surrogate - kl_coef * kl)
    loss_sum = (per_token * m).sum()
    clipped = ((ratio < 1.0 - clip_eps) & (adv < 0)) | ((ratio > 1.0 + clip_eps) & (adv > 0))
    return loss_sum, {
        "loss_sum": loss_sum.detach(),
        "kl_sum": (kl * m).sum().detach(),
        "n_clipped": (clipped.to(m.dtype) * m).sum().detach(),
        "n_tokens": m.sum().detach(),
    }
