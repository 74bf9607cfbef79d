"""Prompt templates: turn a conversation into text chunks, each marked as trained (answer) or not.

Usage:
    chunks = render_chunks(messages, "auto", tokenizer)      # [Chunk(text, role, trainable, weight)]
    prompt = generation_prompt(messages[:-1], "auto", tokenizer)  # what the model sees at inference

Templates: `tokenizer` (the tokenizer's own chat template; answer spans found by rendering prefixes),
`chatml`, `human-assistant`, `alpaca` (single turn) and `auto` (tokenizer's template if it has one,
else chatml). Every trainable answer ends with the tokenizer's EOS token: models trained on answers
without it never learn to stop.

Conversations with tools (OpenAI function calling) go through the tokenizer's template with `tools=`
where that template renders them; everywhere else through the fallback of tool_render.py. Either way
an assistant turn that calls tools is an answer (trained unless its weight is 0); tool results are
prompt text, never trained.
"""

from __future__ import annotations

from dataclasses import dataclass

from typing import Any

from lmtune.data.records import Message
from lmtune.data.tool_render import flatten_tools, has_tools, native_tools, template_messages

TEMPLATES = ("auto", "tokenizer", "chatml", "human-assistant", "alpaca")

ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)


@dataclass(frozen=True)
class Chunk:
    """A piece of rendered text; `trainable` marks an answer (assistant content + its end-of-turn).

    `weight` is the answer's Message.weight (0 = keep out of the loss); it is 1 for prompt chunks.
    `role` is the role of the message the text belongs to, or "prompt" for template text that spans
    several non-answer turns (the `tokenizer` template).
    """

    text: str
    role: str
    trainable: bool
    weight: int = 1


def resolve_template(template: str, tokenizer) -> str:
    """The concrete template name: `auto` becomes `tokenizer` or `chatml`."""
    if template not in TEMPLATES:
        raise ValueError(f"data.template: unknown template {template!r}; choose one of {', '.join(TEMPLATES)}")
    if template == "auto":
        return "tokenizer" if getattr(tokenizer, "chat_template", None) else "chatml"
    if template == "tokenizer" and not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "data.template is 'tokenizer' but the tokenizer has no chat template; "
            "choose data.template: chatml/human-assistant/alpaca"
        )
    return template


def render_chunks(
    messages: list[Message], template: str, tokenizer, add_generation_prompt: bool = False,
    tools: list[dict[str, Any]] | None = None,
) -> list[Chunk]:
    """Render `messages` (and the `tools` they may call) with `template` into chunks whose concatenation
    is the full training text."""
    name = resolve_template(template, tokenizer)
    messages = list(messages)
    if has_tools(messages, tools):
        if name == "tokenizer" and native_tools(tokenizer):
            chunks = _tokenizer_template(messages, tokenizer, add_generation_prompt, tools)
            return [c for c in chunks if c.text]
        messages = flatten_tools(messages, tools)
    chunks = _RENDERERS[name](messages, tokenizer, add_generation_prompt)
    return [c for c in chunks if c.text]


def generation_prompt(messages: list[Message], template: str, tokenizer,
                      tools: list[dict[str, Any]] | None = None) -> str:
    """The text given to the model at inference: prompt turns + assistant header, as seen in training."""
    return "".join(c.text for c in render_chunks(messages, template, tokenizer, True, tools))


def _eos_token(tokenizer) -> str:
    eos = getattr(tokenizer, "eos_token", None)
    if not eos:
        raise ValueError("the tokenizer has no eos_token; every trained answer must end with one")
    return eos


def _answer_chunks(text: str, msg: Message, tokenizer) -> list[Chunk]:
    """The trainable answer, ending with EOS; trailing whitespace goes to a separate untrained chunk."""
    body = text.rstrip()
    trailing = text[len(body) :]
    eos = _eos_token(tokenizer)
    ids = tokenizer(body, add_special_tokens=False)["input_ids"]
    if not ids or ids[-1] != tokenizer.eos_token_id:
        body += eos
    return [Chunk(body, "assistant", True, msg.weight), Chunk(trailing, "assistant", False)]


def _chatml(messages: list[Message], tokenizer, add_generation_prompt: bool) -> list[Chunk]:
    chunks: list[Chunk] = []
    for m in messages:
        if m.role == "assistant":
            chunks.append(Chunk("<|im_start|>assistant\n", "assistant", False))
            # The answer's own <|im_end|> is trained (it is what stops generation); the newline is not.
            chunks += _answer_chunks(m.content + "<|im_end|>", m, tokenizer)
            chunks.append(Chunk("\n", "assistant", False))
        else:
            chunks.append(Chunk(f"<|im_start|>{m.role}\n{m.content}<|im_end|>\n", m.role, False))
    if add_generation_prompt:
        chunks.append(Chunk("<|im_start|>assistant\n", "assistant", False))
    return chunks


