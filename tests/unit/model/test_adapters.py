"""LoRA / DoRA / rsLoRA wrapping and full fine-tuning on the tiny Llama."""

from __future__ import annotations

import math

import pytest
import torch
from peft.tuners.lora import LoraLayer

from lmtune.config import LoraConfig, MethodConfig, ModelConfig
from lmtune.model.adapters import apply_peft, head_parameter_names, trainable_parameters
from lmtune.model.load import ModelError, describe_model, load_model, weights_hash

LINEAR = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
LORA = MethodConfig(peft="lora")


def tiny(task: str = "causal_lm", num_labels: int | None = None):
    return load_model(ModelConfig(name="tiny-llama"), task=task, num_labels=num_labels)


def lora_layers(model) -> dict[str, LoraLayer]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}


def test_all_linear_targets_every_linear_but_the_head():
    model, _ = tiny()
    model = apply_peft(model, LORA, LoraConfig(r=4))
    layers = lora_layers(model)
    assert {name.rsplit(".", 1)[-1] for name in layers} == LINEAR
    assert len(layers) == len(LINEAR) * 2  # two decoder layers
    assert not any("lm_head" in name for name in layers)


def test_only_adapter_parameters_train_and_count_matches_rank():
    model, _ = tiny()
    r = 4
    model = apply_peft(model, LORA, LoraConfig(r=r))
    trainable = trainable_parameters(model)
    assert trainable and all("lora_A" in n or "lora_B" in n for n, _ in trainable)
    expected = sum(r * (m.in_features + m.out_features) for m in lora_layers(model).values())
    assert sum(p.numel() for _, p in trainable) == expected == describe_model(model)["trainable_parameters"]


def test_training_step_moves_only_adapter_weights():
    model, tok = tiny()
    model = apply_peft(model, LORA, LoraConfig(r=4, dropout=0.0))
    base_before = weights_hash(model)
    before = {n: p.detach().clone() for n, p in trainable_parameters(model)}
    opt = torch.optim.SGD([p for _, p in trainable_parameters(model)], lr=0.5)
    ids = tok("some text to learn", return_tensors="pt").input_ids
    for _ in range(2):  # lora_B starts at zero, so lora_A only gets a gradient from the second step
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    assert all(not torch.equal(before[n], p) for n, p in trainable_parameters(model))
    assert weights_hash(model) == base_before


def test_explicit_target_list():
    model, _ = tiny()
    model = apply_peft(model, LORA, LoraConfig(target_modules=["q_proj", "v_proj"]))
    assert {name.rsplit(".", 1)[-1] for name in lora_layers(model)} == {"q_proj", "v_proj"}


def test_unknown_target_module_is_a_model_error():
    model, _ = tiny()
    with pytest.raises(ModelError, match="target_modules"):
        apply_peft(model, LORA, LoraConfig(target_modules=["nope_proj"]))


def test_dora_adds_trainable_magnitudes():
    model, _ = tiny()
    model = apply_peft(model, LORA, LoraConfig(r=4, use_dora=True))
    assert model.peft_config["default"].use_dora
    names = [n for n, _ in trainable_parameters(model)]
    magnitudes = [n for n in names if "lora_magnitude_vector" in n]
    assert len(magnitudes) == len(LINEAR) * 2


@pytest.mark.parametrize("rslora", [False, True])
def test_rslora_scaling(rslora):
    model, _ = tiny()
    model = apply_peft(model, LORA, LoraConfig(r=16, alpha=8.0, use_rslora=rslora))
    expected = 8.0 / math.sqrt(16) if rslora else 8.0 / 16
    for layer in lora_layers(model).values():
        assert layer.scaling["default"] == pytest.approx(expected)


def test_full_finetuning_unfreezes_everything():
    model, _ = tiny()
    for p in model.parameters():
        p.requires_grad_(False)
    model = apply_peft(model, MethodConfig(peft="none"), LoraConfig())
    assert len(trainable_parameters(model)) == len(list(model.parameters()))


def test_sequence_classification_head_is_trained_not_adapted():
    model, _ = tiny("sequence_classification", num_labels=3)
    model = apply_peft(model, LORA, LoraConfig(r=4), task="sequence_classification")
    assert not any("score" in name for name in lora_layers(model))
    names = [n for n, _ in trainable_parameters(model)]
    assert any("score" in n and "modules_to_save" in n for n in names)
    assert all("lora_" in n or "score" in n for n in names)


def test_head_only_trains_the_score_and_a_step_moves_nothing_else():
    model, tok = tiny("sequence_classification", num_labels=3)
    model = apply_peft(model, MethodConfig(peft="head"), LoraConfig(), task="sequence_classification")
    assert [n for n, _ in trainable_parameters(model)] == ["score.weight"]
    body = {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith("score.")}
    score = model.score.weight.detach().clone()
    opt = torch.optim.SGD([p for _, p in trainable_parameters(model)], lr=0.5)
    ids = tok(["some text", "other words"], return_tensors="pt", padding=True)
    model(**ids, labels=torch.tensor([0, 2])).loss.backward()
    opt.step()
    assert not torch.equal(model.score.weight, score)
    assert all(torch.equal(p, body[n]) for n, p in model.named_parameters() if n in body)
    assert all(p.grad is None for n, p in model.named_parameters() if n in body)


def test_head_only_on_an_encoder_trains_its_pooler_and_classifier():
    model, _ = load_model(ModelConfig(name="minilm-l6"), task="sequence_classification", num_labels=2)
    assert sorted(head_parameter_names(model)) == [
        "bert.pooler.dense.bias", "bert.pooler.dense.weight", "classifier.bias", "classifier.weight"]
    model = apply_peft(model, MethodConfig(peft="head"), LoraConfig(), task="sequence_classification")
    assert describe_model(model)["trainable_parameters"] == 384 * 384 + 384 + 2 * 384 + 2


def test_head_only_is_refused_for_a_language_model():
    model, _ = tiny()
    with pytest.raises(ModelError, match="method.peft head trains a classification or reward head"):
        apply_peft(model, MethodConfig(peft="head"), LoraConfig())
