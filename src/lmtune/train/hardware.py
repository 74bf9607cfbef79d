"""Devices, precision and memory: what the hardware supports, decided once per run."""

from __future__ import annotations

import ctypes
import platform
import resource
import warnings
from pathlib import Path

import torch
from accelerate import Accelerator
from peft import PeftModel

from lmtune.config import TrainingConfig
from lmtune.model.load import DTYPES
from lmtune.train.threads import default_threads


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matrix units (AMX-BF16 or AVX512-BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str) -> str:
    """Turn `auto` into bf16 where the hardware computes it natively, else fp32."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    # Without bf16 units, CPU autocast emulates bf16 and runs slower than fp32 (measured: docs/performance.md).
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def store_frozen_weights(model: torch.nn.Module, frozen_dtype: str, mixed_precision: str) -> torch.dtype | None:
    """Cast the frozen floating-point parameters to `frozen_dtype` (auto: bf16 for adapters under bf16).

    auto casts only a peft model's base: its adapters are saved apart from it, whereas a model saved
    whole (a head-only probe) would be saved with its body rounded. Returns the dtype the weights
    were cast to, or None when nothing was cast: full fine-tuning (nothing frozen), a frozen model
    (nothing trains), auto without bf16 or without adapters, or weights already in that dtype.
    """
    if frozen_dtype == "auto":
        target = torch.bfloat16 if mixed_precision == "bf16" and isinstance(model, PeftModel) else None
    else:
        target = DTYPES[frozen_dtype]
    params = list(model.parameters())
    trains = [p.requires_grad for p in params]
    if target is None or not any(trains) or all(trains):
        return None
    cast = [p for p in params if not p.requires_grad and p.is_floating_point() and p.dtype != target]
    for param in cast:
        param.data = param.data.to(target)  # tied weights share the Parameter, so they stay tied
    return target if cast else None


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)
MMAP_THRESHOLD_BYTES = 256 * 1024


def release_freed_memory(threshold_bytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Have glibc map every allocation >= threshold_bytes on its own, so freeing it returns the memory; True if set."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    # A fixed threshold also turns off glibc's dynamic one, which otherwise rises to 32 MiB after the
    # first large free and sends every later activation to the heap, where freed blocks stay resident.
    return bool(ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, threshold_bytes))


def make_accelerator(cfg: TrainingConfig, project_dir: Path | None = None) -> Accelerator:
    """An Accelerator for this run's precision and trackers (DDP comes from `accelerate launch`)."""
    precision = resolve_precision(cfg.precision)
    mixed = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    elif not torch.cuda.is_available():
        threads, note = default_threads()
        if note:
            warnings.warn(note, stacklevel=2)
            torch.set_num_threads(threads)
    if cfg.release_freed_memory and not torch.cuda.is_available() and not release_freed_memory():
        warnings.warn("training.release_freed_memory needs Linux with glibc; the allocator is left as it is")
    return Accelerator(
        # Without cpu=True accelerate ignores a multi-process launch on a machine without GPUs.
        cpu=not torch.cuda.is_available(),
        mixed_precision=mixed,
        log_with=list(cfg.report_to) or None,
        project_dir=str(project_dir) if project_dir else None,
    )


def end_distributed() -> None:
    """Shut down the process group `accelerate launch` started (PyTorch asks for it before exit)."""
    # Left to interpreter exit, gloo's threads can hang a rank whose peers have already exited.
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: GPU allocator peak on CUDA, resident set size on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