def _human_assistant(messages: list[Message], tokenizer, add_generation_prompt: bool) -> list[Chunk]:
    chunks: list[Chunk] = []
    after_answer = False  # a turn after an answer starts on a new line (the answer ends with EOS, not "\n")
    for m in messages:
        sep = "\n" if after_answer else ""
        if m.role == "system":
            chunks.append(Chunk(f"{sep}{m.content}\n", "system", False))
        elif m.role == "user":
            chunks.append(Chunk(f"{sep}###Human: {m.content}\n", "user", False))
        else:
            chunks.append(Chunk(f"{sep}###Assistant: ", "assistant", False))
            # Trailing whitespace of the answer would otherwise land between it and EOS.
            chunks += _answer_chunks(m.content.rstrip(), m, tokenizer)
        after_answer = m.role == "assistant"
    if add_generation_prompt:
        chunks.append(Chunk(("\n" if after_answer else "") + "###Assistant: ", "assistant", False))
    return chunks


def _alpaca(messages: list[Message], tokenizer, add_generation_prompt: bool) -> list[Chunk]:
    # A system message replaces the standard preamble (both say what the task is).
    system = [m for m in messages if m.role == "system"]
    rest = [m for m in messages if m.role != "system"]
    roles = [m.role for m in messages]
    if roles not in (["user"], ["user", "assistant"], ["system", "user"], ["system", "user", "assistant"]):
        raise ValueError(
            "data.template alpaca is single-turn: it needs [system], user[, assistant] but got roles "
            f"{roles}; choose data.template: chatml or human-assistant for multi-turn chats"
        )
    preamble = system[0].content if system else ALPACA_PREAMBLE
    chunks = [
        Chunk(f"{preamble}\n\n", "system", False),
        Chunk(f"### Instruction:\n{rest[0].content}\n\n", "user", False),
    ]
    if len(rest) == 2 or add_generation_prompt:
        chunks.append(Chunk("### Response:\n", "assistant", False))
    if len(rest) == 2:
        chunks += _answer_chunks(rest[1].content.rstrip(), rest[1], tokenizer)
    return chunks


def _apply(tokenizer, messages: list[Message], add_generation_prompt: bool, tools: list | None = None) -> str:
    extra = {"tools": tools} if tools else {}
    return tokenizer.apply_chat_template(template_messages(messages), tokenize=False,
                                         add_generation_prompt=add_generation_prompt, **extra)


def _spans_error(detail: str) -> ValueError:
    return ValueError(
        "the tokenizer's chat template cannot mark assistant spans (" + detail + "): it rewrites earlier "
        "turns when the conversation grows, so training would not match inference. "
        "Choose data.template: chatml/human-assistant/alpaca"
    )


def _tokenizer_template(messages: list[Message], tokenizer, add_generation_prompt: bool,
                        tools: list | None = None) -> list[Chunk]:
    full = _apply(tokenizer, messages, False, tools)
    chunks: list[Chunk] = []
    pos = 0  # end of the text already assigned to chunks
    for i, m in enumerate(messages):
        if m.role != "assistant":
            continue
        if i == 0:  # transformers cannot render the empty prompt before it
            raise ValueError("the conversation starts with an assistant turn, which the tokenizer's chat template "
                             "cannot render after an empty prompt; start with a system or user message, or choose "
                             "data.template: chatml")
        before = _apply(tokenizer, messages[:i], True, tools)
        upto = _apply(tokenizer, messages[: i + 1], False, tools)
        if not upto.startswith(before):
            raise _spans_error(f"the prompt before assistant turn {i} is not a prefix of the text with it")
        if not full.startswith(upto):
            raise _spans_error(f"the text up to assistant turn {i} is not a prefix of the whole conversation")
        if len(before) < pos:
            raise _spans_error(f"assistant turn {i} starts inside an earlier turn")
        chunks.append(Chunk(full[pos : len(before)], "prompt", False))
        chunks += _answer_chunks(full[len(before) : len(upto)], m, tokenizer)
        pos = len(upto)
    chunks.append(Chunk(full[pos:], "prompt", False))
    if add_generation_prompt:
        with_header = _apply(tokenizer, messages, True, tools)
        if not with_header.startswith(full):
            raise _spans_error("the generation prompt is not an extension of the conversation")
        chunks.append(Chunk(with_header[len(full) :], "assistant", False))
    return chunks


_RENDERERS = {
    "chatml": _chatml,
    "human-assistant": _human_assistant,
    "alpaca": _alpaca,
    "tokenizer": _tokenizer_template,
}
