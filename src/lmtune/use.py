"""Using a trained run: load it, generate with the template it was trained with, chat, export.

    model, tokenizer, cfg = load_for_inference("runs/demo-20261121-101500")
    print(generate_once("runs/demo-...", "Classify: I love it"))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmtune.config import RunConfig
from lmtune.config_file import ConfigError, dump_config, load_config
from lmtune.data.encode import with_system
from lmtune.data.records import Message
from lmtune.data.templates import generation_prompt, resolve_template
from lmtune.model.generate import generate
from lmtune.model.export import load_trained, merge_and_save, save_model
from lmtune.model.load import load_model
from lmtune.runs import run_config

# Written into exported folders so `lmtune generate OUT` uses the run's template and system prompt.
EXPORT_CONFIG = "lmtune_config.yaml"


def load_for_inference(target: str | Path) -> tuple[Any, Any, RunConfig]:
    """(model, tokenizer, config) from a run folder, a saved model folder or a model name."""
    path = Path(target)
    if (path / "config.yaml").exists():
        cfg = run_config(path)
        model, tokenizer = load_trained(_final(path), base_cfg=cfg.model)
    elif path.exists() and ((path / "config.json").exists() or (path / "adapter_config.json").exists()):
        cfg = load_config(path / EXPORT_CONFIG) if (path / EXPORT_CONFIG).exists() else RunConfig()
        model, tokenizer = load_trained(path)
    else:
        cfg = RunConfig.model_validate({"model": {"name": str(target)}})
        model, tokenizer = load_model(cfg.model)
    model.eval()
    return model, tokenizer, cfg


def _final(run: Path) -> Path:
    if not (run / "final").exists():
        raise FileNotFoundError(f"{run} has no final model: the run did not finish; "
                                f"continue it with `lmtune train {run / 'config.yaml'} --resume {run}`")
    return run / "final"


def _reply(model, tokenizer, cfg: RunConfig, messages: list[Message], max_new_tokens: int, temperature: float) -> str:
    template = resolve_template(cfg.data.template, tokenizer)
    prompt = generation_prompt(with_system(messages, cfg.data.system_prompt), template, tokenizer)
    return generate(model, tokenizer, [prompt], max_new_tokens=max_new_tokens, temperature=temperature)[0].text


def generate_once(target: str | Path, prompt: str, max_new_tokens: int = 128, temperature: float = 0.0) -> str:
    """One answer to one user message, stopping at EOS."""
    model, tokenizer, cfg = load_for_inference(target)
    return _reply(model, tokenizer, cfg, [Message("user", prompt)], max_new_tokens, temperature)


def chat_loop(target: str | Path, max_new_tokens: int = 256, temperature: float = 0.0) -> None:
    """Interactive multi-turn chat on the terminal; an empty line or Ctrl-D ends it."""
    model, tokenizer, cfg = load_for_inference(target)
    history: list[Message] = []
    print("chat with the model; an empty line ends the conversation")
    while True:
        try:
            text = input("you> ").strip()
        except EOFError:
            break
        if not text:
            break
        history.append(Message("user", text))
        answer = _reply(model, tokenizer, cfg, history, max_new_tokens, temperature)
        history.append(Message("assistant", answer))
        print(f"model> {answer}")


def training_chat_template(cfg: RunConfig, tokenizer: Any) -> str:
    """The Jinja chat template that renders prompts exactly as this run's training did."""
    from lmtune.model.builtin import ModelError
    from lmtune.model.tiny import CHATML_TEMPLATE

    name = resolve_template(cfg.data.template, tokenizer)
    if name == "tokenizer":
        return tokenizer.chat_template
    if name == "chatml" and tokenizer.eos_token == "<|im_end|>":
        return CHATML_TEMPLATE  # lmtune's chatml renderer writes exactly this when <|im_end|> is the EOS
    raise ModelError(f"GGUF export embeds the tokenizer's chat template or chatml with <|im_end|> as EOS; "
                     f"this run trained with data.template {name} (EOS {tokenizer.eos_token!r})")


def export_gguf(run: str | Path, out: str | Path, quant: str = "f16") -> tuple[Path, Path | None]:
    """Write a run's merged model as GGUF with an Ollama Modelfile beside it (None when its template has no
    Ollama translation); returns both paths."""
    from peft import PeftModel

    from lmtune.model.builtin import ModelError
    from lmtune.model.gguf_export import source_pre_tokenizer, write_gguf
    from lmtune.model.modelfile import default_system, modelfile

    run = Path(run)
    cfg = run_config(run)
    model, tokenizer = load_trained(_final(run), base_cfg=cfg.model)
    if isinstance(model, PeftModel):
        model = model.merge_and_unload()
    template = training_chat_template(cfg, tokenizer)
    path = write_gguf(model, tokenizer, out, quant, chat_template=template, name=cfg.output.name,
                      pre_tokenizer=source_pre_tokenizer(cfg.model))
    try:
        system = cfg.data.system_prompt or default_system(template, tokenizer)
        text = modelfile(path.name, template, tokenizer.eos_token, system)
    except ModelError:
        return path, None  # llama.cpp still reads the Jinja template from the file itself
    target = path.parent / "Modelfile"
    target.write_text(text, encoding="utf-8")
    return path, target


def export_run(run: str | Path, merge_to: str | None = None, adapter_to: str | None = None) -> Path:
    """Write a run's result as a merged full model (safetensors) or as a separate adapter."""
    run = Path(run)
    cfg = run_config(run)
    if not merge_to and cfg.method.peft != "lora":
        raise ConfigError(f"this run (method.peft {cfg.method.peft}) saved a whole model, not a separate adapter; "
                          "use --merge OUT")
    model, tokenizer = load_trained(_final(run), base_cfg=cfg.model)
    if merge_to and cfg.method.peft == "lora":
        merge_and_save(model, tokenizer, merge_to)
        out = Path(merge_to).expanduser()
    else:
        out = save_model(model, tokenizer, merge_to or adapter_to, base_cfg=cfg.model)
    (out / EXPORT_CONFIG).write_text(dump_config(cfg), encoding="utf-8")
    return out
