"""The training loop on a tiny model: learning, exact accumulation, packing, resume, early stopping."""

from __future__ import annotations

import json

import pytest
import torch

from lmtune.train import loop as loop_mod
from lmtune.train.checkpoint import latest_checkpoint
from lmtune.train.loop import fit
from lmtune.train.objectives import causal_lm_loss, full_logits_lm_loss, sft_objective

PAD = 0


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_one_repeated_batch_is_overfit(encoded, make_model, tmp_path, training_cfg):
    model = make_model()
    batch = encoded[:2]
    # lr 1e-2 reaches ~0.004 for every seed tried; at 3e-2 the loss spiked back up late in some runs
    # (0.24 at step 60 on an AVX-512 machine, seed 0).
    cfg = training_cfg(batch_size=2, max_steps=60, learning_rate=1e-2)
    result = fit(model, batch, [], sft_objective(True, PAD), cfg, tmp_path)
    assert result.train_losses[0] > 4.0
    assert result.train_losses[-1] < 0.05


def test_loss_decreases_over_a_small_data_set(encoded, make_model, tmp_path, training_cfg):
    cfg = training_cfg(batch_size=4, epochs=8, eval_every=3)
    result = fit(make_model(), encoded, encoded[:4], sft_objective(True, PAD), cfg, tmp_path)
    evals = [e["eval_loss"] for e in result.evals]
    assert evals[-1] < 0.6 * evals[0]
    assert sum(result.train_losses[-3:]) < 0.6 * sum(result.train_losses[:3])
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {"train", "eval"} == {r["kind"] for r in lines}
    assert all(r["tokens_per_s"] > 0 for r in lines if r["kind"] == "train")


def test_full_fine_tuning_changes_every_parameter(encoded, make_model, tmp_path, training_cfg):
    model = make_model()
    before = snapshot(model)
    fit(model, encoded, [], sft_objective(True, PAD), training_cfg(batch_size=4, max_steps=2), tmp_path)
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p, before[n])]
    assert unchanged == []


def record_gradients(monkeypatch):
    """Make fit's optimizer remember the gradients it is given at every step."""
    seen: list[dict[int, torch.Tensor]] = []
    real = loop_mod.build_optimizer

    def build(model, cfg):
        opt = real(model, cfg)
        names = {id(p): n for n, p in model.named_parameters()}
        opt.register_step_pre_hook(
            lambda o, a, k: seen.append({names[id(p)]: p.grad.clone() for g in o.param_groups for p in g["params"]})
        )
        return opt

    monkeypatch.setattr(loop_mod, "build_optimizer", build)
    return seen


@pytest.mark.parametrize("packing", [True, False])
def test_batch_4_equals_batch_1_with_4_accumulation_steps(encoded, make_model, tmp_path, packing, training_cfg,
                                                          monkeypatch):
    grads = record_gradients(monkeypatch)
    obj = sft_objective(packing, PAD)
    r_big = fit(make_model(), encoded, [], obj, training_cfg(batch_size=4, grad_accum=1, max_steps=3), tmp_path / "a")
    r_small = fit(make_model(), encoded, [], obj, training_cfg(batch_size=1, grad_accum=4, max_steps=3),
                  tmp_path / "b")
    # Tolerance: fp32 summation order differs between one batch of 4 and four batches of 1.
    assert r_big.train_losses == pytest.approx(r_small.train_losses, abs=1e-5)
    big_steps, small_steps = grads[:3], grads[3:]
    for big, small in zip(big_steps, small_steps):
        for name in big:
            assert torch.allclose(big[name], small[name], atol=1e-6, rtol=1e-4), name


@pytest.mark.parametrize("pack_length", [None, 64])
def test_packed_equals_unpacked(encoded, make_model, tmp_path, training_cfg, pack_length):
    packed, padded = make_model(), make_model()
    cfg = training_cfg(batch_size=4, max_steps=3)
    r1 = fit(packed, encoded, encoded[:5], sft_objective(True, PAD, pack_length), cfg, tmp_path / "p")
    r2 = fit(padded, encoded, encoded[:5], sft_objective(False, PAD), cfg, tmp_path / "u")
    assert r1.train_losses == pytest.approx(r2.train_losses, abs=1e-5)
    assert r1.evals[-1]["eval_loss"] == pytest.approx(r2.evals[-1]["eval_loss"], abs=1e-5)


@pytest.mark.parametrize("packing", [True, False])
def test_supervised_only_logits_give_the_full_logits_loss(encoded, make_model, packing):
    model = make_model()
    obj = sft_objective(packing, PAD)
    batch = obj.collate(encoded[:5])
    fast, fast_sums = causal_lm_loss(model, batch)
    full, full_sums = full_logits_lm_loss(model, batch)
    assert fast.item() == pytest.approx(full.item(), abs=1e-5 * batch["n_tokens"])
    assert fast_sums["n_correct"] == full_sums["n_correct"]


def test_resume_continues_exactly(encoded, make_model, tmp_path, training_cfg):
    # Dropout on, so the RNG state must be restored too for the losses to match.
    cfg = training_cfg(batch_size=2, max_steps=8, save_every=2, eval_every=4, keep_checkpoints=3)
    full = fit(make_model(attention_dropout=0.2), encoded, encoded[:3], sft_objective(True, PAD), cfg, tmp_path / "a")

    def crash(step, record):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(make_model(attention_dropout=0.2), encoded, encoded[:3], sft_objective(True, PAD), cfg, tmp_path / "b",
            on_step=crash)
    last = latest_checkpoint(tmp_path / "b" / "checkpoints")
    assert last.name == "step-000004"
    resumed = fit(make_model(attention_dropout=0.2), encoded, encoded[:3], sft_objective(True, PAD), cfg,
                  tmp_path / "b", resume=last)
    assert resumed.train_losses == pytest.approx(full.train_losses[4:], abs=1e-6)
    assert resumed.evals[-1]["eval_loss"] == pytest.approx(full.evals[-1]["eval_loss"], abs=1e-6)


