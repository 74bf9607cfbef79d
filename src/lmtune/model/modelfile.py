"""An Ollama Modelfile for an exported GGUF: the chat template translated to Go template syntax, stop strings.

Usage:
    text = modelfile("demo.gguf", chat_template, eos_token="<|im_end|>", system="Answer with one word.")
    Path("Modelfile").write_text(text)        # then: ollama create demo -f Modelfile

Ollama templates are Go templates, so a Jinja chat template is translated per family (recognised by
its turn markers): chatml (SmolLM, Qwen, lmtune's own `chatml`). A template's built-in
default system prompt (SmolLM2 writes one when the chat has none) becomes the Modelfile's SYSTEM, so
Ollama renders the same prompt text.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmtune.model.builtin import ModelError


@dataclass(frozen=True)
class Family:
    """How one chat-template family writes a turn: `{role}` and `{content}` fill the turn pattern."""

    name: str
    marker: str
    turn: str
    generation: str
    stops: tuple[str, ...]


# One family so far: each is tested by rendering its Go template against real Jinja templates.
FAMILIES = (
    Family("chatml", "<|im_start|>", "<|im_start|>{role}\n{content}<|im_end|>\n", "<|im_start|>assistant\n",
           ("<|im_end|>", "<|im_start|>")),
)


def template_family(chat_template: str) -> Family:
    """The family of a Jinja chat template, by its turn markers; ModelError when none matches."""
    for family in FAMILIES:
        if family.marker in chat_template:
            return family
    names = ", ".join(f.name for f in FAMILIES)
    raise ModelError(f"no Ollama template for this chat template (known families: {names}); "
                     "the GGUF file carries the Jinja template in tokenizer.chat_template")


def go_template(family: Family) -> str:
    """The Ollama TEMPLATE: every message as a turn of the family, then the assistant header."""
    turn = family.turn.replace("{role}", "{{ .Role }}").replace("{content}", "{{ .Content }}")
    return f"{{{{- range .Messages }}}}{turn}{{{{ end }}}}{family.generation}"


def default_system(chat_template: str, tokenizer) -> str | None:
    """The system prompt a template writes by itself when a chat has none (SmolLM2 does), else None."""
    family = template_family(chat_template)
    user = [{"role": "user", "content": "\x00"}]
    text = tokenizer.apply_chat_template(user, chat_template=chat_template, tokenize=False)
    before = text[: text.index(family.turn.format(role="user", content="\x00"))]
    start, end = family.turn.split("{content}")
    start = start.format(role="system")
    if before.startswith(start) and before.endswith(end):
        return before[len(start): len(before) - len(end)]
    return None


def _quoted(text: str) -> str:
    """A Modelfile value: Ollama's triple quotes keep newlines literally (no escape sequences)."""
    if '"""' in text:
        raise ModelError(f"cannot quote {text[:40]!r} for a Modelfile: it contains three double quotes")
    return f'"""{text}"""'


def modelfile(gguf_name: str, chat_template: str, eos_token: str, system: str | None = None) -> str:
    """The Modelfile text: FROM the GGUF beside it, TEMPLATE, SYSTEM (if any) and a stop per stop string."""
    family = template_family(chat_template)
    stops = list(dict.fromkeys((eos_token, *family.stops)))
    lines = [f"FROM ./{gguf_name}", f"TEMPLATE {_quoted(go_template(family))}"]
    if system:
        lines.append(f"SYSTEM {_quoted(system)}")
    lines += [f"PARAMETER stop {_quoted(s)}" for s in stops]
    return "\n".join(lines) + "\n"
