"""Function-calling training data in OpenAI's format: checks of `tools`, `tool_calls` and tool messages.

Usage (from the `messages` format and Checker._message):
    calls = message_tool_calls(chk, msg, role, "messages[2]")     # [ToolCall], [] or None on an error
    tools = example_tools(chk, row_data)                          # the example's function definitions
    check_tool_links(chk, messages, tools, row_data)              # calls name defined tools, results answer calls

OpenAI's format (fine-tuning with function calling): a line is {"messages": [...], "tools": [{"type":
"function", "function": {"name", "description"?, "parameters"?}}], "parallel_tool_calls"?: bool}; an
assistant message may carry `tool_calls: [{"id", "type": "function", "function": {"name", "arguments"}}]`
with `arguments` a JSON object written as a string; a `{"role": "tool", "tool_call_id", "content"}`
message holds one call's result. The legacy form (`functions`, assistant `function_call`, `function`
role messages named by the function) is read as the same, the function name standing in for the id.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from lmtune.data.records import Message, ToolCall

if TYPE_CHECKING:
    from lmtune.data.checks import Checker

# OpenAI's rule for function names.
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
EXAMPLE_KEYS = {"messages", "tools", "parallel_tool_calls", "functions"}


def message_tool_calls(chk: Checker, msg: dict[str, Any], role: Any, field: str) -> list[ToolCall] | None:
    """The message's tool calls ([] when it has none); None after an error."""
    if "tool_calls" not in msg and "function_call" not in msg:
        return []
    key = "tool_calls" if "tool_calls" in msg else "function_call"
    if role != "assistant":
        chk.error("message_unrecognized_key", f"only assistant messages may carry {key}", f"{field}.{key}")
        return None
    if key == "function_call":  # legacy: one call, the function name stands in for the id
        fn = _object(chk, msg["function_call"], f"{field}.function_call")
        call = None if fn is None else _call(chk, fn, fn.get("name"), f"{field}.function_call")
        return None if call is None else [call]
    value = msg["tool_calls"]
    if not isinstance(value, list) or not value:
        chk.error("wrong_type", "tool_calls must be a non-empty list of tool calls", f"{field}.tool_calls")
        return None
    calls = []
    for i, item in enumerate(value):
        where = f"{field}.tool_calls[{i}]"
        obj = _object(chk, item, where)
        if obj is None:
            return None
        if obj.get("type", "function") != "function":
            chk.error("invalid_tool_call", f"type must be 'function', got {obj.get('type')!r}", f"{where}.type")
            return None
        call_id = chk.text_value(obj.get("id"), f"{where}.id") if "id" in obj else None
        if "id" not in obj:
            chk.error("message_missing_key", "a tool call needs an 'id' (tool messages answer it by that id)",
                      f"{where}.id")
        fn = _object(chk, obj.get("function"), f"{where}.function")
        call = None if fn is None else _call(chk, fn, call_id, f"{where}.function")
        if call is None or call_id is None:
            return None
        calls.append(call)
    return calls


def _object(chk: Checker, value: Any, field: str) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        chk.error("wrong_type", f"expected an object, got {'null' if value is None else type(value).__name__}", field)
        return None
    return value


def _call(chk: Checker, fn: dict[str, Any], call_id: Any, field: str) -> ToolCall | None:
    """A function's name and arguments; the arguments must be a JSON object written as a string."""
    name = fn.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        chk.error("invalid_tool_call", f"the function name must match {NAME.pattern}, got {name!r}", f"{field}.name")
        return None
    arguments = fn.get("arguments")
    if not isinstance(arguments, str):
        chk.error("invalid_tool_call", "arguments must be a string holding a JSON object (as OpenAI returns it), "
                  f"got {'null' if arguments is None else type(arguments).__name__}", f"{field}.arguments")
        return None
    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError as err:
        chk.error("invalid_tool_call", f"arguments are not valid JSON: {err}", f"{field}.arguments")
        return None
    if not isinstance(parsed, dict):
        chk.error("invalid_tool_call", "arguments must be a JSON object", f"{field}.arguments")
        return None
    return ToolCall(str(call_id), name, arguments)


def example_tools(chk: Checker, data: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The example's function definitions as OpenAI `tools` ([] when none); None after an error."""
    key = "tools" if "tools" in data else "functions" if "functions" in data else None
    if key is None:
        return []
    value = data[key]
    if not isinstance(value, list):
        chk.error("wrong_type", f"{key} must be a list", key)
        return None
    tools, seen = [], set()
    for i, item in enumerate(value):
        where = f"{key}[{i}]"
        obj = _object(chk, item, where)
        if obj is None:
            return None
        if key == "tools":
            if obj.get("type") != "function":
                chk.error("invalid_tool", f"type must be 'function', got {obj.get('type')!r}", f"{where}.type")
                return None
            fn = _object(chk, obj.get("function"), f"{where}.function")
            where += ".function"
        else:
            fn = obj
        if fn is None or not _function(chk, fn, where):
            return None
        if fn["name"] in seen:
            chk.error("invalid_tool", f"function {fn['name']!r} is defined twice", f"{where}.name")
            return None
        seen.add(fn["name"])
        tools.append({"type": "function", "function": fn})
    return tools


def _function(chk: Checker, fn: dict[str, Any], where: str) -> bool:
    name = fn.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        chk.error("invalid_tool", f"the function name must match {NAME.pattern}, got {name!r}", f"{where}.name")
        return False
    if "description" in fn and not isinstance(fn["description"], str):
        chk.error("invalid_tool", "description must be a string", f"{where}.description")
        return False
    params = fn.get("parameters", {})
    if not isinstance(params, dict) or params.get("type", "object") != "object":
        chk.error("invalid_tool", "parameters must be a JSON schema of an object", f"{where}.parameters")
        return False
    return True


def check_tool_links(chk: Checker, messages: list[Message], tools: list[dict[str, Any]],
                     data: dict[str, Any]) -> None:
    """Every call names a defined function (when tools are given), every tool result answers an
    earlier call of the example, and parallel_tool_calls false allows one call per turn."""
    names = {t["function"]["name"] for t in tools}
    parallel = data.get("parallel_tool_calls", True)
    if not isinstance(parallel, bool):
        chk.error("wrong_type", "parallel_tool_calls must be true or false", "parallel_tool_calls")
    called: set[str] = set()
    for i, m in enumerate(messages):
        if parallel is False and len(m.tool_calls) > 1:
            chk.error("invalid_tool_call", f"{len(m.tool_calls)} calls in one turn but parallel_tool_calls is false",
                      f"messages[{i}].tool_calls")
        for k, call in enumerate(m.tool_calls):
            if names and call.name not in names:
                chk.error("unknown_tool", f"calls {call.name!r}, which the example's tools do not define "
                          f"({sorted(names)})", f"messages[{i}].tool_calls[{k}].function.name")
            called.add(call.id)
        if m.role == "tool" and m.tool_call_id not in called:
            chk.error("unknown_tool_call_id", f"tool_call_id {m.tool_call_id!r} answers no earlier tool call",
                      f"messages[{i}].tool_call_id")
