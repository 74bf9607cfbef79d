"""Checkpoints as models: `ft:...:ckpt-step-N` ids, servable like the job's final model.

Usage:
    row = find_checkpoint(store, "ft:tiny-llama:alpha::3f2a...:ckpt-step-4", project="alpha")   # or None
    folder = checkpoint_model_folder(Path(row["run_dir"]), row["step"])   # a saved model, built once

A training checkpoint holds the trainable weights (the LoRA adapter, or every weight of a full
fine-tune) with the optimizer state. The first request for one rebuilds the model as the run built it
(base model + the run's adapter config), loads those weights and saves it as `save_model` saves a
run's final model, under <run>/checkpoint_models/step-N; later requests load that folder.
Checkpoints the run has pruned (the service keeps `keep_checkpoints`) are gone: 404 naming the step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmtune.serve.errors import APIError
from lmtune.serve.store import Store


def find_checkpoint(store: Store, model_id: str, project: str) -> dict[str, Any] | None:
    """The checkpoint named `model_id` of one of the project's jobs (with the job's run_dir), or None."""
    if ":ckpt-step-" not in model_id:
        return None
    return store.one("SELECT c.step, c.created_at, c.model_name, j.run_dir, j.project FROM checkpoints c "
                     "JOIN jobs j ON j.id = c.job_id WHERE c.model_name=? AND j.project=?", (model_id, project))


def checkpoint_model_folder(run_dir: Path, step: int) -> Path:
    """A saved model (adapter folder or full model) of the run's checkpoint at `step`, built on first use."""
    out = run_dir / "checkpoint_models" / f"step-{step:06d}"
    if out.exists():
        return out
    source = run_dir / "checkpoints" / f"step-{step:06d}" / "trainable.safetensors"
    if not source.exists():
        raise APIError(404, f"The checkpoint at step {step} is no longer stored: the server keeps only the latest "
                       "checkpoints of a job", param="model", code="model_not_found")
    _materialize(run_dir, source, out)
    return out


def _materialize(run_dir: Path, source: Path, out: Path) -> None:
    from safetensors.torch import load_file

    from lmtune.model.adapters import apply_peft
    from lmtune.model.export import save_model
    from lmtune.model.load import load_model
    from lmtune.runs import run_config
    from lmtune.train.checkpoint import load_trainable_state
    from lmtune.train.methods import method_of

    cfg = run_config(run_dir)
    task = method_of(cfg).head
    if task != "causal_lm":
        raise APIError(400, f"Checkpoints of {cfg.method.task} runs do not generate text", param="model",
                       code="model_not_supported")
    model, tokenizer = load_model(cfg.model, task)
    model = apply_peft(model, cfg.method, cfg.lora, task)
    load_trainable_state(model, load_file(str(source)))
    save_model(model, tokenizer, out, base_cfg=cfg.model)  # atomic: a crash leaves no half folder
