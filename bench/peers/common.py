"""What every system of the comparison shares: the run spec, the data subset, token counting and timing.

    spec = Spec(source=folder, train_file=..., eval_file=..., steps=8, batch_size=16, out_dir=...)
    spec.save(path); spec = Spec.load(path)
    counter = CountingCollator(collator)         # wraps a Trainer's collator: counts tokens per micro-batch
    clock = StepClock(); clock.tick()            # at every optimizer-step end
    stats = throughput(clock.times, counts, spec.grad_accum)

Throughput is measured the same way for every system: the wall time between consecutive ends of
optimizer steps (so whatever a framework does between steps counts), over the steps after the first
(warm-up). Tokens are real tokens (padding excluded); supervised tokens are positions whose next
token carries loss, counted from what actually reached the model.
"""

from __future__ import annotations

import json
import math
import resource
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
GSM8K = ROOT.parent / "shared" / "data" / "gsm8k"
# lmtune's defaults and variants, as RunConfig sections laid over the shared recipe: its lowest-memory
# training settings, and (opt-in, to measure the lever) frozen weights kept in fp32 where the default
# (training.frozen_dtype auto) stores them in bf16 under bf16 mixed precision.
_LOWMEM = {"gradient_checkpointing": True, "release_freed_memory": True}
_FP32_FROZEN = {"frozen_dtype": "float32"}
# The GPU levers one at a time (opt-in; bench/gpu_check.sh runs them): lmtune's defaults with one lever
# off (Liger's kernels, varlen attention for packed rows) or on (micro-batches of 4,096 tokens instead of
# batch_size chats, so steps hold other examples; compiled decoder layers).
LMTUNE_VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "lmtune": {},
    "lmtune-lowmem": {"training": _LOWMEM},
    "lmtune-fp32-frozen": {"training": _FP32_FROZEN},
    "lmtune-lowmem-fp32-frozen": {"training": {**_LOWMEM, **_FP32_FROZEN}},
    "lmtune-no-kernels": {"training": {"kernels": "none"}},
    "lmtune-mask-attention": {"training": {"packed_attention": "mask"}},
    "lmtune-token-budget": {"training": {"max_tokens_per_batch": 4096}},
    "lmtune-compile": {"training": {"compile": True}},
}
LMTUNE_SYSTEMS = tuple(LMTUNE_VARIANTS)
TRL_SYSTEMS = ("trl-default", "trl-best", "trl-liger")
SYSTEMS = ("hf-trainer", *TRL_SYSTEMS, *LMTUNE_SYSTEMS)
DEFAULT_SYSTEMS = ("hf-trainer", "trl-default", "trl-best", "lmtune", "lmtune-lowmem")
IGNORE = -100

# Random-weight Llama shapes for the GPU variant (vocab from the SmolLM2 tokenizer, 49,152).
MODEL_SHAPES: dict[str, dict[str, Any]] = {
    "tiny": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": True},
    "llama-0.5b": {"model_type": "llama", "hidden_size": 1536, "intermediate_size": 4096, "num_hidden_layers": 16,
                   "num_attention_heads": 12, "num_key_value_heads": 4, "tie_word_embeddings": True,
                   "max_position_embeddings": 4096, "rope_theta": 500000.0},
    "llama-1b": {"model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
                 "num_attention_heads": 32, "num_key_value_heads": 8, "tie_word_embeddings": True,
                 "max_position_embeddings": 4096, "rope_theta": 500000.0},
}


@dataclass
class Spec:
    """One training run of one system: identical for all systems except `out_dir`."""

    source: str
    """HF folder every system loads the base model from."""
    train_file: str
    eval_file: str
    steps: int
    batch_size: int
    out_dir: str = ""
    grad_accum: int = 1
    learning_rate: float = 2e-4
    warmup_ratio: float = 0.05
    scheduler: str = "cosine"
    max_length: int = 512
    device: str = "cpu"
    threads: int | None = None
    seed: int = 0
    lora: dict[str, Any] = field(default_factory=lambda: {"r": 16, "alpha": 32, "dropout": 0.05,
                                                          "target_modules": "all-linear"})

    def save(self, path: Path) -> None:
        """Write the spec as JSON."""
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> "Spec":
        """Read a spec written by save()."""
        return cls(**json.loads(Path(path).read_text()))

    @property
    def warmup_steps(self) -> int:
        """Warmup steps as both lmtune and transformers compute them from the ratio (ceil)."""
        return math.ceil(self.warmup_ratio * self.steps)


def set_threads(spec: Spec) -> None:
    """Use the spec's CPU thread count for PyTorch (and for the BLAS libraries it calls)."""
    import torch

    if spec.threads:
        torch.set_num_threads(spec.threads)


