"""FastDropout (CPU dropout masks from numpy) and skipping peft's input casts under autocast."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lmtune.config import LoraConfig, MethodConfig, ModelConfig
from lmtune.model.adapters import apply_peft
from lmtune.model.load import load_model
from lmtune.model.lora_speed import MASK_LEVELS, FastDropout, input_casts_off, tuner_layers, use_fast_dropout


def test_drops_the_configured_fraction_and_scales_the_rest():
    x = torch.ones(1000, 1000, requires_grad=True)
    y = FastDropout(0.1).train()(x)
    dropped = (y == 0).float().mean().item()
    threshold = round(0.1 * MASK_LEVELS)
    assert dropped == pytest.approx(threshold / MASK_LEVELS, abs=2e-3)  # 1e6 draws: sd 3e-4
    assert torch.equal(y[y != 0].unique(), torch.tensor([MASK_LEVELS / (MASK_LEVELS - threshold)]))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d(x * keep * scale)/dx = keep * scale


def test_masks_follow_torch_seed_and_differ_between_calls():
    drop, x = FastDropout(0.3).train(), torch.ones(64, 64)
    torch.manual_seed(5)
    first, second = drop(x), drop(x)
    torch.manual_seed(5)
    assert torch.equal(drop(x), first) and torch.equal(drop(x), second)
    assert not torch.equal(first, second)


def test_masks_are_independent_across_positions():
    row = (FastDropout(0.5).train()(torch.ones(1, 200_000)) == 0).float().view(-1)
    assert abs(torch.corrcoef(torch.stack([row[:-1], row[1:]]))[0, 1].item()) < 0.01


def test_eval_mode_and_zero_probability_are_identity_and_dtype_is_kept():
    x = torch.randn(8, 8, dtype=torch.bfloat16)
    assert FastDropout(0.5).eval()(x) is x
    assert FastDropout(0.0).train()(x) is x
    assert FastDropout(0.5).train()(x).dtype == torch.bfloat16
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        FastDropout(1.0)


def test_apply_peft_puts_fast_dropout_in_every_lora_layer():
    model, _ = load_model(ModelConfig(name="tiny-llama"))
    model = apply_peft(model, MethodConfig(peft="lora"), LoraConfig(r=4, dropout=0.1))
    dropouts = [d for m in model.modules() if isinstance(getattr(m, "lora_dropout", None), nn.ModuleDict)
                for d in m.lora_dropout.values()]
    assert len(dropouts) == 14 and all(isinstance(d, FastDropout) and d.p == 0.1 for d in dropouts)
    assert use_fast_dropout(model) == 0  # nothing left to replace
    plain, _ = load_model(ModelConfig(name="tiny-llama"))
    plain = apply_peft(plain, MethodConfig(peft="lora"), LoraConfig(r=4, dropout=0.0))
    assert not any(isinstance(m, FastDropout) for m in plain.modules())


def loss_and_grads(model, ids, casts_off: bool):
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16), input_casts_off(tuner_layers(model), casts_off):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_skipping_input_casts_under_autocast_changes_nothing_and_restores_the_flags():
    model, _ = load_model(ModelConfig(name="tiny-llama", dtype="bfloat16"))
    model = apply_peft(model, MethodConfig(peft="lora"), LoraConfig(r=4, dropout=0.0))
    nn.init.normal_(next(p for n, p in model.named_parameters() if "lora_B" in n))  # B = 0 would hide the path
    layers = tuner_layers(model)
    assert layers and all(m.lora_A["default"].weight.dtype == torch.float32 for m in layers)
    ids = torch.randint(0, 200, (2, 12))
    loss_cast, grads_cast = loss_and_grads(model, ids, casts_off=False)
    loss_skip, grads_skip = loss_and_grads(model, ids, casts_off=True)
    # bf16 -> fp32 -> bf16 is exact, so the products see the same values either way.
    assert torch.equal(loss_cast, loss_skip)
    assert all(torch.equal(grads_cast[n], grads_skip[n]) for n in grads_cast)
    assert all(m.cast_input_dtype_enabled for m in layers)
    with pytest.raises(RuntimeError, match="boom"), input_casts_off(layers):
        raise RuntimeError("boom")
    assert all(m.cast_input_dtype_enabled for m in layers)
