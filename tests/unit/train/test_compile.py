"""Regional torch.compile (`training.compile`): the same training, block by block, in place."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from lmtune.config import LoraConfig, MethodConfig
from lmtune.model.adapters import apply_peft
from lmtune.train.compile import compile_blocks, repeated_blocks, uncompile
from lmtune.train.loop import fit
from lmtune.train.sft import SftObjective

PAD = 0
pytestmark = pytest.mark.slow  # each test compiles a tiny model's layer (~10-30 s on 2 cores)


def test_repeated_blocks_are_the_decoder_layers(make_model):
    model = make_model()
    blocks = repeated_blocks(model)
    assert blocks == list(model.model.layers)
    assert compile_blocks(model) == blocks
    assert all(block._compiled_call_impl is not None for block in blocks)
    uncompile(blocks)
    assert all(block._compiled_call_impl is None for block in blocks)
    # In place: parameter names (checkpoints, exports) are unchanged.
    assert sorted(n for n, _ in model.named_parameters()) == sorted(n for n, _ in make_model().named_parameters())


def test_compiled_full_fine_tuning_matches_eager(encoded, make_model, tmp_path, training_cfg):
    cfg = dict(batch_size=4, max_steps=3)  # packed rows of a new length in every step
    eager = fit(make_model(), encoded, [], SftObjective(True, PAD), training_cfg(**cfg), tmp_path / "a")
    model = make_model()
    compiled = fit(model, encoded, [], SftObjective(True, PAD), training_cfg(compile=True, **cfg), tmp_path / "b")
    assert all(layer._compiled_call_impl is None for layer in model.model.layers)  # eager after training
    assert compiled.train_losses == pytest.approx(eager.train_losses, rel=1e-4)
    assert compiled.train_losses[-1] < compiled.train_losses[0]


def test_compiled_lora_dropout_masks_are_recomputed_under_checkpointing(encoded, make_model, tmp_path,
                                                                        training_cfg):
    """Inside the compiled graph dropout masks come from torch's generator; checkpointing must
    recompute the very masks the forward pass drew, so both runs take the same steps.

    A graph break under checkpointing would run the layer eagerly with the other mask source (the
    failure seen with transformers 5.25), so the compiled layers must run without one."""
    lora = LoraConfig(r=4, alpha=8, dropout=0.2)
    losses = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = apply_peft(make_model(), MethodConfig(), lora)
        cfg = training_cfg(batch_size=4, max_steps=3, compile=True, gradient_checkpointing=checkpointing)
        counters.clear()
        losses.append(fit(model, encoded, [], SftObjective(True, PAD), cfg, tmp_path / str(checkpointing)).train_losses)
        assert not counters["graph_break"], dict(counters["graph_break"])
        layers = model.base_model.model.model.layers
        assert all(layer.gradient_checkpointing == checkpointing for layer in layers)  # restored after fit
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)
    assert losses[0][-1] < losses[0][0]
