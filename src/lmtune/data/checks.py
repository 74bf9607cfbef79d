"""Field checks shared by the formats: strings, label values and chat message lists.

Usage:
    chk = Checker(row)
    prompt = chk.string(row.data, "prompt")                      # None (and an Issue) when unusable
    msgs = chk.messages(row.data["messages"], "messages")        # validated list[Message] or None
    chk.unknown_keys(row.data, {"prompt", "completion"})         # warnings, not errors
    chk.issues                                                   # every Issue found, with file/line/field

Codes follow the OpenAI fine-tuning cookbook's format checks where one applies
(`message_missing_key`, `message_unrecognized_key`, `unrecognized_role`, `missing_content`).
Function calling follows OpenAI's format: an assistant message may carry `tool_calls` (content then
optional), a `tool` message answers one call by `tool_call_id`; the legacy `function_call` and
`function` role are read as the same (see tool_data.py for the example-level checks).
"""

from __future__ import annotations

from typing import Any

from lmtune.data.records import Issue, Message, Row
from lmtune.data.tool_data import message_tool_calls

ROLES = ("system", "user", "assistant", "tool")
# Keys a chat message may carry; `name` is accepted (OpenAI allows it) but not used for training.
MESSAGE_KEYS = {"role", "content", "weight", "name", "tool_calls", "tool_call_id", "function_call"}


