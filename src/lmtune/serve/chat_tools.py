"""Chat completions with `tools`, `tool_choice` and `response_format`, as OpenAI's API takes them.

Usage (from the chat route):
    messages = request_messages(body)                 # data.records.Message list (tool turns included)
    tools = prompt_tools(body)                        # what the prompt shows; 400 for what cannot be honoured
    prefix = forced_call_prefix(body, native)         # the start of a call tool_choice demands ("" if none)
    message, finish = answer_message(prefix + gen.text, gen.finish_reason, tools, body.response_format, prefix)

What lmtune guarantees: tools are rendered as the model's chat template renders them, or as lmtune's
documented fallback (the format lmtune trains function-calling data in; data/tool_render.py), and
`<tool_call>` blocks (or a bare {"name", "arguments"} answer) in the generated text come back as
`message.tool_calls` with finish_reason "tool_calls". Decoding is not constrained; `tool_choice`
"required" or a named function starts the answer with the opening of a call in lmtune's format (and
the function's name), so the model writes the rest; with a tool-aware template of the model's own
(whose call format lmtune does not write) they are 400. A forced call the model does not complete
is a 422. With `response_format` json_object or json_schema the answer is parsed (a ```json fence is
removed) and checked with jsonschema; an answer that does not parse or match is a 422 error, never
returned as valid.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

from lmtune.data.records import Message, ToolCall
from lmtune.data.tool_render import parse_tool_calls
from lmtune.serve.errors import APIError
from lmtune.serve.schemas import ChatRequest, ResponseFormat

FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def request_messages(body: ChatRequest) -> list[Message]:
    """The request's messages as lmtune Messages; 400 naming the message when one is incomplete."""
    out = []
    for i, m in enumerate(body.messages):
        calls = tuple(ToolCall(c.id, c.function.name, _arguments(c.function.arguments, i, k))
                      for k, c in enumerate(m.tool_calls or []))
        if calls and m.role != "assistant":
            raise APIError(400, f"messages[{i}].tool_calls: only assistant messages call tools",
                           param=f"messages[{i}].tool_calls")
        if m.content is None and not calls:
            raise APIError(400, f"messages[{i}].content: required unless an assistant message has tool_calls",
                           param=f"messages[{i}].content")
        if (m.role == "tool") != (m.tool_call_id is not None):
            raise APIError(400, f"messages[{i}].tool_call_id: a tool message needs one, and only it",
                           param=f"messages[{i}].tool_call_id")
        out.append(Message(m.role, m.text(), 1, calls, m.tool_call_id))  # type: ignore[arg-type]
    return out


def _arguments(text: str, i: int, k: int) -> str:
    try:
        if isinstance(json.loads(text), dict):
            return text
    except json.JSONDecodeError:
        pass
    raise APIError(400, f"messages[{i}].tool_calls[{k}].function.arguments: must be a JSON object as a string",
                   param=f"messages[{i}].tool_calls[{k}].function.arguments")


def prompt_tools(body: ChatRequest) -> list[dict[str, Any]] | None:
    """The tools the prompt shows (None: none, or tool_choice "none"); 400 where lmtune cannot honour them."""
    if body.tool_choice is not None and not body.tools:
        raise APIError(400, "tool_choice is only allowed when tools are specified", param="tool_choice")
    if body.stream and (body.tools or _json_format(body.response_format)):
        raise APIError(400, "stream: tools and response_format need the whole answer; use stream false",
                       param="stream")
    if _json_format(body.response_format):
        _check_schema(body.response_format)
    if not body.tools or body.tool_choice == "none":
        return None
    return [t.model_dump(exclude_none=True) for t in body.tools]


def forced_call_prefix(body: ChatRequest, native: bool) -> str:
    """The opening of the call that tool_choice "required" or a named function demands ("" otherwise)."""
    choice = body.tool_choice
    if not body.tools or choice in (None, "auto", "none"):
        return ""
    if native:
        raise APIError(400, "tool_choice: forcing a call needs lmtune's own tool format, and this model's chat "
                       "template writes calls its own way (lmtune does not constrain decoding); use 'auto' or "
                       "'none'", param="tool_choice")
    if choice == "required":
        return '<tool_call>\n{"name": "'
    name = choice.function.name  # type: ignore[union-attr]
    if name not in {t.function.name for t in body.tools}:
        raise APIError(400, f"tool_choice: function {name!r} is not one of the request's tools", param="tool_choice")
    return '<tool_call>\n{"name": ' + json.dumps(name) + ', "arguments": '


def _json_format(fmt: ResponseFormat | None) -> bool:
    return fmt is not None and fmt.type != "text"


def _check_schema(fmt: ResponseFormat) -> None:
    import jsonschema

    if fmt.type == "json_schema":
        if fmt.json_schema is None:
            raise APIError(400, "response_format.json_schema is required with type json_schema",
                           param="response_format.json_schema")
        try:
            jsonschema.Draft202012Validator.check_schema(fmt.json_schema.schema_ or {})
        except jsonschema.SchemaError as err:
            raise APIError(400, f"response_format.json_schema.schema: not a valid JSON schema: {err.message}",
                           param="response_format.json_schema.schema") from None


def answer_message(text: str, finish_reason: str, tools: list[dict[str, Any]] | None,
                   fmt: ResponseFormat | None, forced: str = "", parallel: bool = True) -> tuple[dict[str, Any], str]:
    """The choice's message and finish_reason: tool calls parsed out (only the first unless `parallel`),
    a JSON answer checked; `forced` is the call opening the answer was made to start with (it must parse)."""
    calls: list[ToolCall] = []
    if tools:
        text, calls = parse_tool_calls(text)
        calls = calls if parallel else calls[:1]
    if forced and not calls:
        cut = " (the answer reached max_tokens)" if finish_reason == "length" else ""
        raise APIError(422, f"tool_choice: the model did not complete the call it was made to start{cut}: "
                       f"{text[:200]!r}", param="tool_choice", code="tool_choice_not_met")
    if calls:
        views = [{"id": "call_" + secrets.token_hex(12), "type": "function",
                  "function": {"name": c.name, "arguments": c.arguments}} for c in calls]
        return {"role": "assistant", "content": text or None, "refusal": None, "tool_calls": views}, "tool_calls"
    if _json_format(fmt):
        text = _checked_json(text, fmt, finish_reason)  # type: ignore[arg-type]
    return {"role": "assistant", "content": text, "refusal": None}, finish_reason


def _checked_json(text: str, fmt: ResponseFormat, finish_reason: str) -> str:
    import jsonschema

    body = text.strip()
    fenced = FENCE.match(body)
    body = fenced.group(1) if fenced else body
    cut = " (the answer reached max_tokens)" if finish_reason == "length" else ""
    try:
        value = json.loads(body)
    except json.JSONDecodeError as err:
        raise _unmet(f"the model's answer is not valid JSON{cut}: {err}") from None
    if fmt.type == "json_object" and not isinstance(value, dict):
        raise _unmet(f"the model's answer is JSON but not an object{cut}")
    if fmt.type == "json_schema":
        try:
            jsonschema.validate(value, fmt.json_schema.schema_ or {})  # type: ignore[union-attr]
        except jsonschema.ValidationError as err:
            raise _unmet(f"the model's answer does not match the schema: {err.message}") from None
    return body


def _unmet(message: str) -> APIError:
    return APIError(422, message + ". lmtune checks answers against response_format but does not constrain "
                    "decoding; retry, or fine-tune the model on answers in this format", param="response_format",
                    code="response_format_not_met")
