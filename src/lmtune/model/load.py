"""Load a base model and its tokenizer from a built-in name, a GGUF file, a local folder or a hub id.

Usage:
    from lmtune.config import ModelConfig
    model, tokenizer = load_model(ModelConfig(name="smollm2-135m-instruct"))
    model, tokenizer = load_model(ModelConfig(name="minilm-l6"), task="sequence_classification", num_labels=4)
    model, tokenizer = load_model(ModelConfig(name="tiny-llama", from_config={"hidden_size": 64}))
    print(describe_model(model), weights_hash(model))

Weights are only ever read from safetensors (never pickles). Padding side is left to the caller.
"""

from __future__ import annotations

import hashlib
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from transformers.utils import logging as hf_logging
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from lmtune.config import ModelConfig
from lmtune.model.builtin import BUILTINS, TINY_NAME, ModelError, builtin_source, gguf_cache_dir, gguf_to_hf
from lmtune.model.tiny import TINY_LLAMA, byte_tokenizer

__all__ = ["ModelError", "can_generate", "describe_model", "source_identity", "ensure_pad_token", "load_model", "load_tokenizer", "resolve_source", "weights_hash"]

TASKS = ("causal_lm", "sequence_classification")
AUTO_CLASSES = {"causal_lm": AutoModelForCausalLM, "sequence_classification": AutoModelForSequenceClassification}
# Encoders that transformers would happily wrap in an LM head that was never trained.
ENCODER_ONLY = {"bert", "roberta", "distilbert", "albert", "electra", "deberta", "deberta-v2", "xlm-roberta", "mpnet"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_source(cfg: ModelConfig) -> str:
    """The folder (or hub id) the weights are read from; converts built-in or given GGUF files once."""
    cache = Path(cfg.cache_dir).expanduser()
    if cfg.name in BUILTINS:
        spec = BUILTINS[cfg.name]
        source = builtin_source(spec)
        if spec.gguf_file is None:
            return str(source)
        return str(gguf_to_hf(source, gguf_cache_dir(source, cache, spec.name)))
    path = Path(cfg.name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"model.name: GGUF file not found: {path}")
        return str(gguf_to_hf(path, gguf_cache_dir(path, cache)))
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelError(f"model.name: {path} is a folder but has no config.json (not an HF model folder)")
        return str(path)
    if cfg.name.startswith((".", "/", "~")) or cfg.name.count("/") > 1:
        raise ModelError(f"model.name: {cfg.name!r} is neither a built-in, an existing folder, nor a .gguf file")
    return cfg.name  # a hub id; only reachable with a network


def load_tokenizer(cfg: ModelConfig) -> Any:
    """The tokenizer of the configured model, with a pad token (eos when the model has none)."""
    if cfg.name == TINY_NAME:
        tokenizer = byte_tokenizer()
    else:
        kwargs = {"revision": cfg.revision} if _is_hub_id(cfg) else {}
        tokenizer = AutoTokenizer.from_pretrained(
            resolve_source(cfg), trust_remote_code=cfg.trust_remote_code, **kwargs
        )
    return ensure_pad_token(tokenizer)


def ensure_pad_token(tokenizer: Any) -> Any:
    """Give a tokenizer without a pad token its eos token as pad token; returns it."""
    if tokenizer.pad_token is None:
        # Padded positions are masked out of attention and loss, so reusing eos is harmless.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(cfg: ModelConfig, task: str = "causal_lm", num_labels: int | None = None) -> tuple[Any, Any]:
    """Load (model, tokenizer) for `task` (causal_lm or sequence_classification) as `cfg` describes."""
    if task not in TASKS:
        raise ModelError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if task == "sequence_classification" and not num_labels:
        raise ModelError("sequence_classification needs num_labels (the number of classes)")
    spec = BUILTINS.get(cfg.name)
    if spec is not None and task not in spec.tasks:
        raise ModelError(f"built-in model {cfg.name!r} supports {', '.join(spec.tasks)}, not {task}")
    tokenizer = load_tokenizer(cfg)
    extra: dict[str, Any] = {"num_labels": num_labels} if num_labels else {}
    if cfg.from_config is not None or cfg.name == TINY_NAME:
        model = _from_config(cfg, task, len(tokenizer), extra)
    else:
        model = _from_pretrained(cfg, task, extra)
    if getattr(model.config, "pad_token_id", None) is None:
        # Sequence classifiers find each row's last real token through pad_token_id.
        model.config.pad_token_id = tokenizer.pad_token_id
    # Remember how the base was made so an adapter saved later can name its base (see export.py).
    model.lmtune_model_config = cfg
    return model, tokenizer


def can_generate(cfg: ModelConfig) -> bool:
    """Whether the configured model has (or can be given) a language-model head, i.e. is not an encoder."""
    spec = BUILTINS.get(cfg.name)
    if spec is not None:
        return "causal_lm" in spec.tasks
    if cfg.from_config is not None or cfg.name == TINY_NAME:
        return (cfg.from_config or {}).get("model_type", "llama") not in ENCODER_ONLY
    config = AutoConfig.from_pretrained(resolve_source(cfg), trust_remote_code=cfg.trust_remote_code)
    return config.model_type not in ENCODER_ONLY


def source_identity(cfg: ModelConfig) -> str | None:
    """A cheap string that changes when the base weights could have changed; None when unknowable
    (a hub id without a pinned revision may move)."""
    import importlib.metadata
    import json

    if cfg.from_config is not None or cfg.name == TINY_NAME:
        return "config:" + json.dumps(cfg.from_config or {}, sort_keys=True)  # fixed-seed weights
    spec = BUILTINS.get(cfg.name)
    if spec is not None:
        return f"builtin:{spec.name}:{importlib.metadata.version(spec.pip.split()[-1].split('==')[0])}"
    path = Path(cfg.name).expanduser()
    if path.exists():
        files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
        return "files:" + ";".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    return f"hub:{cfg.name}@{cfg.revision}" if cfg.revision else None


def _is_hub_id(cfg: ModelConfig) -> bool:
    return cfg.name not in BUILTINS and not Path(cfg.name).expanduser().exists()


def _from_config(cfg: ModelConfig, task: str, vocab_size: int, extra: dict[str, Any]) -> Any:
    if cfg.load_in_4bit:
        raise ModelError("model.load_in_4bit needs pretrained weights; it cannot be used with from_config")
    # A config naming its own model_type stands alone; otherwise it overrides the tiny Llama.
    own = cfg.from_config or {}
    spec = {**(own if "model_type" in own else {**TINY_LLAMA, **own}), **extra}
    model_type = spec.pop("model_type")
    spec.setdefault("vocab_size", vocab_size)
    config = AutoConfig.for_model(model_type, **spec)
    dtype = DTYPES.get(cfg.dtype, torch.float32)
    # Fixed seed: the same config always gives the same weights, so adapters can be re-applied later.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AUTO_CLASSES[task].from_config(config, attn_implementation=cfg.attn_implementation)
    return model.to(dtype)


def _from_pretrained(cfg: ModelConfig, task: str, extra: dict[str, Any]) -> Any:
    source = resolve_source(cfg)
    hub = _is_hub_id(cfg)
    kwargs: dict[str, Any] = {"revision": cfg.revision} if hub else {}
    config = AutoConfig.from_pretrained(source, trust_remote_code=cfg.trust_remote_code, **kwargs)
    if task == "causal_lm" and config.model_type in ENCODER_ONLY:
        raise ModelError(
            f"{cfg.name!r} is an encoder ({config.model_type}) without a language-model head; "
            "use it for classification (task sequence_classification), not for text generation"
        )
    if cfg.load_in_4bit:
        kwargs["quantization_config"] = _bnb_4bit()
    dtype = "auto" if cfg.dtype == "auto" else DTYPES[cfg.dtype]
    options = dict(dtype=dtype, use_safetensors=True, trust_remote_code=cfg.trust_remote_code,
                   attn_implementation=cfg.attn_implementation, **extra, **kwargs)
    if task != "sequence_classification":
        return AUTO_CLASSES[task].from_pretrained(source, **options)
    # transformers reports the head it creates as "MISSING ... newly initialized", which reads like a broken
    # checkpoint; the head is new on purpose, so say that, and warn only about other missing weights.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = AUTO_CLASSES[task].from_pretrained(source, output_loading_info=True, **options)
    finally:
        hf_logging.set_verbosity(verbosity)
    prefix = f"{model.base_model_prefix}."
    missing = sorted(info.get("missing_keys") or [])
    body = [k for k in missing if k.startswith(prefix)]
    head = [k for k in missing if not k.startswith(prefix)]
    if head:
        print(f"{cfg.name}: a new classification head ({', '.join(head)}; {model.config.num_labels} labels) "
              "is initialised; training learns it", file=sys.stderr)
    if body:
        warnings.warn(f"{cfg.name}: {len(body)} weights of the pretrained body are missing from the checkpoint and "
                      f"were initialised at random: {', '.join(body[:8])}{' ...' if len(body) > 8 else ''}")
    return model


def _bnb_4bit() -> Any:
    if not torch.cuda.is_available():
        raise ModelError("model.load_in_4bit (QLoRA) needs a CUDA GPU; none is available here")
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelError("model.load_in_4bit needs bitsandbytes: pip install bitsandbytes")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def _base_of(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def describe_model(model: Any) -> dict[str, Any]:
    """Parameter counts (total, trainable), dtype, architecture and model type of a (peft) model."""
    params = list(model.parameters())
    base = _base_of(model)
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return {
        "architecture": type(base).__name__,
        "model_type": getattr(getattr(base, "config", None), "model_type", None),
        "dtype": str(params[0].dtype).removeprefix("torch.") if params else None,
        "parameters": total,
        "trainable_parameters": trainable,
        "trainable_fraction": trainable / total if total else 0.0,
        "peft": type(model).__name__ if base is not model else None,
    }


def _base_state(model: Any) -> dict[str, torch.Tensor]:
    """The base weights under their plain HF names: adapter weights out, tied copies out."""
    base = _base_of(model)
    state: dict[str, torch.Tensor] = {}
    for name, tensor in base.state_dict().items():
        if "lora_" in name or ".modules_to_save." in name:
            continue
        state[name.replace(".base_layer.", ".").replace(".original_module.", ".")] = tensor
    for tied in getattr(base, "all_tied_weights_keys", None) or {}:
        state.pop(tied, None)
    return state


def _hash_tensors(items: Any) -> str:
    digest = hashlib.sha256()
    for name, tensor in items:
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{str(t.dtype)}|{tuple(t.shape)}\n".encode())
        # Reinterpret as bytes (works for bf16, which numpy lacks).
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def weights_hash(model_or_dir: Any) -> str:
    """Stable sha256 of the base weights of a model, or of the tensors in a folder's .safetensors files.

    A model and the folder it was saved to with save_pretrained hash the same (tied copies are
    skipped like save_pretrained skips them); LoRA weights are left out of a peft model's hash.
    """
    if isinstance(model_or_dir, (str, Path)):
        files = sorted(Path(model_or_dir).expanduser().glob("*.safetensors"))
        if not files:
            raise ModelError(f"{model_or_dir}: no .safetensors files to hash")
        tensors: dict[str, torch.Tensor] = {}
        for file in files:
            with safe_open(str(file), framework="pt") as fh:
                for key in fh.keys():
                    tensors[key] = fh.get_tensor(key)
        return _hash_tensors(sorted(tensors.items()))
    return _hash_tensors(sorted(_base_state(model_or_dir).items()))
