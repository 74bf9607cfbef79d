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
without compilation. `fit` compiles for the training
steps only: the model it returns runs eagerly.
"""

from __future__ import annotations

from collections import Counter

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

    A model without such blocks is compiled whole (in place, dynamic shapes).
    """
    blocks = repeated_blocks(model) or [model]
    for block in blocks:
        block.compile(dynamic=True)
    return blocks


def uncompile(modules: list[nn.Module]) -> None:
    """Run these modules eagerly again (after training: generation would compile its own graphs)."""
    for module in modules:
        module._compiled_call_impl = None  # what Module.compile set; None is nn.Module's default
