"""GRPO's loss (online RL from a reward): group-normalised advantages and the clipped token loss with KL.

Pure tensor functions, like pair_losses.py: the loss returns the *sum* over completion tokens and a
dict of detached metric sums; the objective (grpo.py) scales it and the loop divides by the units.

Usage:
    adv = group_advantages(rewards, group_size=8)                      # zero mean within each group
    loss_sum, sums = grpo_loss(new, old, ref, adv, mask, clip_eps=0.2, kl_coef=0.04)  # tokens
"""

from __future__ import annotations

from typing import Sequence

import torch

Sums = dict[str, torch.Tensor]


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
