"""Tools in prompts: the tokenizer's own tool-aware chat template, or lmtune's documented fallback.

Usage:
    native_tools(tokenizer)                       # True when its chat template renders tools and calls
    dicts = template_messages(messages)           # Messages as transformers' apply_chat_template wants them
    plain = flatten_tools(messages, tools)        # the fallback: only system/user/assistant text turns
    content, calls = parse_tool_calls(text)       # a generated answer split into text and ToolCalls

The fallback (chatml, human-assistant, and tokenizer templates without tool support) is the
Hermes/Qwen convention: the function definitions go into the system message between <tools> tags,
each call into the assistant's text as a `<tool_call>{"name", "arguments"}</tool_call>` block (so it is
trained like any answer), and tool results into a user turn of `<tool_response>` blocks (consecutive
results share one turn, so strictly alternating templates accept them).
"""

from __future__ import annotations

import json
import re
from typing import Any

from lmtune.data.records import Message, ToolCall

TOOLS_HEADER = (
    "# Tools\n\nYou may call the functions described by the JSON schemas between <tools></tools> tags:\n<tools>\n"
)
TOOLS_FOOTER = (
    "\n</tools>\n\nTo call a function, answer with a JSON object holding its name and arguments between "
    "<tool_call></tool_call> tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <arguments-object>}\n"
    "</tool_call>"
)
CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)

_PROBE_TOOLS = [{"type": "function", "function": {
    "name": "lmtune_probe_fn", "description": "lmtune_probe_description",
    "parameters": {"type": "object", "properties": {"lmtune_probe_arg": {"type": "string"}}}}}]
_PROBE = [
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function", "function": {
        "name": "lmtune_probe_fn", "arguments": {"lmtune_probe_arg": "lmtune_probe_value"}}}]},
    {"role": "tool", "tool_call_id": "call_1", "name": "lmtune_probe_fn", "content": "lmtune_probe_result"},
]


def native_tools(tokenizer: Any) -> bool:
    """True when the tokenizer's chat template shows tool definitions, calls and results (one probe
    render, cheap next to the prefix renders that mark the answers)."""
    if not getattr(tokenizer, "chat_template", None):
        return False
    try:
        text = tokenizer.apply_chat_template(_PROBE, tools=_PROBE_TOOLS, tokenize=False)
    except Exception:  # noqa: BLE001 - a template that raises on tool turns does not support them
        return False
    return all(s in text for s in ("lmtune_probe_description", "lmtune_probe_value", "lmtune_probe_result"))


def has_tools(messages: list[Message], tools: list[dict[str, Any]] | None) -> bool:
    """True when the conversation defines, calls or answers tools."""
    return bool(tools) or any(m.tool_calls or m.role == "tool" for m in messages)


def template_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Messages as transformers' chat templates take them (call arguments as objects, as they document)."""
    out = []
    for m in messages:
        d: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            d["tool_calls"] = [{"id": c.id, "type": "function",
                                "function": {"name": c.name, "arguments": json.loads(c.arguments)}}
                               for c in m.tool_calls]
        if m.tool_call_id is not None:
            d["tool_call_id"] = m.tool_call_id
        out.append(d)
    return out


def call_text(call: ToolCall) -> str:
    """One call as the fallback writes it in the assistant's answer."""
    body = json.dumps({"name": call.name, "arguments": json.loads(call.arguments)}, ensure_ascii=False)
    return f"<tool_call>\n{body}\n</tool_call>"


def flatten_tools(messages: list[Message], tools: list[dict[str, Any]] | None) -> list[Message]:
    """The conversation with tools written into plain system/user/assistant turns (the fallback)."""
    out: list[Message] = []
    if tools:
        block = TOOLS_HEADER + "\n".join(json.dumps(t, ensure_ascii=False) for t in tools) + TOOLS_FOOTER
        first = messages[0] if messages else None
        if first is not None and first.role == "system":
            out.append(Message("system", f"{first.content}\n\n{block}"))
            messages = messages[1:]
        else:
            out.append(Message("system", block))
    for m in messages:
        if m.role == "tool":
            result = f"<tool_response>\n{m.content}\n</tool_response>"
            if out and out[-1].role == "user" and out[-1].content.startswith("<tool_response>"):
                out[-1] = Message("user", f"{out[-1].content}\n{result}")
            else:
                out.append(Message("user", result))
        elif m.tool_calls:
            calls = "\n".join(call_text(c) for c in m.tool_calls)
            out.append(Message("assistant", f"{m.content}\n{calls}" if m.content.strip() else calls, m.weight))
        else:
            out.append(m)
    return out


def parse_tool_calls(text: str) -> tuple[str, list[ToolCall]]:
    """Split a generated answer into its text and its calls: `<tool_call>` JSON blocks (the fallback,
    Hermes and Qwen templates), or an answer that is one bare {"name", "arguments"|"parameters"} object
    (Llama 3 templates). Blocks that are not such JSON stay in the text."""
    calls: list[ToolCall] = []
    kept = text
    for match in CALL.finditer(text):
        call = _call_of(match.group(1), len(calls))
        if call is not None:
            calls.append(call)
            kept = kept.replace(match.group(0), "", 1)
    if not calls:
        bare = _call_of(text.strip(), 0, whole=True)
        if bare is not None:
            return "", [bare]
    return kept.strip(), calls


def _call_of(body: str, index: int, whole: bool = False) -> ToolCall | None:
    """The call in `body`: its first JSON value (a model may run on past the closing brace of a
    <tool_call> block), or, `whole`, all of it."""
    try:
        obj, end = json.JSONDecoder().raw_decode(body)
    except json.JSONDecodeError:
        return None
    if whole and body[end:].strip():
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):  # some models write the arguments as a JSON string, as OpenAI returns them
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    if not isinstance(args, dict):
        return None
    return ToolCall(f"call_{index}", obj["name"], json.dumps(args, ensure_ascii=False))
