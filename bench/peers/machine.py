"""The machine the comparison ran on: description, measured matmul peaks, and model FLOPs per token.

    describe()                                   # CPU model, cores, RAM, GPU, library versions
    matmul_peak("float32", "cpu", seconds=3)     # GFLOP/s of a large square torch.mm
    nonembedding_parameters(folder)              # N of the 6 * N * tokens formula

Model FLOPs follow the usual convention (Kaplan et al. 2020; PaLM's MFU): one training token costs
6 * N FLOPs (forward 2N, backward 4N), N = the parameters of the transformer blocks and final norm,
i.e. every parameter except the input embedding and the output head. Attention's T^2 term is left
out. With LoRA the weight gradients of the frozen matrices are never computed, so the work actually
needed is nearer 4 * N per token: 6 * N overstates it by half, as MFU figures of LoRA runs usually do.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import time
from pathlib import Path
from typing import Any

FLOPS_FORMULA = ("6 * N * tokens, N = parameters except input embedding and output head "
                 "(transformer blocks + final norm)")
PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "lmtune")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe(device: str) -> dict[str, Any]:
    """CPU model, cores, RAM, ISA flags that matter for bf16, GPU name, and the library versions."""
    import torch

    from bench.peers.common import native_bf16

    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "ram_gib": _ram_gib(),
        "isa": [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags],
        "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
        "native_bf16": native_bf16(device),
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in PACKAGES},
    }


def matmul_peak(dtype: str, device: str, seconds: float = 3.0, size: int | None = None) -> dict[str, Any]:
    """Best GFLOP/s of repeated size x size torch.mm in `dtype` over about `seconds` (after one warm-up)."""
    import torch

    torch_dtype = getattr(torch, dtype)
    from bench.peers.common import native_bf16

    if size is None:  # emulated bf16 runs ~50x slower than fp32 on AVX2: a smaller size keeps the probe short
        size = 8192 if device == "cuda" else (2048 if dtype == "float32" or native_bf16(device) else 1024)
    a = torch.randn(size, size, device=device).to(torch_dtype)
    b = torch.randn(size, size, device=device).to(torch_dtype)

    def once() -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.mm(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    once()
    best, spent, reps = float("inf"), 0.0, 0
    while spent < seconds or reps < 3:
        elapsed = once()
        best, spent, reps = min(best, elapsed), spent + elapsed, reps + 1
    return {"dtype": dtype, "size": size, "repeats": reps, "gflops": 2 * size**3 / best / 1e9}


def nonembedding_parameters(source: str) -> dict[str, int]:
    """Parameter counts of the model in `source` (built on the meta device: no weights are read)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(source)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())  # tied weights are counted once
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    excluded = embed.numel() + (0 if head is embed else head.numel())
    return {"total": total, "nonembedding": total - excluded}
