"""Save trained models (adapter-only or full), load them back, and merge LoRA into plain weights.

Usage:
    save_model(model, tokenizer, "runs/x/final")          # adapter folder for peft models, else full
    model, tokenizer = load_trained("runs/x/final")       # base is rebuilt from lmtune_base.json
    merge_and_save(model, tokenizer, "runs/x/merged")     # plain HF folder, usable without peft

Only safetensors are written. Folders appear atomically: written to a temporary sibling, then renamed.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from peft import PeftModel
from transformers import AutoTokenizer

from lmtune.fsutil import atomic_dir
from lmtune.config import ModelConfig
from lmtune.model.builtin import ModelError
from lmtune.model.load import ensure_pad_token, load_model

BASE_FILE = "lmtune_base.json"
TASK_OF_PEFT = {"CAUSAL_LM": "causal_lm", "SEQ_CLS": "sequence_classification"}


def save_model(model: Any, tokenizer: Any, out_dir: str | Path, base_cfg: ModelConfig | None = None) -> Path:
    """Save a peft model as its adapter (plus lmtune_base.json naming the base) or a full model, with tokenizer."""
    out = Path(out_dir).expanduser()
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if isinstance(model, PeftModel):
            _write_base(model, tmp, base_cfg)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return out


def _write_base(model: PeftModel, folder: Path, base_cfg: ModelConfig | None) -> None:
    cfg = base_cfg or getattr(model.get_base_model(), "lmtune_model_config", None)
    if cfg is None:
        return  # a base we did not load: load_trained will then need base_cfg
    peft_cfg = model.peft_config[model.active_adapter]
    task_type = getattr(peft_cfg.task_type, "value", peft_cfg.task_type)  # TaskType enum or plain str
    task = TASK_OF_PEFT.get(task_type, "causal_lm")
    config = model.get_base_model().config
    classifier = task == "sequence_classification"
    info = {
        "model": cfg.model_dump(mode="json"),
        "task": task,
        "num_labels": config.num_labels if classifier else None,
        # The base config is not saved with an adapter, so the class names travel here.
        "id2label": {str(k): v for k, v in config.id2label.items()} if classifier else None,
    }
    (folder / BASE_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def load_trained(
    path: str | Path, base_cfg: ModelConfig | None = None, trainable: bool = False
) -> tuple[Any, Any]:
    """Load (model, tokenizer) from a folder written by save_model: a full model or an adapter on its base."""
    folder = Path(path).expanduser()
    if (folder / "adapter_config.json").exists():
        return _load_adapter(folder, base_cfg, trainable)
    if not (folder / "config.json").exists():
        raise ModelError(f"{folder}: neither a saved model (config.json) nor an adapter (adapter_config.json)")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    is_classifier = any(a.endswith("ForSequenceClassification") for a in config.get("architectures") or [])
    # Without a base config keep the saved dtype rather than casting to the float32 default.
    cfg = (base_cfg or ModelConfig(dtype="auto")).model_copy(update={"name": str(folder), "from_config": None})
    if is_classifier:
        num_labels = len(config.get("id2label") or {}) or 2
        return load_model(cfg, "sequence_classification", num_labels)
    return load_model(cfg, "causal_lm")


def _base_info(folder: Path) -> dict[str, Any]:
    if (folder / BASE_FILE).exists():
        return json.loads((folder / BASE_FILE).read_text(encoding="utf-8"))
    return {}


def adapter_task(folder: str | Path) -> str | None:
    """The task (causal_lm, sequence_classification) of a saved adapter folder; None for a full model."""
    folder = Path(folder).expanduser()
    if not (folder / "adapter_config.json").exists():
        return None
    adapter = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    return _base_info(folder).get("task") or TASK_OF_PEFT.get(adapter.get("task_type"), "causal_lm")


def saved_tokenizer(folder: Path, base_cfg: ModelConfig, base_tokenizer: Any) -> Any:
    """The tokenizer saved with a model (the one it was trained with), else the base model's."""
    if not (folder / "tokenizer_config.json").exists():
        return base_tokenizer
    tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=base_cfg.trust_remote_code)
    return ensure_pad_token(tokenizer)


def _load_adapter(folder: Path, base_cfg: ModelConfig | None, trainable: bool) -> tuple[Any, Any]:
    info = _base_info(folder)
    if base_cfg is None:
        if "model" not in info:
            raise ModelError(f"{folder}: adapter without {BASE_FILE}; pass the base model config (base_cfg)")
        base_cfg = ModelConfig.model_validate(info["model"])
    model, tokenizer = load_model(base_cfg, adapter_task(folder), info.get("num_labels"))
    if info.get("id2label"):
        model.config.id2label = {int(k): v for k, v in info["id2label"].items()}
        model.config.label2id = {v: int(k) for k, v in info["id2label"].items()}
    tokenizer = saved_tokenizer(folder, base_cfg, tokenizer)
    with warnings.catch_warnings():
        # peft asks transformers for a renamed property; the warning is theirs, not the user's.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return PeftModel.from_pretrained(model, str(folder), is_trainable=trainable), tokenizer


def merge_and_save(model: Any, tokenizer: Any, out_dir: str | Path) -> Any:
    """Merge LoRA weights into the base (consumes the peft wrapper), save a plain HF folder, return the model."""
    if not isinstance(model, PeftModel):
        raise ModelError("merge_and_save needs a peft (LoRA) model; save a full model with save_model")
    merged = model.merge_and_unload()
    save_model(merged, tokenizer, out_dir)
    return merged