def gsm8k_chats(split: str, start: int, count: int, folder: Path = GSM8K) -> list[list[dict[str, str]]]:
    """`count` GSM8K records from `start` of a split (`folder`/<split>.jsonl), as user-question /
    assistant-answer chats."""
    chats = []
    with open(folder / f"{split}.jsonl", encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i >= start + count:
                break
            if i >= start:
                row = json.loads(line)
                chats.append([{"role": "user", "content": row["question"]},
                              {"role": "assistant", "content": row["answer"]}])
    if len(chats) < count:
        raise ValueError(f"{folder / split}.jsonl has fewer than {start + count} records")
    return chats


def write_chats(chats: list[list[dict[str, str]]], path: Path) -> Path:
    """Write chats as OpenAI-style {"messages": [...]} JSONL (the format every system reads)."""
    path.write_text("".join(json.dumps({"messages": c}) + "\n" for c in chats), encoding="utf-8")
    return path


def read_chats(path: str | Path) -> list[list[dict[str, str]]]:
    """The chats of a file written by write_chats."""
    return [json.loads(line)["messages"] for line in Path(path).read_text(encoding="utf-8").splitlines() if line]


def _ids(encoded: Any) -> list[int]:
    # transformers 5 returns a BatchEncoding from apply_chat_template(tokenize=True), 4.x a list.
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def prompt_completion_ids(tokenizer: Any, chat: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    """(prompt ids up to the assistant header, completion ids) under the tokenizer's chat template."""
    prompt = _ids(tokenizer.apply_chat_template(chat[:-1], add_generation_prompt=True, tokenize=True))
    full = _ids(tokenizer.apply_chat_template(chat, tokenize=True))
    if full[: len(prompt)] != prompt:
        raise ValueError("the chat template renders the prompt differently inside the full conversation")
    return prompt, full[len(prompt):]


def native_bf16(device: str) -> bool:
    """Whether bf16 matrix products run natively: a bf16 GPU, or a CPU with AMX-BF16/AVX512-BF16."""
    import torch

    if device == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def batch_counts(batch: dict[str, Any]) -> tuple[int, int]:
    """(real tokens, supervised tokens) of a collated batch: the model shifts labels by one."""
    ids = batch["input_ids"]
    mask = batch.get("attention_mask")
    tokens = int(mask.sum()) if mask is not None else ids.numel()
    labels = batch.get("labels")
    supervised = int((labels[..., 1:] != IGNORE).sum()) if labels is not None else 0
    return tokens, supervised


class CountingCollator:
    """Wraps a collator and records (tokens, supervised tokens) of every micro-batch, in order."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.counts: list[tuple[int, int]] = []

    def __call__(self, features: list) -> dict:
        batch = self.inner(features)
        self.counts.append(batch_counts(batch))
        return batch


class StepClock:
    """perf_counter() at the end of every optimizer step."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.times: list[float] = []

    def tick(self) -> None:
        self.times.append(time.perf_counter())


def throughput(times: list[float], per_step: list[tuple[int, int]]) -> dict[str, Any]:
    """Tokens/s and supervised tokens/s over steps 2..n (step 1 is warm-up), from step-end times."""
    durations = [b - a for a, b in zip(times, times[1:])]
    counted = per_step[1: len(times)]
    seconds = sum(durations)
    return {
        "step_seconds": durations,
        "step_tokens": [t for t, _ in per_step[: len(times)]],
        "step_supervised_tokens": [s for _, s in per_step[: len(times)]],
        "timed_steps": len(durations),
        "tokens_per_s": sum(t for t, _ in counted) / seconds if seconds else None,
        "supervised_tokens_per_s": sum(s for _, s in counted) / seconds if seconds else None,
        "median_step_s": statistics.median(durations) if durations else None,
    }


def per_step(counts: list[tuple[int, int]], grad_accum: int) -> list[tuple[int, int]]:
    """Sum micro-batch counts into optimizer steps (micro-batches k*ga .. k*ga+ga-1 form step k)."""
    steps = []
    for start in range(0, len(counts) - grad_accum + 1, grad_accum):
        chunk = counts[start: start + grad_accum]
        steps.append((sum(t for t, _ in chunk), sum(s for _, s in chunk)))
    return steps


def peak_memory(device: str) -> dict[str, float]:
    """Peak resident memory of this process (MB), plus the CUDA allocator peak on a GPU."""
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # Linux: KiB
    if device == "cuda":
        import torch

        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def write_result(spec: Spec, record: dict[str, Any]) -> None:
    """Save the worker's record where the driver reads it."""
    Path(spec.out_dir, "result.json").write_text(json.dumps(record, indent=2, default=str))


def lora_settings(spec: Spec) -> dict[str, Any]:
    """The peft LoraConfig keyword arguments every system uses."""
    return {"r": spec.lora["r"], "lora_alpha": spec.lora["alpha"], "lora_dropout": spec.lora["dropout"],
            "target_modules": spec.lora["target_modules"], "bias": "none", "task_type": "CAUSAL_LM"}

