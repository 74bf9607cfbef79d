"""Wrap a loaded model for training: full fine-tuning or LoRA / DoRA / rsLoRA adapters via peft.

Usage:
    model, tokenizer = load_model(cfg.model)
    model = apply_peft(model, cfg.method, cfg.lora)
    optimizer = torch.optim.AdamW([p for _, p in trainable_parameters(model)], lr=cfg.training.learning_rate)
"""

from __future__ import annotations

import warnings

from typing import Any

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import TaskType, get_peft_model, prepare_model_for_kbit_training

from lmtune.config import LoraConfig, MethodConfig
from lmtune.model.builtin import ModelError
from lmtune.model.lora_speed import fuse_lora_layers, use_fast_dropout

PEFT_TASKS = {"causal_lm": TaskType.CAUSAL_LM, "sequence_classification": TaskType.SEQ_CLS}


def lora_config(lora_cfg: LoraConfig, task: str = "causal_lm") -> PeftLoraConfig:
    """The peft LoraConfig for our config section (all-linear leaves out the output head)."""
    if task not in PEFT_TASKS:
        raise ModelError(f"unknown task {task!r}; expected one of {', '.join(PEFT_TASKS)}")
    target = lora_cfg.target_modules
    return PeftLoraConfig(
        task_type=PEFT_TASKS[task],
        r=lora_cfg.r,
        lora_alpha=lora_cfg.alpha,
        lora_dropout=lora_cfg.dropout,
        target_modules=target if isinstance(target, str) else list(target),
        use_dora=lora_cfg.use_dora,
        use_rslora=lora_cfg.use_rslora,
        bias="none",
    )


def apply_peft(
    model: Any,
    method_cfg: MethodConfig,
    lora_cfg: LoraConfig,
    task: str = "causal_lm",
    gradient_checkpointing: bool = False,
) -> Any:
    """Return the model ready to train: all parameters trainable (peft none) or wrapped in LoRA adapters.

    For SEQ_CLS, peft itself keeps the freshly initialised classifier/score head fully trainable
    (modules_to_save) and never puts an adapter on it.
    """
    quantized = bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))
    if method_cfg.peft == "head":
        if task != "sequence_classification":
            raise ModelError("method.peft head trains a classification or reward head; a language model has none")
        head = set(head_parameter_names(model))
        for name, param in model.named_parameters():
            param.requires_grad_(name in head)
        return model
    if method_cfg.peft == "none":
        if quantized:
            raise ModelError("full fine-tuning (method.peft none) cannot update 4-bit weights; use method.peft lora")
        for param in model.parameters():
            param.requires_grad_(True)
        return model
    if quantized:
        # Freezes the quantised base, upcasts norms to fp32 and makes inputs carry gradients.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    try:
        with warnings.catch_warnings():
            # peft asks transformers for a renamed property; the warning is theirs, not the user's.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model = get_peft_model(model, lora_config(lora_cfg, task))
    except ValueError as err:
        raise ModelError(f"lora.target_modules {lora_cfg.target_modules!r}: {err}") from None
    use_fast_dropout(model)  # torch's CPU Bernoulli sampler was a fifth of a LoRA step (lora_speed.py)
    fuse_lora_layers(model)  # one autograd node per adapter instead of peft's elementwise chain
    return model


def head_parameter_names(model: Any) -> list[str]:
    """Parameters of a sequence classifier's task head: all outside the pretrained body, plus an encoder's pooler.

    The body is `model.<base_model_prefix>` (`bert`, `model`, ...); BERT-style heads read the pooler's
    output, so it is trained with the classifier (it is pretrained, but for a different objective).
    """
    prefix = getattr(model, "base_model_prefix", "")
    if not prefix or not hasattr(model, prefix):
        raise ModelError(f"{type(model).__name__} has no pretrained body to freeze (no base_model_prefix)")
    names = [n for n, _ in model.named_parameters()
             if not n.startswith(f"{prefix}.") or n.startswith(f"{prefix}.pooler.")]
    if not names:
        raise ModelError(f"{type(model).__name__} has no parameters outside its body {prefix!r}: no head to train")
    return names


def trainable_parameters(model: Any) -> list[tuple[str, torch.nn.Parameter]]:
    """(name, parameter) for every parameter the optimizer should update."""
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]
