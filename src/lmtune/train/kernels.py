"""GPU speed levers of the training loop: Liger's fused kernels and variable-length attention for packed rows.

    liger = use_liger(model, cfg.kernels, device)                       # training.kernels resolved
    attention = resolve_packed_attention(cfg.packed_attention, device)  # "flash" | "flex" | "mask"
    with liger_kernels(model, liger), packed_attention(model, attention):
        ...                                                         # train

Liger (the `liger-kernel` package, `lmtune[gpu]`) replaces RMSNorm, the rotary embedding and the
SwiGLU MLP with Triton kernels through its own per-architecture patch functions, which change the
model's modules in place and the model class's module globals; both are put back when the block
ends, so nothing outlives training. Its fused linear cross-entropy is called by the SFT loss itself
(objectives.py) on the hidden states of the supervised positions only, where lmtune's chunked loss
runs on the CPU. Triton compiles for GPUs only, so these kernels run on CUDA alone.

Packed rows restart their position ids at every example; transformers turns that into per-example
attention: a dense block-diagonal mask for `sdpa`/`eager`, a document mask for FlexAttention (its
block-sparse kernel skips the blocks across examples), cumulative lengths for flash-attn's varlen
kernel. The latter two cost each example's share of T² instead of the whole row's.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
from typing import Iterator

import torch
from torch import nn

from lmtune.train.chunked_loss import linear_cross_entropy

LIGER_PATCHES = {"rope": True, "rms_norm": True, "swiglu": True, "cross_entropy": False,
                 "fused_linear_cross_entropy": False}
"""Liger's apply function arguments: lmtune calls the fused linear cross-entropy itself (supervised
positions only), so Liger's own model forward, which would take it over every position, stays off."""
ATTENTION_IMPLEMENTATIONS = {"flash": "flash_attention_2", "flex": "flex_attention"}


def installed(package: str) -> bool:
    """Whether `package` can be imported (found on the path; not imported here)."""
    return importlib.util.find_spec(package) is not None


def resolve_kernels(setting: str, device: torch.device) -> str:
    """`training.kernels` for this device: auto = liger on CUDA with liger-kernel installed, else none."""
    cuda = device.type == "cuda"
    if setting == "auto":
        return "liger" if cuda and installed("liger_kernel") else "none"
    if setting == "liger":
        if not cuda:
            raise ValueError(f"training.kernels: liger needs a CUDA GPU (Triton kernels); this run is on "
                             f"{device.type}. Use auto or none.")
        if not installed("liger_kernel"):
            raise ValueError("training.kernels: liger needs the liger-kernel package: pip install 'lmtune[gpu]'")
    return setting


def use_liger(model: nn.Module, setting: str, device: torch.device) -> bool:
    """Whether this run patches the model with Liger: resolved `training.kernels`, and for auto only
    an architecture Liger supports (an explicit liger on another one fails in liger_kernels)."""
    if resolve_kernels(setting, device) != "liger":
        return False
    return setting == "liger" or liger_supports(model)


def resolve_packed_attention(setting: str, device: torch.device) -> str:
    """`training.packed_attention` for this device: auto = flash, else flex on CUDA; mask on CPU."""
    if setting == "auto":
        if device.type != "cuda":
            return "mask"
        return "flash" if installed("flash_attn") else "flex"
    if setting == "flash" and not installed("flash_attn"):
        raise ValueError("training.packed_attention: flash needs the flash-attn package (CUDA)")
    if setting == "flex" and device.type != "cuda":
        raise ValueError(f"training.packed_attention: flex trains on CUDA only (PyTorch's FlexAttention has "
                         f"no backward pass on {device.type}); use auto or mask")
    return setting


def base_model(model: nn.Module) -> nn.Module:
    """The transformers model under DDP and peft wrappers."""
    inner = getattr(model, "module", model)
    return inner.get_base_model() if hasattr(inner, "get_base_model") else inner


def liger_supports(model: nn.Module) -> bool:
    """Whether Liger has a patch function for this model's architecture (model_type)."""
    from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN

    return getattr(base_model(model).config, "model_type", None) in MODEL_TYPE_TO_APPLY_LIGER_FN


@contextlib.contextmanager
def liger_kernels(model: nn.Module, enabled: bool = True,
                  patches: dict[str, bool] = LIGER_PATCHES) -> Iterator[list[nn.Module]]:
    """Within the block the model runs Liger's RMSNorm, RoPE and SwiGLU (`patches`); yields the patched modules.

    Raises ValueError for an architecture Liger has no patch for. Afterwards the modules and the
    modeling module's globals (Liger also swaps the classes and `apply_rotary_pos_emb` there, which
    would reach every model built later) are as before.
    """
    if not enabled:
        yield []
        return
    from liger_kernel.transformers.monkey_patch import _apply_liger_kernel_to_instance

    base = base_model(model)
    if not liger_supports(base):
        raise ValueError(f"training.kernels: liger has no kernels for model_type "
                         f"{getattr(base.config, 'model_type', None)!r}; use auto or none")
    modeling = importlib.import_module(type(base).__module__)
    saved_globals = dict(vars(modeling))
    before = {module: set(vars(module)) for module in base.modules()}
    _apply_liger_kernel_to_instance(base, **patches)
    added = {module: set(vars(module)) - names for module, names in before.items()}
    patched = [module for module, names in added.items() if "forward" in names]
    try:
        yield patched
    finally:
        for module, names in added.items():
            for name in names:
                delattr(module, name)
        for name in set(vars(modeling)) - set(saved_globals):
            delattr(modeling, name)
        for name, value in saved_globals.items():
            if vars(modeling).get(name) is not value:
                setattr(modeling, name, value)


def liger_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                               targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed cross-entropy, count of argmax hits) of `hidden @ weight.T + bias` through Liger's fused
    kernel, in the matmul dtype autocast would use (same contract as chunked_loss.linear_cross_entropy)."""
    if not targets.numel():  # a micro-batch without supervised positions: nothing for the kernel's grid
        return linear_cross_entropy(hidden, weight, bias, targets)
    from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

    device_type = hidden.device.type
    dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else weight.dtype
    with torch.autocast(device_type, enabled=False):
        out = liger_fused_linear_cross_entropy(
            hidden.to(dtype), weight.to(dtype), targets, bias.to(dtype) if bias is not None else None,
            reduction="sum", return_token_accuracy=True)
    # Liger reports accuracy as a mean over the targets; every target here is supervised.
    correct = (out.token_accuracy.detach() * targets.numel()).round().long()
    return out.loss, correct


@contextlib.contextmanager
def packed_attention(model: nn.Module, choice: str) -> Iterator[str | None]:
    """Within the block the model attends with `choice`'s implementation (flash, flex), then as before.

    `mask` leaves the model alone, as does a model not loaded with sdpa (the user chose its kernel).
    Yields the implementation switched to, or None.
    """
    base = base_model(model)
    current = getattr(base.config, "_attn_implementation", None)
    target = ATTENTION_IMPLEMENTATIONS.get(choice)
    if target is None or current != "sdpa":
        yield None
        return
    base.set_attn_implementation(target)
    try:
        yield target
    finally:
        base.set_attn_implementation(current)
