"""GPU speed levers on the CPU: kernel and attention selection, FlexAttention on packed rows, Liger's patching."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from lmtune.config import RunConfig, TrainingConfig
from lmtune.config_file import ConfigError
from lmtune.data.collate import pack_collate
from lmtune.train import kernels
from lmtune.train.kernels import (liger_kernels, packed_attention, resolve_kernels, resolve_packed_attention,
                                  use_liger)
from lmtune.train.methods import build_objective, method_of
from lmtune.train.sft import causal_lm_loss, SftObjective

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
PAD = 0


def test_config_takes_the_three_kernel_settings_and_nothing_else():
    assert TrainingConfig().kernels == "auto"
    assert TrainingConfig(kernels="liger").kernels == "liger"
    with pytest.raises(ValidationError, match="kernels"):
        TrainingConfig(kernels="triton")
    with pytest.raises(ValidationError, match="packed_attention"):
        TrainingConfig(packed_attention="varlen")


def test_auto_keeps_the_plain_path_on_the_cpu():
    assert resolve_kernels("auto", CPU) == "none"
    assert resolve_kernels("none", CUDA) == "none"
    assert resolve_packed_attention("auto", CPU) == "mask"
    assert resolve_packed_attention("flex", CUDA) == "flex"


def test_auto_picks_liger_and_varlen_attention_on_cuda_when_installed(monkeypatch):
    found = {"liger_kernel": True, "flash_attn": False}
    monkeypatch.setattr(kernels, "installed", lambda package: found[package])
    assert resolve_kernels("auto", CUDA) == "liger"
    assert resolve_packed_attention("auto", CUDA) == "flex"
    found.update(liger_kernel=False, flash_attn=True)
    assert resolve_kernels("auto", CUDA) == "none"
    assert resolve_packed_attention("auto", CUDA) == "flash"


def test_liger_without_cuda_or_without_the_package_is_a_clear_error(monkeypatch):
    with pytest.raises(ValueError, match="training.kernels: liger needs a CUDA GPU"):
        resolve_kernels("liger", CPU)
    monkeypatch.setattr(kernels, "installed", lambda package: False)
    with pytest.raises(ValueError, match=r"liger-kernel package: pip install 'lmtune\[gpu\]'"):
        resolve_kernels("liger", CUDA)
    with pytest.raises(ValueError, match="training.packed_attention: flash needs the flash-attn package"):
        resolve_packed_attention("flash", CUDA)
    with pytest.raises(ValueError, match="flex trains on CUDA only"):
        resolve_packed_attention("flex", CPU)


def test_an_sft_run_asking_for_liger_on_the_cpu_fails_before_training(tokenizer):
    cfg = RunConfig.model_validate({"training": {"kernels": "liger"}})
    with pytest.raises(ValueError, match="training.kernels: liger needs a CUDA GPU"):
        build_objective(cfg, tokenizer)


def test_a_token_budget_does_not_apply_to_grpo():
    cfg = RunConfig.model_validate({"method": {"task": "grpo"}, "training": {"max_tokens_per_batch": 512}})
    with pytest.raises(ConfigError, match="max_tokens_per_batch does not apply to method.task grpo"):
        method_of(cfg)


@pytest.mark.slow  # about a minute: transformers compiles FlexAttention, on two CPU cores
@torch.no_grad()
def test_flex_attention_on_packed_rows_equals_each_example_alone(encoded, make_model):
    """FlexAttention's document mask keeps packed examples apart: the packed row's logits are each example's.

    Forward only: PyTorch's FlexAttention has no backward pass on the CPU (on CUDA it has)."""
    model = make_model().eval()
    items = encoded[:5]

    def logits(batch):
        return model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits

    alone = torch.cat([logits(pack_collate([e]))[0] for e in items])
    alone_loss = sum(causal_lm_loss(model, pack_collate([e]))[0] for e in items)
    with packed_attention(model, "flex") as used:
        assert used == "flex_attention"
        assert model.config._attn_implementation == "flex_attention"
        row = pack_collate(items)
        packed = logits(row)[0]
        packed_loss = causal_lm_loss(model, row)[0]
    assert model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=0)
    n_tokens = row["n_tokens"]
    assert packed_loss.item() / n_tokens == pytest.approx(alone_loss.item() / n_tokens, abs=1e-5)


