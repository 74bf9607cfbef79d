"""Training checkpoints: trainable weights, optimizer, scheduler, RNG states and loop state.

A checkpoint is a folder `step-000120/` written under a temporary name and renamed into place, so a
crash leaves either the whole checkpoint or none of it. Only trainable parameters are stored (the
adapter with LoRA, everything with full fine-tuning); the frozen base is reloaded from its source.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lmtune.fsutil import atomic_dir, clean_interrupted

STATE = "state.json"


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies of the parameters that receive gradients."""
    return {n: p.detach().to("cpu").contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy saved trainable tensors back into the model; every trainable parameter must be present."""
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in tensors]
    unknown = [n for n in tensors if n not in params]
    if missing or unknown:
        raise ValueError(f"checkpoint does not match the model: missing {missing[:3]}, unknown {unknown[:3]}")
    with torch.no_grad():
        for name, tensor in tensors.items():
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))


def rng_state() -> dict[str, Any]:
    """Every random stream the loop draws from (dropout, sampling)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the streams saved by rng_state()."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_atomically(final: Path, write: Any) -> Path:
    """Call write(tmp_dir), then rename tmp_dir to final (replacing an older one).

    A failed write (disk full, folder not writable) raises OSError with the same errno, naming the
    folder and the last complete checkpoint, which the failure left as it was.
    """
    try:
        with atomic_dir(final) as tmp:
            write(tmp)
    except OSError as err:
        last = latest_checkpoint(final.parent)
        kept = f"the last complete checkpoint, {last}, is intact" if last else "no complete checkpoint exists yet"
        raise OSError(err.errno, f"cannot write {final}: {err.strerror or err}; {kept}") from err
    return final


def save_checkpoint(
    folder: Path, model: torch.nn.Module, optimizer, scheduler, state: dict[str, Any]
) -> Path:
    """Write a complete checkpoint for `state["step"]` under folder/step-XXXXXX."""
    final = folder / f"step-{state['step']:06d}"

    def write(tmp: Path) -> None:
        save_file(trainable_state(model), tmp / "trainable.safetensors")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng_state(), tmp / "rng.pt")
        (tmp / STATE).write_text(json.dumps(state, indent=2))  # written last: marks completeness

    return write_atomically(final, write)


def save_weights(folder: Path, model: torch.nn.Module) -> Path:
    """Write only the trainable weights (the best model so far) atomically."""
    return write_atomically(folder, lambda tmp: save_file(trainable_state(model), tmp / "trainable.safetensors"))


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer, scheduler) -> dict[str, Any]:
    """Restore model, optimizer, scheduler and RNG from a checkpoint; return its loop state."""
    if not (path / STATE).exists():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no {STATE})")
    clean_interrupted(path.parent)  # e.g. `best` moved aside by a write the crash cut short
    load_trainable_state(model, load_file(path / "trainable.safetensors"))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    set_rng_state(torch.load(path / "rng.pt", weights_only=True))
    return json.loads((path / STATE).read_text())


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints in step order (half-written temporary folders are ignored)."""
    if not folder.exists():
        return []
    found = [p for p in folder.glob("step-*") if (p / STATE).exists()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def latest_checkpoint(folder: Path) -> Path | None:
    """The most recent complete checkpoint, if any."""
    found = list_checkpoints(folder)
    return found[-1] if found else None


def prune_checkpoints(folder: Path, keep: int) -> None:
    """Delete all but the `keep` newest checkpoints, and leftovers of interrupted writes."""
    clean_interrupted(folder)
    # A step-* folder without state.json can only be one an older version half deleted: drop it too.
    doomed = list_checkpoints(folder)[:-keep] + [p for p in folder.glob("step-*") if not (p / STATE).exists()]
    for old in doomed:
        # Renamed away first, so a crash in the middle of the deletion cannot leave a half-deleted
        # checkpoint under its own name; clean_interrupted() removes the hidden rest next time.
        hidden = folder / f".deleting-{old.name}"
        os.replace(old, hidden)
        shutil.rmtree(hidden, ignore_errors=True)