class Checker:
    """Collects the issues of one row, each tagged with the row's file and line."""

    def __init__(self, row: Row):
        self.file, self.line = row.file, row.line
        self.issues: list[Issue] = []

    @property
    def failed(self) -> bool:
        """True once any error (not warning) was recorded."""
        return any(i.severity == "error" for i in self.issues)

    def error(self, code: str, message: str, field: str | None = None) -> None:
        """Record an error at this row."""
        self.issues.append(Issue(code, message, self.file, self.line, None, field, "error"))

    def warn(self, code: str, message: str, field: str | None = None) -> None:
        """Record a warning at this row."""
        self.issues.append(Issue(code, message, self.file, self.line, None, field, "warning"))

    def unknown_keys(self, data: dict[str, Any], allowed: set[str], prefix: str = "") -> None:
        """Warn about keys the format does not use (they are ignored, e.g. OpenAI `tools`)."""
        for key in data:
            if key not in allowed:
                self.warn("unknown_key", f"key {key!r} is not used by this format and is ignored", prefix + key)

    def string(self, data: dict[str, Any], key: str, field: str | None = None, empty: str = "error") -> str | None:
        """A required string value; `empty` says whether a blank one is an error, a warning or fine."""
        field = field or key
        if key not in data:
            self.error("missing_key", f"missing key {key!r}", field)
            return None
        return self.text_value(data[key], field, empty)

    def text_value(self, value: Any, field: str, empty: str = "error") -> str | None:
        """Check that a value is a string, reporting blank ones as `empty` says."""
        if not isinstance(value, str):
            self.error("wrong_type", f"expected a string, got {_type(value)}", field)
            return None
        if not value.strip():
            if empty == "error":
                self.error("empty_content", "the text is empty", field)
                return None
            if empty == "warning":
                self.warn("empty_content", "the text is empty", field)
        return value

    def label(self, value: Any, names: list[str] | None, field: str = "label") -> str | None:
        """A label as its name: integer ids map through `names`; names must be in the set when given."""
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            self.error("wrong_type", f"a label must be a string or an integer, got {_type(value)}", field)
            return None
        if names is None:
            return str(value)
        if isinstance(value, str) and value in names:
            return value
        # CSV cells are strings, so "2" is read as the id 2 when it is not itself a name.
        as_id = value if isinstance(value, int) else int(value) if value.strip().isdecimal() else None
        if as_id is not None and 0 <= as_id < len(names):
            return names[as_id]
        self.error("label_not_in_set", f"label {value!r} is not one of {names} (or an id 0..{len(names) - 1})", field)
        return None

    def messages(self, value: Any, field: str, empty_answer: str = "error") -> list[Message] | None:
        """Validate a chat message list; returns None when any message has an error."""
        if not isinstance(value, list):
            self.error("wrong_type", f"expected a list of messages, got {_type(value)}", field)
            return None
        if not value:
            self.error("missing_messages_list", "the message list is empty", field)
            return None
        before = len(self.issues)
        out = [self._message(m, f"{field}[{i}]", empty_answer) for i, m in enumerate(value)]
        if any(i.severity == "error" for i in self.issues[before:]):
            return None
        return [m for m in out if m is not None]

    def prompt(self, value: Any, field: str) -> list[Message] | None:
        """A prompt given as a string (one user turn) or as a list of messages (conversational)."""
        if isinstance(value, list):
            return self.messages(value, field)
        text = self.text_value(value, field)
        return None if text is None else [Message("user", text)]

    def answers(self, value: Any, field: str) -> list[Message] | None:
        """A preference answer: a string, or a list of assistant messages; blank answers only warn."""
        if isinstance(value, str):
            text = self.text_value(value, field, empty="warning")
            return None if text is None else [Message("assistant", text)]
        msgs = self.messages(value, field, empty_answer="warning")
        wrong = [i for i, m in enumerate(msgs or []) if m.role != "assistant"]
        for i in wrong:
            msg = f"an answer must be an assistant message, not {msgs[i].role!r}"  # type: ignore[index]
            self.error("unrecognized_role", msg, f"{field}[{i}].role")
        return None if wrong else msgs

    def _message(self, msg: Any, field: str, empty_answer: str) -> Message | None:
        if not isinstance(msg, dict):
            self.error("wrong_type", f"a message must be an object, got {_type(msg)}", field)
            return None
        for key in msg:
            if key not in MESSAGE_KEYS:
                self.error("message_unrecognized_key", f"unrecognized message key {key!r}", f"{field}.{key}")
        role = msg.get("role")
        if role == "function":  # legacy function result: a tool message named by the function
            role = "tool"
        if "role" not in msg:
            self.error("message_missing_key", "the message has no 'role'", f"{field}.role")
        elif role not in ROLES:
            self.error("unrecognized_role", f"role {role!r} is not one of {list(ROLES)}", f"{field}.role")
        calls = message_tool_calls(self, msg, role, field)
        content = msg.get("content")
        if content is None and ("tool_calls" in msg or "function_call" in msg):
            content = ""  # a turn that only calls tools (its calls' own errors are reported above)
        elif content is None:
            self.error("missing_content", "the message has no 'content'", f"{field}.content")
        else:
            empty = empty_answer if role == "assistant" else "error"
            content = self.text_value(content, f"{field}.content", "ok" if calls else empty)
        call_id = self._tool_call_id(msg, role, field)
        weight = msg.get("weight", 1)
        if "weight" in msg and (isinstance(weight, bool) or weight not in (0, 1)):
            self.error("invalid_weight", f"weight must be 0 or 1, got {weight!r}", f"{field}.weight")
        elif "weight" in msg and role != "assistant":
            self.error("invalid_weight", "weight is only allowed on assistant messages", f"{field}.weight")
        if role not in ROLES or content is None or calls is None:
            return None
        return Message(role, content, int(weight) if weight in (0, 1) else 1, tuple(calls), call_id)

    def _tool_call_id(self, msg: dict[str, Any], role: Any, field: str) -> str | None:
        """A tool message's tool_call_id (the legacy `function` role names its function instead)."""
        if role != "tool":
            if "tool_call_id" in msg:
                self.error("message_unrecognized_key", "tool_call_id belongs on tool messages", f"{field}.tool_call_id")
            return None
        if msg.get("role") == "function":
            return self.text_value(msg.get("name"), f"{field}.name")
        if "tool_call_id" not in msg:
            self.error("message_missing_key", "a tool message needs the 'tool_call_id' it answers",
                       f"{field}.tool_call_id")
            return None
        return self.text_value(msg["tool_call_id"], f"{field}.tool_call_id")


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__
