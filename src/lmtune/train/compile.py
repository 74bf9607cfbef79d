"""Regional torch.compile: each repeated block (decoder layer) compiled in place, dynamic shapes.

    blocks = compile_blocks(model)   # 30 decoder layers for SmolLM2-135M, compiled in place
    ...                              # train
    uncompile(blocks)                # eager again

Compiling the whole model unrolls every layer into one graph and, with packed rows whose length
changes every batch, recompiles for each new shape (docs/performance.md). A transformer's blocks
share one code path, so with dynamic shapes one compiled graph serves every layer and every batch
length: compilation happens in the first step (four graphs for SmolLM2 under LoRA: the first layer's
input needs no gradient, and a micro-batch of one row is specialised). Compiled in place
(`Module.compile`), parameter names do not change, so checkpoints and exports are the same as
without compilation. `fit` compiles for the training steps only: the model it returns runs eagerly.

Gradient checkpointing wraps the compiled block from outside. transformers checkpoints inside a
layer's `forward`, so compiling the layer would trace the checkpoint as a higher-order op, and any
side effect in the layer (transformers 5.25's hub-kernel layers set a context variable) breaks the
graph there: the layer then ran eagerly under checkpointing and, with LoRA dropout, drew its masks
from another generator than the compiled run. Outside, the checkpoint replays the compiled call
with torch's RNG state restored, so the recomputation draws the very masks the forward pass drew.
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from typing import Any, Callable

import torch
from torch import nn


def repeated_blocks(model: nn.Module) -> list[nn.Module]:
    """The modules whose class the model lists in `_no_split_modules` and that occur more than once."""
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or [])
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    counts = Counter(type(m) for m in blocks)
    return [m for m in blocks if counts[type(m)] > 1]


def compile_blocks(model: nn.Module) -> list[nn.Module]:
    """Compile each repeated block in place with dynamic shapes; returns the compiled modules.

    A model without such blocks is compiled whole (in place, dynamic shapes). Blocks that
    transformers checkpoints (`gradient_checkpointing` set) are checkpointed around the compiled call.
    """
    blocks = repeated_blocks(model) or [model]
    for block in blocks:
        if getattr(block, "gradient_checkpointing", False):
            block.gradient_checkpointing = False  # its own checkpoint would sit inside the graph
            block._compiled_call_impl = _checkpointed(block, torch.compile(block._call_impl, dynamic=True))
            block._lmtune_checkpointed = True
        else:
            block.compile(dynamic=True)
    return blocks


def _checkpointed(block: nn.Module, compiled: Callable[..., Any]) -> Callable[..., Any]:
    """`compiled` under the block's own checkpoint function, when transformers would have checkpointed."""

    def call(*args: Any, **kwargs: Any) -> Any:
        if block.training and torch.is_grad_enabled():
            if kwargs.get("use_cache"):
                kwargs["use_cache"] = False  # as transformers does: a recomputed layer cannot fill a cache
            return block._gradient_checkpointing_func(partial(compiled, **kwargs), *args)
        return compiled(*args, **kwargs)

    return call


def uncompile(modules: list[nn.Module]) -> None:
    """Run these modules eagerly again (after training: generation would compile its own graphs)."""
    for module in modules:
        module._compiled_call_impl = None  # what Module.compile set; None is nn.Module's default
        if getattr(module, "_lmtune_checkpointed", False):
            module.gradient_checkpointing = True
            del module._lmtune_checkpointed
