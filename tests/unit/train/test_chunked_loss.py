"""Chunked cross-entropy through the output head: the same loss and gradients as the full logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model

from lmtune.model.tiny import tiny_causal_lm
from lmtune.train import chunked_loss
from lmtune.train.chunked_loss import head_returns_input, linear_cross_entropy, plain_output_head
from lmtune.train.sft import causal_lm_loss, SftObjective

PAD = 0


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 3 rows, so every test crosses chunk boundaries."""
    monkeypatch.setattr(chunked_loss, "CHUNK_BYTES", 1)
    monkeypatch.setattr(chunked_loss, "MIN_CHUNK_ROWS", 3)


def reference(hidden, weight, bias, targets):
    logits = F.linear(hidden, weight, bias).float()
    return F.cross_entropy(logits, targets, reduction="sum"), (logits.argmax(-1) == targets).sum()


@pytest.mark.parametrize("with_bias", [False, True])
def test_loss_and_gradients_match_the_full_logits(small_chunks, with_bias):
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(10, 8, generator=gen, requires_grad=True)
    weight = torch.randn(50, 8, generator=gen, requires_grad=True)
    bias = torch.randn(50, generator=gen, requires_grad=True) if with_bias else None
    targets = torch.randint(0, 50, (10,), generator=gen)
    with torch.no_grad():
        targets[::2] = F.linear(hidden, weight, bias).argmax(-1)[::2]  # some hits for the count
    params = [hidden, weight] + ([bias] if with_bias else [])

    loss, correct = linear_cross_entropy(hidden, weight, bias, targets)
    (0.5 * loss).backward()  # a scale, like the loop's division by the token count
    got = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    ref_loss, ref_correct = reference(hidden, weight, bias, targets)
    (0.5 * ref_loss).backward()

    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-6)
    assert correct.item() == ref_correct.item() > 0
    for g, p in zip(got, params):
        torch.testing.assert_close(g, p.grad, rtol=1e-5, atol=1e-6)


def test_frozen_head_gets_no_gradient_and_no_grad_mode_gives_the_loss(small_chunks):
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(7, 8, generator=gen, requires_grad=True)
    weight = torch.randn(20, 8, generator=gen)
    targets = torch.randint(0, 20, (7,), generator=gen)
    loss, _ = linear_cross_entropy(hidden, weight, None, targets)
    loss.backward()
    assert weight.grad is None and hidden.grad is not None
    with torch.no_grad():
        again, _ = linear_cross_entropy(hidden, weight, None, targets)
    assert again.item() == pytest.approx(loss.item(), rel=1e-6)


@pytest.mark.parametrize("packing", [True, False])
def test_causal_lm_loss_chunked_equals_unchunked_in_loss_and_every_gradient(
        small_chunks, encoded, make_model, packing):
    batch = SftObjective(packing, PAD).collate(encoded[:5])
    grads = []
    for chunked in (True, False):
        model = make_model()
        loss, sums = causal_lm_loss(model, batch, chunked=chunked)
        loss.backward()
        grads.append((loss.item(), sums["n_correct"].item(),
                      {n: p.grad.clone() for n, p in model.named_parameters()}))
    (loss_c, correct_c, grad_c), (loss_f, correct_f, grad_f) = grads
    assert loss_c == pytest.approx(loss_f, rel=1e-5)
    assert correct_c == correct_f
    assert grad_c.keys() == grad_f.keys()
    for name in grad_c:
        torch.testing.assert_close(grad_c[name], grad_f[name], rtol=1e-4, atol=1e-6, msg=name)


def test_lora_model_uses_the_chunked_path_with_the_frozen_head(encoded, make_model):
    model = get_peft_model(make_model(), LoraConfig(r=4, target_modules="all-linear"))
    head = plain_output_head(model)
    assert head is model.get_base_model().lm_head
    batch = SftObjective(True, PAD).collate(encoded[:4])
    loss, _ = causal_lm_loss(model, batch)
    with torch.no_grad():
        full, _ = causal_lm_loss(model, batch, chunked=False)
    loss.backward()
    assert loss.item() == pytest.approx(full.item(), rel=1e-5)
    assert head.weight.grad is None
    assert all(p.grad is not None for n, p in model.named_parameters() if "lora_" in n)


def test_head_forward_is_restored_even_after_an_error(make_model):
    model = make_model()
    head = plain_output_head(model)
    x = torch.randn(2, head.in_features)
    with pytest.raises(RuntimeError), head_returns_input(head):
        assert head(x) is x
        raise RuntimeError("boom")
    assert "forward" not in vars(head)
    assert head(x).shape == (2, head.out_features)


def test_models_that_postprocess_logits_fall_back_to_the_full_logits():
    softcapped = tiny_causal_lm({"model_type": "gemma2", "hidden_size": 16, "intermediate_size": 32,
                                 "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
                                 "head_dim": 8, "vocab_size": 40, "final_logit_softcapping": 30.0})
    assert plain_output_head(softcapped) is None
    softcapped.config.final_logit_softcapping = None
    assert plain_output_head(softcapped) is softcapped.lm_head
    lora_on_head = get_peft_model(tiny_causal_lm(vocab_size=40), LoraConfig(r=2, target_modules=["lm_head"]))
    assert plain_output_head(lora_on_head) is None


def test_under_bf16_autocast_the_head_runs_in_bf16_like_the_full_path(small_chunks, encoded, make_model):
    batch = SftObjective(True, PAD).collate(encoded[:3])
    model = make_model()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        chunked, _ = causal_lm_loss(model, batch)
        full, _ = causal_lm_loss(model, batch, chunked=False)
        fp32_hidden_bf16_head = chunked.item()
    fp32, _ = causal_lm_loss(model, batch)
    assert fp32_hidden_bf16_head == pytest.approx(full.item(), rel=1e-3)
    assert fp32_hidden_bf16_head != fp32.item()  # the head really ran in bf16