def test_mask_and_a_model_not_on_sdpa_are_left_alone(make_model):
    model = make_model()
    with packed_attention(model, "mask") as used:
        assert used is None and model.config._attn_implementation == "sdpa"
    model.set_attn_implementation("eager")
    with packed_attention(model, "flex") as used:
        assert used is None and model.config._attn_implementation == "eager"


def test_sft_objective_marks_packed_batches_only():
    assert SftObjective(True, PAD).packs and not SftObjective(False, PAD).packs


def test_liger_is_not_used_on_the_cpu_even_when_installed(make_model):
    assert not use_liger(make_model(), "auto", CPU)
    assert not use_liger(make_model(), "none", CUDA)


def test_liger_patches_rmsnorm_rope_and_swiglu_and_restores_them(make_model):
    """The patching itself runs without CUDA; Liger's Triton kernels would only run on a GPU."""
    pytest.importorskip("liger_kernel.transformers")
    from liger_kernel.transformers.rms_norm import LigerRMSNorm
    from liger_kernel.transformers.rope import liger_rotary_pos_emb
    from liger_kernel.transformers.swiglu import LigerSwiGLUMLP
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer

    modeling = importlib.import_module("transformers.models.llama.modeling_llama")
    rope, norm_class = modeling.apply_rotary_pos_emb, modeling.LlamaRMSNorm
    model = get_peft_model(make_model(), LoraConfig(r=4, target_modules="all-linear"))
    layers = model.get_base_model().model.layers
    with liger_kernels(model) as patched:
        # 2 layers x (input and post-attention norms, MLP) + the final norm
        assert len(patched) == 7
        assert layers[0].mlp.forward.__func__ is LigerSwiGLUMLP.forward
        assert layers[0].input_layernorm.forward.__func__ is LigerRMSNorm.forward
        assert modeling.apply_rotary_pos_emb is liger_rotary_pos_emb
        # LoRA stays on the MLP's projections: Liger's SwiGLU calls them as modules.
        assert isinstance(layers[0].mlp.gate_proj, LoraLayer)
    assert modeling.apply_rotary_pos_emb is rope and modeling.LlamaRMSNorm is norm_class
    assert "forward" not in vars(layers[0].mlp) and "forward" not in vars(layers[0].input_layernorm)
    assert not hasattr(layers[0].input_layernorm, "casting_mode")


def test_liger_refuses_an_architecture_it_has_no_kernels_for():
    pytest.importorskip("liger_kernel.transformers")
    from transformers import BertConfig, BertModel

    bert = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64))
    assert not use_liger(bert, "auto", CPU)
    with pytest.raises(ValueError, match="liger has no kernels for model_type 'bert'"):
        with liger_kernels(bert):
            pass


@pytest.mark.slow  # about half a minute: Triton's interpreter runs the kernels in Python
def test_liger_rope_and_fused_cross_entropy_match_the_plain_path_in_tritons_interpreter():
    """Liger's kernels computed on the CPU (TRITON_INTERPRET=1, set before Triton is imported, hence a process)."""
    pytest.importorskip("liger_kernel.transformers")
    script = Path(__file__).with_name("liger_interpreted.py")
    out = subprocess.run([sys.executable, str(script)], env={**os.environ, "TRITON_INTERPRET": "1"},
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    plain, fused = found["head_loss"]
    assert fused == pytest.approx(plain, rel=1e-6)
    assert found["head_correct"][0] == found["head_correct"][1] >= 20  # half the targets are argmax hits
    assert found["loss"][1] == pytest.approx(found["loss"][0], abs=1e-5)
    assert found["correct"][1] == found["correct"][0]
    assert found["n_grads"] == 28  # LoRA A and B on 7 linear layers x 2 decoder layers
    assert found["max_grad_diff"] <= 1e-5 * max(1.0, found["max_grad"])
