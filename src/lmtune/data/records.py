"""The canonical records every input format is normalised into, and the issues found on the way.

Every loader yields `Row`s (one raw record with its file and line), every format turns a Row into an
`Example`, and every problem is an `Issue` that names file, line, field and a stable code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]
Kind = Literal["text", "chat", "labelled", "preference"]


@dataclass(frozen=True)
class ToolCall:
    """One function call of an assistant turn, as OpenAI writes it; `arguments` is the JSON text."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Message:
    """One turn of a conversation; `weight` 0 keeps an assistant turn out of the loss.

    An assistant turn may call tools (`tool_calls`, its content then often empty); a `tool` turn holds
    one call's result and names it with `tool_call_id`.
    """

    role: Role
    content: str
    weight: int = 1
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


@dataclass(frozen=True)
class Row:
    """A raw record as read from a file, with where it came from (line is 1-based; row index for CSV)."""

    data: Any
    file: str
    line: int


@dataclass
class Example:
    """One normalised training example.

    kind text:       `text` (raw language modelling).
    kind chat:       `messages` (prompt/completion, alpaca, transcripts and chat all become this).
    kind labelled:   `text` and `label` (label name as a string).
    kind preference: `prompt` (messages before the answer), `chosen` and `rejected` (assistant answers).
    `tools` holds the function definitions a chat may call ({"type": "function", "function": {...}}).
    """

    kind: Kind
    text: str | None = None
    messages: list[Message] = field(default_factory=list)
    label: str | None = None
    prompt: list[Message] = field(default_factory=list)
    chosen: list[Message] = field(default_factory=list)
    rejected: list[Message] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)
    file: str = ""
    line: int = 0

    def canonical(self) -> dict[str, Any]:
        """A JSON-able form without provenance, used for hashing and fingerprints."""

        def msgs(ms: list[Message]) -> list[list[Any]]:
            # Tool fields only where present, so fingerprints of data without tools stay as they were.
            return [[m.role, m.content, m.weight] + ([_calls(m), m.tool_call_id] if m.tool_calls or m.tool_call_id
                                                     else []) for m in ms]

        out = {
            "kind": self.kind,
            "text": self.text,
            "messages": msgs(self.messages),
            "label": self.label,
            "prompt": msgs(self.prompt),
            "chosen": msgs(self.chosen),
            "rejected": msgs(self.rejected),
        }
        return {**out, "tools": self.tools} if self.tools else out

    def dedup_text(self) -> str:
        """The text that decides whether two examples are duplicates (inputs and answers together)."""
        if self.kind == "text":
            return self.text or ""
        if self.kind == "labelled":
            return self.text or ""
        if self.kind == "chat":
            return "\n".join(m.content + "".join(f"\n{c.name}({c.arguments})" for c in m.tool_calls)
                             for m in self.messages)
        parts = self.prompt + self.chosen + self.rejected
        return "\n".join(m.content for m in parts)


def _calls(m: Message) -> list[list[str]]:
    return [[c.id, c.name, c.arguments] for c in m.tool_calls]


Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Issue:
    """A problem in the data: `code` is stable (OpenAI cookbook names where they apply)."""

    code: str
    message: str
    file: str
    line: int | None = None
    column: int | None = None
    field: str | None = None
    severity: Severity = "error"

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        fld = f" [{self.field}]" if self.field else ""
        return f"{where}: {self.severity} {self.code}{fld}: {self.message}"


class DataError(ValueError):
    """Raised when data cannot be used; carries every Issue found."""

    def __init__(self, issues: list[Issue]):
        self.issues = issues
        shown = "\n".join(str(i) for i in issues[:50])
        more = f"\n... and {len(issues) - 50} more" if len(issues) > 50 else ""
        super().__init__(shown + more)
