"""FastDropout (CPU dropout masks from numpy) and skipping peft's input casts under autocast."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lmtune.config import LoraConfig, MethodConfig, ModelConfig
from lmtune.model.adapters import apply_peft
from lmtune.model.load import load_model
from lmtune.model.lora_speed import (
    MASK_LEVELS,
    FastDropout,
    FusedLoraLinear,
    LoraLinear,
    fuse_lora_layers,
    input_casts_off,
    tuner_layers,
    use_fast_dropout,
)


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


def lora_model(dtype: str = "float32", dropout: float = 0.2, fused: bool = True, **lora):
    """tiny-llama with LoRA (B random, so the adapters matter); `fused=False` restores peft's forward."""
    torch.manual_seed(0)
    model, _ = load_model(ModelConfig(name="tiny-llama", dtype=dtype))
    model = apply_peft(model, MethodConfig(peft="lora"), LoraConfig(r=4, dropout=dropout, **lora))
    for name, param in model.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(param, std=0.1)
    if not fused:
        for m in model.modules():
            if type(m) is FusedLoraLinear:
                m.__class__ = LoraLinear
    return model.train()


def train_grads(model, autocast: bool = False, seed: int = 1):
    """Loss and LoRA gradients of one forward/backward on fixed tokens, dropout masks from `seed`."""
    model.zero_grad()
    ids = torch.arange(24).remainder(200).view(2, 12)
    torch.manual_seed(seed)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_apply_peft_fuses_every_plain_lora_linear():
    model = lora_model()
    fused = [m for m in model.modules() if isinstance(m, FusedLoraLinear)]
    assert len(fused) == 14 and fuse_lora_layers(model) == 0


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_fused_adapters_match_peft_in_fp32(dropout):
    loss_peft, grads_peft = train_grads(lora_model(dropout=dropout, fused=False))
    loss_fused, grads_fused = train_grads(lora_model(dropout=dropout))
    assert torch.allclose(loss_fused, loss_peft, rtol=1e-6)
    assert grads_fused.keys() == grads_peft.keys() and len(grads_fused) == 28
    for name in grads_peft:  # same masks (same seed), same sums in another order
        assert torch.allclose(grads_fused[name], grads_peft[name], rtol=1e-4, atol=1e-6), name


def test_fused_adapters_under_bf16_autocast_are_at_least_as_close_to_fp32():
    loss_ref, grads_ref = train_grads(lora_model(dropout=0.0))
    loss_peft, grads_peft = train_grads(lora_model(dropout=0.0, fused=False), autocast=True)
    loss_fused, grads_fused = train_grads(lora_model(dropout=0.0), autocast=True)

    def error(grads):
        return sum((grads[n] - grads_ref[n]).norm() ** 2 for n in grads_ref).sqrt() / sum(
            g.norm() ** 2 for g in grads_ref.values()).sqrt()

    # One addmm rounds once where peft rounds after the product, the scaling and the sum.
    assert abs(loss_fused - loss_ref) <= abs(loss_peft - loss_ref) + 1e-4
    assert error(grads_fused) < 0.05 and error(grads_fused) <= 1.5 * error(grads_peft)


def test_fused_dropout_keeps_the_mask_seed_and_checkpointing_recomputes_the_same_masks():
    model = lora_model(dropout=0.3)
    loss_a, grads_a = train_grads(model, seed=7)
    loss_b, grads_b = train_grads(model, seed=7)
    loss_c, _ = train_grads(model, seed=8)
    assert torch.equal(loss_a, loss_b) and all(torch.equal(grads_a[n], grads_b[n]) for n in grads_a)
    assert not torch.equal(loss_a, loss_c)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    loss_ckpt, grads_ckpt = train_grads(model, seed=7)
    assert torch.equal(loss_ckpt, loss_a)
    assert all(torch.allclose(grads_ckpt[n], grads_a[n], rtol=1e-5, atol=1e-7) for n in grads_a)


def test_dora_merged_and_disabled_adapters_keep_peft_behaviour():
    ids = torch.arange(12).view(1, 12)
    dora_fused, dora_peft = lora_model(use_dora=True).eval(), lora_model(use_dora=True, fused=False).eval()
    assert torch.equal(dora_fused(input_ids=ids).logits, dora_peft(input_ids=ids).logits)
    model = lora_model(dropout=0.0).eval()
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
        with model.disable_adapter():
            base = model(input_ids=ids).logits
        model.merge_adapter()
        merged = model(input_ids=ids).logits
    assert not torch.allclose(adapted, base, atol=1e-3)
    assert torch.allclose(merged, adapted, atol=1e-5)
