"""Regional torch.compile: each repeated block (decoder layer) compiled in place, dynamic shapes.

    compiled = compile_blocks(model)   # -> 30 for SmolLM2-135M; the model is changed in place

Compiling the whole model unrolls every layer into one graph and, with packed rows whose length
changes every batch, recompiles for each new shape (docs/performance.md). A transformer's blocks
share one code path, so with dynamic shapes one compiled graph serves every layer and every batch
length: compilation happens once in the first step (plus once more for the first layer, whose input
needs no gradient under LoRA). Compiled in place (`Module.compile`), parameter names do not change,
so checkpoints and exports are the same as without compilation.
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


def compile_blocks(model: nn.Module) -> int:
    """Compile each repeated block in place with dynamic shapes; returns how many were compiled.

    A model without such blocks is compiled whole (in place, dynamic shapes) and 1 is returned.
    """
    blocks = repeated_blocks(model)
    for block in blocks or [model]:
        block.compile(dynamic=True)
    return len(blocks) or 1
