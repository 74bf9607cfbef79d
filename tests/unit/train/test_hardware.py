"""CPU memory release: glibc keeps freed activations resident unless lmtune fixes its mapping threshold."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from lmtune.config import TrainingConfig
from lmtune.train import hardware

# Frees an 8 MB tensor that has a live 1 MB tensor above it, after an earlier 8 MB free has raised glibc's
# dynamic mapping threshold (as the first layers of a training step do); prints how much RSS dropped.
PROBE = """
import sys, torch
from pathlib import Path
from lmtune.train.hardware import release_freed_memory
rss = lambda: int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20
if sys.argv[1] == "on":
    assert release_freed_memory()
warm = torch.ones(2 * 2**20); del warm
a = torch.ones(2 * 2**20); b = torch.ones(2**18)
before = rss(); del a
print(before - rss())
"""


def rss_drop_mb(setting: str) -> float:
    out = subprocess.run([sys.executable, "-c", PROBE, setting], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")
def test_freed_tensor_memory_returns_to_the_system_only_with_the_setting():
    assert rss_drop_mb("off") < 1.0  # glibc's default: the freed 8 MB stay in the heap
    assert rss_drop_mb("on") >= 7.5


def test_the_accelerator_applies_the_setting_only_when_configured(monkeypatch):
    calls = []
    monkeypatch.setattr(hardware, "release_freed_memory", lambda: calls.append(1) or True)
    hardware.make_accelerator(TrainingConfig())
    assert calls == []  # off by default: it costs speed
    hardware.make_accelerator(TrainingConfig(release_freed_memory=True))
    assert calls == [1]


def lora_and_full_models():
    """tiny-llama with LoRA adapters (base frozen) and with every weight trainable."""
    from lmtune.config import LoraConfig, MethodConfig, ModelConfig
    from lmtune.model.adapters import apply_peft
    from lmtune.model.load import load_model

    lora = apply_peft(load_model(ModelConfig(name="tiny-llama"))[0], MethodConfig(peft="lora"), LoraConfig(r=4))
    full = apply_peft(load_model(ModelConfig(name="tiny-llama"))[0], MethodConfig(peft="none"), LoraConfig())
    return lora, full


def dtypes(model, trainable: bool) -> set:
    return {p.dtype for p in model.parameters() if p.requires_grad == trainable}


def test_frozen_weights_go_to_bf16_under_bf16_mixed_precision_and_trained_ones_stay_fp32():
    import torch

    lora, full = lora_and_full_models()
    embed = lora.get_input_embeddings().weight
    assert hardware.store_frozen_weights(lora, "auto", "bf16") is torch.bfloat16
    assert dtypes(lora, trainable=False) == {torch.bfloat16} and dtypes(lora, trainable=True) == {torch.float32}
    assert lora.get_input_embeddings().weight is embed  # the same Parameter: tied weights stay tied
    assert hardware.store_frozen_weights(full, "auto", "bf16") is None  # nothing frozen
    assert dtypes(full, trainable=True) == {torch.float32}


def test_frozen_weights_stay_as_loaded_without_bf16_or_when_asked():
    import torch

    lora, _ = lora_and_full_models()
    assert hardware.store_frozen_weights(lora, "auto", "no") is None
    assert hardware.store_frozen_weights(lora, "auto", "fp16") is None  # fp16 only on request
    assert hardware.store_frozen_weights(lora, "float32", "bf16") is None  # already fp32: nothing to cast
    assert dtypes(lora, trainable=False) == {torch.float32}
    assert hardware.store_frozen_weights(lora, "float16", "no") is torch.float16
    assert dtypes(lora, trainable=False) == {torch.float16}


def test_auto_leaves_a_head_only_probe_as_loaded():
    import torch

    from lmtune.config import LoraConfig, MethodConfig, ModelConfig
    from lmtune.model.adapters import apply_peft
    from lmtune.model.load import load_model

    model, _ = load_model(ModelConfig(name="tiny-llama"), task="sequence_classification", num_labels=3)
    probe = apply_peft(model, MethodConfig(task="classification", peft="head"), LoraConfig(),
                       task="sequence_classification")
    assert hardware.store_frozen_weights(probe, "auto", "bf16") is None  # saved whole: the body must not round
    assert dtypes(probe, trainable=False) == {torch.float32}