def test_on_step_gets_each_train_record_then_each_eval_record(encoded, make_model, tmp_path, training_cfg):
    seen = []
    cfg = training_cfg(batch_size=4, max_steps=4, eval_every=2)
    fit(make_model(), encoded, encoded[:2], sft_objective(True, PAD), cfg, tmp_path,
        on_step=lambda step, record: seen.append((step, record["kind"], "eval_loss" in record)))
    assert seen == [(1, "train", False), (2, "train", False), (2, "eval", True), (3, "train", False),
                    (4, "train", False), (4, "eval", True)]


def test_early_stopping_on_a_plateau_keeps_the_best_weights(encoded, make_model, tmp_path, monkeypatch, training_cfg):
    planted = iter([3.0, 2.0, 2.5, 2.4, 2.6, 1.0])  # best at the 2nd evaluation, then a plateau

    def fake_eval(*args, **kwargs):
        return {"eval_loss": next(planted)}

    monkeypatch.setattr(loop_mod, "evaluate_loss", fake_eval)
    weights_at = {}

    def remember(step, record):
        weights_at[step] = snapshot(model)

    model = make_model()
    cfg = training_cfg(batch_size=4, max_steps=12, eval_every=2,
                       early_stopping={"metric": "eval_loss", "patience": 3, "min_delta": 0.01})
    result = fit(model, encoded, encoded[:2], sft_objective(True, PAD), cfg, tmp_path, on_step=remember)
    assert result.stopped_early and result.steps == 10  # evals at 2,4(best),6,8,10
    assert result.best_step == 4 and result.best_metric == 2.0
    for name, p in model.named_parameters():
        assert torch.equal(p, weights_at[4][name]), name
    assert not torch.equal(dict(model.named_parameters())["lm_head.weight"], weights_at[10]["lm_head.weight"])


def test_tensorboard_receives_the_metrics(encoded, make_model, tmp_path, training_cfg):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = training_cfg(batch_size=4, max_steps=3, eval_every=3, report_to=["tensorboard"])
    fit(make_model(), encoded, encoded[:2], sft_objective(True, PAD), cfg, tmp_path)
    events = list((tmp_path / "lmtune").rglob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert {"loss", "eval_loss"} <= set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Scalars("loss")] == [1, 2, 3]


def test_gradient_checkpointing_gives_the_same_losses(encoded, make_model, tmp_path, training_cfg):
    plain = fit(make_model(), encoded, [], sft_objective(True, PAD), training_cfg(batch_size=4, max_steps=3),
                tmp_path / "a")
    model = make_model()
    ckpt = fit(model, encoded, [], sft_objective(True, PAD),
               training_cfg(batch_size=4, max_steps=3, gradient_checkpointing=True), tmp_path / "b")
    assert model.is_activation_checkpointing
    assert ckpt.train_losses == pytest.approx(plain.train_losses, abs=1e-5)


def test_length_grouped_batches_train(encoded, make_model, tmp_path, training_cfg):
    cfg = training_cfg(batch_size=3, epochs=4, packing=False, group_by_length=True)
    result = fit(make_model(), encoded, [], sft_objective(False, PAD), cfg, tmp_path)
    assert result.steps == 16
    assert sum(result.train_losses[-4:]) < 0.7 * sum(result.train_losses[:4])


def test_patience_running_out_at_the_last_step_is_not_early_stopping(encoded, make_model, tmp_path, monkeypatch,
                                                                      training_cfg, capsys):
    planted = iter([2.0, 2.5, 2.6])  # best at step 2, then no improvement at steps 4 and 6 (the last)
    monkeypatch.setattr(loop_mod, "evaluate_loss", lambda *a, **k: {"eval_loss": next(planted)})
    cfg = training_cfg(batch_size=4, max_steps=6, eval_every=2, early_stopping={"metric": "eval_loss", "patience": 2})
    result = fit(make_model(), encoded, encoded[:2], sft_objective(True, PAD), cfg, tmp_path)
    assert result.steps == 6 and not result.stopped_early
    assert "early stopping" not in capsys.readouterr().out


def test_token_budget_batches_give_the_step_of_count_batches(encoded, make_model, tmp_path, training_cfg,
                                                             monkeypatch):
    """The same four examples in one micro-batch of 4, or in two micro-batches filled by tokens, make the
    same step: the loss is divided by the step's supervised tokens, not by each micro-batch's."""
    data = encoded[:4]
    lengths = sorted(len(e.input_ids) for e in data)
    # Any two fit in the budget, no three do: two micro-batches in every order, of unequal token counts.
    budget = lengths[-1] + lengths[-2]
    assert lengths[0] + lengths[1] + lengths[2] > budget
    grads = record_gradients(monkeypatch)
    count = fit(make_model(), data, [], sft_objective(True, PAD), training_cfg(batch_size=4, max_steps=1),
                tmp_path / "count")
    by_tokens = fit(make_model(), data, [], sft_objective(True, PAD),
                    training_cfg(max_tokens_per_batch=budget, grad_accum=2, max_steps=1), tmp_path / "tokens")
    assert by_tokens.train_losses == pytest.approx(count.train_losses, abs=1e-5)
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-5, rtol=1e-4, msg=name)
