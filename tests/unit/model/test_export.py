"""Saving, reloading and merging: logits survive every round trip and only safetensors are written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel

from lmtune.config import LoraConfig, MethodConfig, ModelConfig
from lmtune.model.adapters import apply_peft
from lmtune.model.export import BASE_FILE, load_trained, merge_and_save, save_model
from lmtune.model.load import ModelError, load_model

LORA = MethodConfig(peft="lora")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
MERGE_TOLERANCE = 1e-5  # fp32; merging reorders a few additions


def tiny_lora(use_dora: bool = False, task: str = "causal_lm", num_labels: int | None = None):
    model, tok = load_model(ModelConfig(name="tiny-llama"), task=task, num_labels=num_labels)
    model = apply_peft(model, LORA, LoraConfig(r=4, dropout=0.0, use_dora=use_dora), task=task)
    # lora_B starts at zero (a no-op adapter); random values make every comparison below able to fail.
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "lora_magnitude" in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    return model.eval(), tok


def logits(model, tok, texts=("hello world", "a second, longer example")) -> torch.Tensor:
    tok.padding_side = "right"
    batch = tok(list(texts), return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


def assert_no_pickles(folder: Path) -> None:
    names = files(folder)
    assert any(n.endswith(".safetensors") for n in names)
    assert not [n for n in names if n.endswith(PICKLE_SUFFIXES)]


@pytest.mark.parametrize("use_dora", [False, True])
def test_merged_equals_unmerged(tmp_path, use_dora):
    model, tok = tiny_lora(use_dora)
    base, _ = load_model(ModelConfig(name="tiny-llama"))
    unmerged = logits(model, tok)
    assert (unmerged - logits(base.eval(), tok)).abs().max() > 1e-2  # the adapter does something
    merged = merge_and_save(model, tok, tmp_path / "merged")
    assert not isinstance(merged, PeftModel)
    torch.testing.assert_close(logits(merged, tok), unmerged, atol=MERGE_TOLERANCE, rtol=0)
    reloaded, tok2 = load_trained(tmp_path / "merged")
    assert not isinstance(reloaded, PeftModel)
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    torch.testing.assert_close(logits(reloaded, tok2), unmerged, atol=MERGE_TOLERANCE, rtol=0)
    assert_no_pickles(tmp_path / "merged")


def test_adapter_round_trip_is_exact(tmp_path):
    model, tok = tiny_lora()
    out = save_model(model, tok, tmp_path / "adapter")
    names = files(out)
    assert "adapter_config.json" in names and "adapter_model.safetensors" in names
    assert "model.safetensors" not in names  # adapter only, not the base
    assert json.loads((out / BASE_FILE).read_text())["model"]["name"] == "tiny-llama"
    assert_no_pickles(out)
    reloaded, tok2 = load_trained(out)
    assert isinstance(reloaded, PeftModel)
    torch.testing.assert_close(logits(reloaded.eval(), tok2), logits(model, tok), atol=0, rtol=0)
    assert tok2.chat_template == tok.chat_template and tok2.eos_token == tok.eos_token


def test_full_round_trip_is_exact(tmp_path):
    model, tok = load_model(ModelConfig(name="tiny-llama"))
    model = apply_peft(model, MethodConfig(peft="none"), LoraConfig())
    with torch.no_grad():
        model.model.norm.weight.mul_(1.5)  # differ from the seed-0 weights so a reload from config would fail
    out = save_model(model, tok, tmp_path / "full")
    assert_no_pickles(out)
    reloaded, tok2 = load_trained(out)
    torch.testing.assert_close(logits(reloaded.eval(), tok2), logits(model.eval(), tok), atol=0, rtol=0)


def test_classifier_adapter_round_trip(tmp_path):
    model, tok = tiny_lora(task="sequence_classification", num_labels=3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "modules_to_save" in name:
                p.add_(0.5)  # a trained head must come back from the adapter folder
    out = save_model(model, tok, tmp_path / "cls")
    reloaded, tok2 = load_trained(out)
    torch.testing.assert_close(logits(reloaded.eval(), tok2), logits(model, tok), atol=0, rtol=0)


def test_overwrite_is_atomic_and_leaves_no_temp_folders(tmp_path):
    model, tok = tiny_lora()
    save_model(model, tok, tmp_path / "out")
    (tmp_path / "out" / "stale.txt").write_text("from the first save")
    save_model(model, tok, tmp_path / "out")
    assert not (tmp_path / "out" / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_adapter_without_base_needs_base_cfg(tmp_path):
    model, tok = tiny_lora()
    out = save_model(model, tok, tmp_path / "a")
    (out / BASE_FILE).unlink()
    with pytest.raises(ModelError, match="base_cfg"):
        load_trained(out)
    reloaded, _ = load_trained(out, base_cfg=ModelConfig(name="tiny-llama"))
    torch.testing.assert_close(logits(reloaded.eval(), tok), logits(model, tok), atol=0, rtol=0)


def test_not_a_model_folder(tmp_path):
    with pytest.raises(ModelError, match="neither a saved model"):
        load_trained(tmp_path)
    with pytest.raises(ModelError, match="needs a peft"):
        merge_and_save(load_model(ModelConfig(name="tiny-llama"))[0], None, tmp_path / "m")
