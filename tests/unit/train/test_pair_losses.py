"""Preference-pair losses (reward model, DPO, IPO) against values worked out by hand with math.log / math.exp."""

from __future__ import annotations

import math

import pytest
import torch

from lmtune.train.pair_losses import (
    bradley_terry_loss,
    dpo_loss,
    preference_summary,
    sequence_logps,
    token_logps,
)


def t(*values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def log_softmax_at(row: list[float], index: int) -> float:
    return row[index] - math.log(sum(math.exp(x) for x in row))


def test_sequence_logps_sums_target_tokens_and_skips_ignored():
    rows = [[[1.0, 2.0, 0.0], [0.5, 0.5, 3.0], [0.0, 0.0, 0.0]], [[2.0, -1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 4.0, 1.0]]]
    targets = torch.tensor([[1, 2, -100], [-100, 0, 1]])
    per_token = token_logps(torch.tensor(rows), targets)
    assert per_token[0, 2].item() == 0.0 and per_token[1, 0].item() == 0.0
    assert per_token[1, 1].item() == pytest.approx(-math.log(3.0), abs=1e-6)
    summed, n = sequence_logps(torch.tensor(rows), targets)
    want0 = log_softmax_at(rows[0][0], 1) + log_softmax_at(rows[0][1], 2)
    want1 = log_softmax_at(rows[1][1], 0) + log_softmax_at(rows[1][2], 1)
    assert summed.tolist() == pytest.approx([want0, want1], abs=1e-6)
    assert n.tolist() == [2, 2]


def test_bradley_terry_loss_by_hand():
    loss, sums = bradley_terry_loss(t(2.0, 0.5), t(1.0, 1.5))
    want = math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(1.0))
    assert loss.item() == pytest.approx(want, abs=1e-6)
    assert sums["loss_sum"].item() == pytest.approx(want, abs=1e-6)
    assert sums["n_correct"].item() == 1
    assert sums["margin_sum"].item() == pytest.approx(0.0, abs=1e-6)
    assert sums["chosen_reward_sum"].item() == pytest.approx(2.5)
    assert sums["rejected_reward_sum"].item() == pytest.approx(2.5)


def test_bradley_terry_gradient_is_minus_sigmoid_of_rejected_minus_chosen():
    c_vals, r_vals = [2.0, 0.5, -1.0], [1.0, 1.5, -1.0]
    chosen, rejected = t(*c_vals).requires_grad_(), t(*r_vals).requires_grad_()
    loss, _ = bradley_terry_loss(chosen, rejected)
    loss.backward()
    want = [-1.0 / (1.0 + math.exp(c - r)) for c, r in zip(c_vals, r_vals)]  # -sigmoid(r - c)
    assert chosen.grad.tolist() == pytest.approx(want, abs=1e-6)
    assert rejected.grad.tolist() == pytest.approx([-w for w in want], abs=1e-6)


# Two pairs: chosen log-ratios 0.5 and -1.0, rejected log-ratios -1.0 and 1.0, so h = 1.5 and -2.0.
POLICY_C, POLICY_R, REF_C, REF_R = t(-5.0, -7.0), t(-6.0, -4.0), t(-5.5, -6.0), t(-5.0, -5.0)


def test_dpo_sigmoid_loss_by_hand():
    loss, sums = dpo_loss(POLICY_C, POLICY_R, REF_C, REF_R, beta=0.5)
    want = math.log(1 + math.exp(-0.5 * 1.5)) + math.log(1 + math.exp(0.5 * 2.0))
    assert loss.item() == pytest.approx(want, abs=1e-6)
    assert sums["loss_sum"].item() == pytest.approx(want, abs=1e-6)
    assert sums["n_correct"].item() == 1  # rewards 0.25 > -0.5, then -0.5 < 0.5
    assert sums["chosen_reward_sum"].item() == pytest.approx(0.25 - 0.5)
    assert sums["rejected_reward_sum"].item() == pytest.approx(-0.5 + 0.5)
    assert sums["margin_sum"].item() == pytest.approx(0.75 - 1.0)


def test_ipo_loss_by_hand():
    loss, sums = dpo_loss(POLICY_C, POLICY_R, REF_C, REF_R, beta=0.5, kind="ipo")
    assert loss.item() == pytest.approx((1.5 - 1.0) ** 2 + (-2.0 - 1.0) ** 2, abs=1e-6)  # 1/(2 beta) = 1
    assert sums["n_correct"].item() == 1


def test_dpo_at_the_reference_is_log_2_per_pair_with_zero_rewards():
    logps = t(-3.0, -12.5, -40.0)
    loss, sums = dpo_loss(logps, logps - 1.0, logps, logps - 1.0, beta=0.1)
    assert loss.item() == pytest.approx(3 * math.log(2.0), abs=1e-6)
    for key in ("chosen_reward_sum", "rejected_reward_sum", "margin_sum", "n_correct"):
        assert sums[key].item() == 0.0
    ipo, _ = dpo_loss(logps, logps - 1.0, logps, logps - 1.0, beta=0.1, kind="ipo")
    assert ipo.item() == pytest.approx(3 * (1.0 / (2 * 0.1)) ** 2, rel=1e-6)


def test_dpo_gradient_raises_chosen_and_lowers_rejected():
    pc, pr = t(-5.0).requires_grad_(), t(-6.0).requires_grad_()
    loss, _ = dpo_loss(pc, pr, t(-5.0), t(-6.0), beta=0.5)
    loss.backward()
    assert pc.grad.item() == pytest.approx(-0.5 * 0.5) and pr.grad.item() == pytest.approx(0.5 * 0.5)


def test_dpo_rejects_unknown_kind():
    with pytest.raises(ValueError, match="hinge"):
        dpo_loss(POLICY_C, POLICY_R, REF_C, REF_R, beta=0.1, kind="hinge")


def test_preference_summary_means_per_pair():
    totals = {"loss_sum": 2.0, "n_correct": 3.0, "chosen_reward_sum": 1.0, "rejected_reward_sum": -1.0,
              "margin_sum": 2.0}
    assert preference_summary(totals, 4) == {
        "eval_loss": 0.5, "eval_reward_accuracy": 0.75, "eval_chosen_reward": 0.25,
        "eval_rejected_reward": -0.25, "eval_margin": 0.5,
    }
    empty = preference_summary({}, 0)
    assert set(empty) == {"eval_loss", "eval_reward_accuracy", "eval_chosen_reward", "eval_rejected_reward",
                          "eval_margin"}
    assert all(math.isnan(v) for v in empty.values())


def test_reward_model_sums_feed_the_same_summary():
    _, sums = bradley_terry_loss(t(2.0, 0.5), t(1.0, 1.5))
    summary = preference_summary({k: v.item() for k, v in sums.items()}, 2)
    assert summary["eval_reward_accuracy"] == 0.5 and summary["eval_margin"] == pytest.approx(0.0, abs=1e-6)
