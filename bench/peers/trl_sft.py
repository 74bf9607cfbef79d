"""Systems 2 to 4: TRL `SFTTrainer` with its defaults, with the best settings for the hardware, and with
those plus Liger's kernels.

    python -m bench.peers.worker train trl-default SPEC.json     # normally started by the driver
    python -m bench.peers.worker train trl-best SPEC.json
    python -m bench.peers.worker train trl-liger SPEC.json       # CUDA with liger-kernel only

Both get the model as a path (TRL loads it and applies the peft LoraConfig itself) and a
conversational prompt-completion dataset, for which TRL's default `completion_only_loss=None` puts
the loss on the completion only: the same answers-only loss as the other systems. (Plain `messages`
would need `assistant_only_loss=True`, which needs `{% generation %}` markers SmolLM2's template
lacks.)

trl-default: SFTConfig defaults. TRL defaults to bf16=True and gradient_checkpointing=True; on a
CPU, TrainingArguments then refuses to start unless `use_cpu=True` ("You need to assign use_cpu if
you want to train the model on CPU"), so that is set, as its error message tells users to.
trl-best: see best_settings(): bf16 only where it is native, no gradient checkpointing (memory is
not the constraint here), and the cheapest batch layout the hardware allows.
trl-liger: trl-best plus `use_liger_kernel=True`, TRL's own GPU speed switch (Liger's RMSNorm, RoPE,
SwiGLU and fused linear cross-entropy); with flash-attn installed trl-best already trains padding-free.
"""

from __future__ import annotations

import importlib.util
import time
from typing import Any

from bench.peers.common import CountingCollator, Spec, StepClock, lora_settings, native_bf16, read_chats
from bench.peers.hf_trainer import finish, shared_arguments, trainer_callback


def best_settings(spec: Spec, liger: bool = False) -> tuple[dict[str, Any], dict[str, str]]:
    """SFTConfig overrides for the fastest faithful TRL run on this device (with Liger's kernels when
    `liger`), and why each was chosen."""
    bf16 = native_bf16(spec.device)
    settings: dict[str, Any] = {"bf16": bf16, "gradient_checkpointing": False}
    why = {
        "bf16": "native bf16 matrix units" if bf16 else
                "no native bf16 (CPU without AMX-BF16/AVX512-BF16): autocast would emulate bf16, ~14x slower",
        "gradient_checkpointing": "off: it recomputes the forward pass in the backward pass (TRL's docs: ~20 % "
                                  "slower), and memory is not the constraint at this model size",
        "use_liger_kernel": "off: measured separately as trl-liger",
    }
    if liger:
        if spec.device != "cuda" or importlib.util.find_spec("liger_kernel") is None:
            raise RuntimeError("trl-liger needs a CUDA GPU and the liger-kernel package (Triton kernels)")
        settings["use_liger_kernel"] = True
        why["use_liger_kernel"] = "on: Liger's RMSNorm, RoPE, SwiGLU and fused linear cross-entropy (TRL's GPU switch)"
    model_kwargs: dict[str, Any] = {}
    if bf16:
        # The checkpoint is fp32; stored in bf16 the frozen weights are not cast again in every forward.
        model_kwargs["dtype"] = "bfloat16"
        why["dtype"] = ("frozen weights loaded in bf16 (model_init_kwargs; since 2026-11-26): no per-forward "
                        "fp32 -> bf16 casts, half the weight memory; the LoRA weights stay fp32 (peft)")
    if spec.device == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        # Flattened batches without padding need a varlen kernel; TRL then ignores max_length, so all
        # examples must fit (the driver checks that none exceeds spec.max_length).
        model_kwargs["attn_implementation"] = "flash_attention_2"
        settings.update(padding_free=True, max_length=None)
        why["layout"] = "padding_free with flash_attention_2 (varlen kernel): no padding, same examples per batch"
    else:
        settings["train_sampling_strategy"] = "group_by_length"
        why["layout"] = ("padded batches grouped by length: padding_free flattens the micro-batch into one row whose "
                         "block-diagonal attention is computed densely without a varlen kernel (O(T^2) in the "
                         "whole batch's length), and packing changes how many examples a batch holds")
    if model_kwargs:
        settings["model_init_kwargs"] = model_kwargs
    return settings, why


def run(spec: Spec, system: str) -> dict[str, Any]:
    """Train with TRL's SFTTrainer as `system` (trl-default, trl-best, trl-liger) and return the run's record."""
    started = time.perf_counter()
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    best = system != "trl-default"
    overrides, why = best_settings(spec, liger=system == "trl-liger") if best else ({}, {})
    if not best:
        why = {"use_cpu": "required by TrainingArguments for TRL's default bf16=True on a machine without a GPU"}
    config = SFTConfig(**shared_arguments(spec), max_length=spec.max_length, **overrides)
    rows = [{"prompt": c[:-1], "completion": c[-1:]} for c in read_chats(spec.train_file)]
    clock, losses = StepClock(), []
    trainer = SFTTrainer(model=spec.source, args=config, train_dataset=Dataset.from_list(rows),
                         peft_config=LoraConfig(**lora_settings(spec)), callbacks=[trainer_callback(clock, losses)])
    counter = trainer.data_collator = CountingCollator(trainer.data_collator)  # counts only; same batches
    first_step_at = time.perf_counter()
    trainer.train()
    record = finish(trainer, spec, clock, counter, losses, started, first_step_at)
    record["settings"] = {
        "bf16": config.bf16, "weights": (config.model_init_kwargs or {}).get("dtype", "checkpoint's"),
        "gradient_checkpointing": config.gradient_checkpointing,
        "padding_free": config.padding_free, "packing": config.packing, "max_length": config.max_length,
        "sampler": getattr(config, "train_sampling_strategy", "random"),
        "optim": getattr(config.optim, "value", str(config.optim)),
        "completion_only_loss": trainer.completion_only_loss, "use_cpu": config.use_cpu,
        "use_liger_kernel": config.use_liger_kernel, "why": why,
    }
    return record
