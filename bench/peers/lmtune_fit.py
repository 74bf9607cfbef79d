"""System 4: lmtune with its defaults (packed micro-batches, precision auto, AdamW, cosine schedule);
`lmtune-lowmem` (LMTUNE_VARIANTS): the same with its memory levers on, `training.gradient_checkpointing`
and `training.release_freed_memory`; `lmtune-fp32-frozen` and `lmtune-lowmem-fp32-frozen` (opt-in):
those two with the frozen weights kept in fp32 (`training.frozen_dtype: float32`; by default they are
stored in bf16 wherever the run trains in bf16); `lmtune-no-kernels`, `lmtune-mask-attention`,
`lmtune-token-budget` and `lmtune-compile` (opt-in): one GPU lever changed each (`training.kernels:
none`, `training.packed_attention: mask`, `training.max_tokens_per_batch: 4096`, `training.compile: true`).

    python -m bench.peers.worker train lmtune SPEC.json          # normally started by the driver
    python -m bench.peers.worker train lmtune-lowmem SPEC.json

The same pieces `lmtune train` chains (load_examples -> encode_example -> load_model -> apply_peft ->
fit -> save_model), called directly so that the training set is exactly the shared subset: the full
pipeline would also split off a test set and run the leakage checks against it.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from bench.peers.common import LMTUNE_VARIANTS, Spec, StepClock, peak_memory, throughput


def run(spec: Spec, system: str = "lmtune") -> dict[str, Any]:
    """Train with lmtune's loop (its defaults, with the variant's settings) and return the run's record."""
    started = time.perf_counter()
    import torch

    from lmtune.config import RunConfig
    from lmtune.data.encode import encode_example
    from lmtune.data.formats import load_examples
    from lmtune.model.adapters import apply_peft
    from lmtune.model.export import save_model
    from lmtune.model.load import load_model
    from lmtune.train.hardware import resolve_precision
    from lmtune.train.kernels import resolve_kernels, resolve_packed_attention
    from lmtune.train.loop import fit
    from lmtune.train.methods import build_objective

    variant = LMTUNE_VARIANTS[system]
    cfg = RunConfig.model_validate({
        "model": {"name": spec.source, **variant.get("model", {})},
        "data": {"max_seq_len": spec.max_length},
        "lora": {"r": spec.lora["r"], "alpha": spec.lora["alpha"], "dropout": spec.lora["dropout"],
                 "target_modules": spec.lora["target_modules"]},
        "training": {"batch_size": spec.batch_size, "grad_accum": spec.grad_accum, "max_steps": spec.steps,
                     "learning_rate": spec.learning_rate, "lr_scheduler": spec.scheduler,
                     "warmup_ratio": spec.warmup_ratio, "seed": spec.seed, "num_threads": spec.threads,
                     **variant.get("training", {}),
                     "progress_bar": False, "eval_every": 10**9, "save_every": 10**9},
        "eval": {"at_end": False},
    })
    examples, issues, _ = load_examples(spec.train_file)
    if any(i.severity == "error" for i in issues):
        raise ValueError(f"{spec.train_file}: {issues[0]}")
    model, tokenizer = load_model(cfg.model)
    encoded = [encode_example(e, tokenizer, cfg.data) for e in examples]
    model = apply_peft(model, cfg.method, cfg.lora)
    clock, counts = StepClock(), []

    def on_step(step: int, record: dict[str, Any]) -> None:
        if record["kind"] != "train":  # fit also reports its evaluations; the clock times optimizer steps
            return
        clock.tick()
        counts.append((record["tokens"], record["supervised_tokens"]))

    first_step_at = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:  # fit's checkpoints; the adapter is saved below
        result = fit(model, encoded, [], build_objective(cfg, tokenizer), cfg.training, Path(run_dir),
                     on_step=on_step)
    record = {**throughput(clock.times, counts), **peak_memory(spec.device)}
    record.update(train_loss=result.train_losses[-1], train_losses=result.train_losses,
                  setup_seconds=first_step_at - started, wall_seconds=time.perf_counter() - started)
    save_model(model, tokenizer, Path(spec.out_dir) / "adapter", base_cfg=cfg.model)
    device = torch.device(spec.device)
    kernels = resolve_kernels(cfg.training.kernels, device)
    frozen = next((str(p.dtype).removeprefix("torch.") for p in model.parameters() if not p.requires_grad), None)
    record["settings"] = {"precision": resolve_precision(cfg.training.precision), "weights": cfg.model.dtype,
                          "frozen_weights": frozen,
                          "packing": cfg.training.packing,
                          "pack_length": cfg.data.max_seq_len,
                          "gradient_checkpointing": cfg.training.gradient_checkpointing,
                          "release_freed_memory": cfg.training.release_freed_memory,
                          "kernels": kernels,
                          "packed_attention": resolve_packed_attention(cfg.training.packed_attention, device),
                          "compile": cfg.training.compile,
                          "max_tokens_per_batch": cfg.training.max_tokens_per_batch,
                          "loss": "logits only at supervised positions (logits_to_keep mask)"
                                  + ((", Liger's fused linear cross-entropy" if kernels == "liger"
                                      else ", chunked through the head") if cfg.training.chunked_loss else ""),
                          "truncated_examples": sum(1 for e in encoded if e.truncated)}
    return record
