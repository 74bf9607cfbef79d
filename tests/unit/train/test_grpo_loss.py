"""GRPO's loss by hand: group-normalised advantages, clipping, the k3 KL estimate, masking."""

from __future__ import annotations

import math

import pytest
import torch

from lmtune.train.grpo_loss import group_advantages, grpo_loss


def t(*values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def test_group_advantages_by_hand_and_constant_groups_are_zero():
    adv = group_advantages(t(1.0, 0.0, 0.0, 1.0, 0.1, 0.1, 0.1, 0.1), group_size=4)
    std = math.sqrt(4 * 0.25 / 3)  # unbiased std of (1, 0, 0, 1)
    a = 0.5 / (std + 1e-4)
    assert adv.tolist() == pytest.approx([a, -a, -a, a, 0.0, 0.0, 0.0, 0.0], abs=1e-6)
    assert adv[4:].eq(0).all()  # exactly zero, not rounding noise / eps
    grouped = group_advantages([[1.0, 0.0, 0.0, 1.0], [0.1, 0.1, 0.1, 0.1]])
    assert grouped.shape == (2, 4) and grouped.flatten().tolist() == adv.tolist()
    assert group_advantages(t(3.0, 1.0), group_size=2, scale=False).tolist() == [1.0, -1.0]


def test_group_advantages_zero_mean_unit_std_per_group():
    rewards = torch.rand(5, 6, generator=torch.Generator().manual_seed(0))
    adv = group_advantages(rewards, eps=0.0)
    assert adv.mean(dim=1).abs().max().item() < 1e-6
    assert adv.std(dim=1).tolist() == pytest.approx([1.0] * 5, abs=1e-5)


@pytest.mark.parametrize("rewards, size", [(t(1.0, 2.0, 3.0), 2), (t(1.0, 2.0), None), (t(1.0, 2.0), 1)])
def test_group_advantages_rejects_bad_groups(rewards, size):
    with pytest.raises(ValueError, match="group_size"):
        group_advantages(rewards, group_size=size)


def test_grpo_loss_on_policy_is_minus_advantage_times_tokens():
    logps = torch.tensor([[-1.0, -2.0, -0.5, -9.0], [-0.3, -0.7, -4.0, -4.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    loss, sums = grpo_loss(logps, logps.detach(), logps.detach(), t(1.0, -0.5), mask, clip_eps=0.2, kl_coef=0.1)
    assert loss.item() == pytest.approx(-(1.0 * 3 + (-0.5) * 2), abs=1e-6)
    assert sums["kl_sum"].item() == 0.0 and sums["n_clipped"].item() == 0 and sums["n_tokens"].item() == 5
    loss.backward()
    assert logps.grad.flatten().tolist() == pytest.approx([-1.0, -1.0, -1.0, 0.0, 0.5, 0.5, 0.0, 0.0], abs=1e-6)
    same, _ = grpo_loss(logps, None, logps.detach(), t(1.0, -0.5), mask, clip_eps=0.2, kl_coef=0.1)
    assert same.item() == pytest.approx(loss.item())


def test_grpo_loss_by_hand_with_clipping_and_k3_kl():
    ratios = [1.5, 0.9, 0.7]
    new = torch.tensor([[math.log(r) for r in ratios]], requires_grad=True)
    old = torch.zeros(1, 3)
    ref = torch.tensor([[0.2, -0.1, 0.0]])
    loss, sums = grpo_loss(new, old, ref, t(1.0), torch.ones(1, 3), clip_eps=0.2, kl_coef=0.1)
    surrogate = [1.2, 0.9, 0.7]  # A > 0: min(r, clip(r)) clips only the ratio above 1.2
    kls = []
    for r, ref_logp in zip(ratios, [0.2, -0.1, 0.0]):
        delta = ref_logp - math.log(r)
        kls.append(math.exp(delta) - delta - 1)
    want = -sum(s - 0.1 * k for s, k in zip(surrogate, kls))
    assert loss.item() == pytest.approx(want, abs=1e-6)
    assert sums["kl_sum"].item() == pytest.approx(sum(kls), abs=1e-6)
    assert sums["n_clipped"].item() == 1 and sums["n_tokens"].item() == 3


@pytest.mark.parametrize("advantage, clipped_index", [(1.0, 0), (-1.0, 2)])
def test_grpo_clipped_token_has_zero_gradient(advantage, clipped_index):
    ratios = [1.5, 0.9, 0.7]  # above, inside and below [0.8, 1.2]
    new = torch.tensor([[math.log(r) for r in ratios]], requires_grad=True)
    loss, sums = grpo_loss(new, torch.zeros(1, 3), None, t(advantage), torch.ones(1, 3), clip_eps=0.2, kl_coef=0.0)
    loss.backward()
    # d/d new of -(ratio * A) is -ratio * A wherever the clip is not active.
    want = [0.0 if i == clipped_index else -r * advantage for i, r in enumerate(ratios)]
    assert new.grad[0].tolist() == pytest.approx(want, abs=1e-6)
    assert sums["n_clipped"].item() == 1


def test_grpo_masked_tokens_do_not_count():
    new = torch.tensor([[-1.0, 50.0]], requires_grad=True)
    inf = float("inf")  # padding may hold any value, even infinite log-probs
    loss, sums = grpo_loss(new, torch.tensor([[-1.0, -inf]]), torch.tensor([[-1.0, -inf]]), t(2.0),
                           torch.tensor([[True, False]]), clip_eps=0.2, kl_coef=1.0)
    loss.backward()
    assert loss.item() == pytest.approx(-2.0) and sums["kl_sum"].item() == 0.0 and sums["n_clipped"].item() == 0
    assert new.grad[0, 1].item() == 0.0


def test_grpo_needs_reference_when_kl_is_weighted():
    logps = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="ref_logps"):
        grpo_loss(logps, None, None, t(1.0), torch.ones(1, 2), clip_eps=0.2, kl_coef=0.04)
