"""The speed-only layers of a training run, applied around `fit`'s loop and removed when it ends.

    speed = SpeedLayers(raw_model, objective, cfg, accelerator)   # Liger kernels, packed attention, compile
    with speed.micro_batch():                                      # LoRA: adapters take autocast inputs uncast
        loss = objective.loss(model, batch)
    speed.close()                                                  # the model runs eagerly again

None of them changes what is computed beyond rounding; each has its own switch in `training`
(kernels, packed_attention, compile) and its own module: train/kernels.py, train/compile.py and
model/lora_speed.py.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, ExitStack

import torch
from accelerate import Accelerator

from lmtune.config import TrainingConfig
from lmtune.model.lora_speed import input_casts_off, tuner_layers
from lmtune.train.compile import compile_blocks, uncompile
from lmtune.train.kernels import liger_kernels, packed_attention, resolve_packed_attention, use_liger


class SpeedLayers:
    """Liger kernels, varlen attention for packed rows, regional compilation and LoRA's uncast inputs."""

    def __init__(self, raw_model: torch.nn.Module, objective, cfg: TrainingConfig, accelerator: Accelerator):
        device = accelerator.device
        self._stack = ExitStack()
        # Kernels go in before compilation, so the compiled blocks trace Liger's kernels.
        self._stack.enter_context(liger_kernels(raw_model, use_liger(raw_model, cfg.kernels, device)))
        if objective.packs:
            self._stack.enter_context(packed_attention(raw_model, resolve_packed_attention(cfg.packed_attention,
                                                                                           device)))
        # In place: `model` (and any DDP wrapper) runs the compiled blocks.
        self._compiled = compile_blocks(raw_model) if cfg.compile else []
        # Under autocast the adapters need not cast their inputs first (model/lora_speed.py).
        self._lora_layers = tuner_layers(raw_model) if accelerator.mixed_precision != "no" else []

    def micro_batch(self) -> AbstractContextManager:
        """The context of one training forward and backward pass."""
        return input_casts_off(self._lora_layers)

    def close(self) -> None:
        """Take every layer off again: the model returned by `fit` runs eagerly, as loaded."""
        uncompile(self._compiled)
        self._stack.close()
