"""Detect a data set's format and normalise every record into an `Example`, strictly.

Usage:
    examples, issues, fmt = load_examples("gsm8k/train.jsonl")          # read + detect + normalise
    fmt = detect_format(rows)                                             # e.g. "prompt_completion"
    example, issues = to_example(row, "messages")                         # one record

Formats (DataConfig.format) and the keys that identify them:
    messages           {"messages": [{"role", "content", "weight"?}, ...], "tools"?} (OpenAI chat fine-tuning,
                       function calling included: see tool_data.py)
    alpaca             {"instruction", "input"?, "output"}
    prompt_completion  {"prompt", "completion"} or {"question", "answer"} (GSM8K)
    preference         {"prompt"?, "chosen", "rejected"} (strings, message lists or hh-rlhf transcripts)
                       or OpenAI DPO {"input": {"messages"}, "preferred_output", "non_preferred_output"}
    labelled           {"text", "label"}
    transcript         {"text"} holding `\\n\\nHuman: ... \\n\\nAssistant: ...` or `### Human:` turns
    text               {"text"}
Records with nothing to learn from (blank text) are skipped with a warning; every other problem is an
error naming file, line and field (`messages[2].role`), so a bad record never trains silently.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmtune.data.checks import Checker
from lmtune.data.load import read_label_names, read_rows, rename_columns
from lmtune.data.preference import preference_example
from lmtune.data.records import DataError, Example, Issue, Message, Row
from lmtune.data.tool_data import EXAMPLE_KEYS, check_tool_links, example_tools
from lmtune.data.transcripts import is_transcript, parse_transcript

FORMATS = ("text", "prompt_completion", "alpaca", "messages", "transcript", "labelled", "preference")
DETECT_ROWS = 50


def row_format(data: Any) -> str | None:
    """The format one record's keys point to, or None; partial key sets still point somewhere so
    that a record missing one key is reported as such rather than as an unknown format."""
    if not isinstance(data, dict):
        return None
    keys = set(data)
    if "messages" in keys:
        return "messages"
    if keys & {"preferred_output", "non_preferred_output", "chosen", "rejected"}:
        return "preference"
    if "instruction" in keys:
        return "alpaca"
    if keys & {"prompt", "completion"} or keys >= {"question", "answer"}:
        return "prompt_completion"
    if "label" in keys:
        return "labelled"
    if "text" in keys:
        return "transcript" if is_transcript(data["text"]) else "text"
    return None


def detect_format(rows: list[Row]) -> str:
    """The majority format over the first records; raises DataError (`unknown_format`) if none fits."""
    head = rows[:DETECT_ROWS]
    votes = Counter(f for f in (row_format(r.data) for r in head) if f is not None)
    if votes:
        return votes.most_common(1)[0][0]
    seen = sorted({k for r in head if isinstance(r.data, dict) for k in r.data})
    where = (head[0].file, head[0].line) if head else ("<no rows>", None)
    msg = (f"cannot tell the format from the keys {seen}; expected e.g. messages, prompt+completion, "
           "instruction+output, chosen+rejected, text+label or text (or set data.format / data.columns)")
    raise DataError([Issue("unknown_format", msg, where[0], where[1])])


def to_example(row: Row, fmt: str, label_names: list[str] | None = None) -> tuple[Example | None, list[Issue]]:
    """Normalise one record; returns (None, issues) when it has an error or nothing to train on."""
    chk = Checker(row)
    if not isinstance(row.data, dict):
        chk.error("data_type", f"a record must be an object, got {type(row.data).__name__}")
        return None, chk.issues
    if fmt == "auto":
        fmt = row_format(row.data) or "text"
    if fmt not in _NORMALISERS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    example = _NORMALISERS[fmt](row.data, chk, label_names)
    if example is None or chk.failed:
        return None, chk.issues
    example.file, example.line = row.file, row.line
    return example, chk.issues


def load_examples(
    path: str | Path,
    fmt: str = "auto",
    columns: dict[str, str] | None = None,
    label_names: list[str] | None = None,
) -> tuple[list[Example], list[Issue], str]:
    """Read, rename columns, detect the format and normalise; returns examples, issues and the format.

    The format is "unknown" when the file has no records or none fits; the issues then say why.
    Label names default to the sibling mapping.txt (TweetEval layout) when not given.
    """
    _, examples, issues, fmt = load_rows_and_examples(path, fmt, columns, label_names)
    return examples, issues, fmt


def load_rows_and_examples(
    path: str | Path,
    fmt: str = "auto",
    columns: dict[str, str] | None = None,
    label_names: list[str] | None = None,
) -> tuple[list[Row], list[Example], list[Issue], str]:
    """load_examples that also returns the raw rows (validation reports how many were read)."""
    rows, issues = read_rows(path)
    rows = rename_columns(rows, columns)
    if label_names is None:
        try:
            label_names = read_label_names(path)
        except DataError as err:  # read_rows already reported it for a TweetEval pair
            return rows, [], issues + [i for i in err.issues if i not in issues], "unknown"
    if fmt == "auto":
        if not rows:
            return rows, [], issues, "unknown"
        try:
            fmt = detect_format(rows)
        except DataError as err:
            return rows, [], issues + err.issues, "unknown"
    examples = []
    for row in rows:
        example, found = to_example(row, fmt, label_names)
        issues.extend(found)
        if example is not None:
            examples.append(example)
    return rows, examples, summarise_unknown_keys(issues), fmt


def summarise_unknown_keys(issues: list[Issue]) -> list[Issue]:
    """Keep the first `unknown_key` warning per (file, field) and count the rest, so an extra column
    in every row gives one line, not thousands."""
    first: dict[tuple[str, str | None], int] = {}
    counts: Counter[tuple[str, str | None]] = Counter()
    out: list[Issue] = []
    for issue in issues:
        if issue.code != "unknown_key":
            out.append(issue)
            continue
        key = (issue.file, issue.field)
        counts[key] += 1
        if key not in first:
            first[key] = len(out)
            out.append(issue)
    for key, index in first.items():
        if counts[key] > 1:
            out[index] = dataclasses.replace(out[index], message=f"{out[index].message} (in {counts[key]} records)")
    return out


def _text(data: dict[str, Any], chk: Checker, _names: list[str] | None) -> Example | None:
    chk.unknown_keys(data, {"text"})
    text = chk.string(data, "text", empty="warning")
    return Example("text", text=text) if text and text.strip() else None


def _transcript(data: dict[str, Any], chk: Checker, _names: list[str] | None) -> Example | None:
    chk.unknown_keys(data, {"text"})
    text = chk.string(data, "text")
    if text is None:
        return None
    turns, problem = parse_transcript(text)
    if problem:
        chk.error("bad_transcript", problem, "text")
        return None
    return Example("chat", messages=turns)


def _labelled(data: dict[str, Any], chk: Checker, names: list[str] | None) -> Example | None:
    chk.unknown_keys(data, {"text", "label"})
    text = chk.string(data, "text", empty="warning")
    if "label" not in data:
        chk.error("missing_key", "missing key 'label'", "label")
        return None
    label = chk.label(data["label"], names)
    if text is None or not text.strip() or label is None:
        return None
    return Example("labelled", text=text, label=label)


def _completion_messages(value: Any, chk: Checker, field: str) -> list[Message] | None:
    if isinstance(value, list):
        msgs = chk.messages(value, field)
        if msgs is not None and not any(m.role == "assistant" for m in msgs):
            chk.error("example_missing_assistant_message", "the completion has no assistant message", field)
            return None
        return msgs
    text = chk.text_value(value, field)
    return None if text is None else [Message("assistant", text)]


def _prompt_completion(data: dict[str, Any], chk: Checker, _names: list[str] | None) -> Example | None:
    keys = ("prompt", "completion") if {"prompt", "completion"} & set(data) else ("question", "answer")
    chk.unknown_keys(data, set(keys))
    for key in keys:
        if key not in data:
            chk.error("missing_key", f"missing key {key!r} (the {keys[0]}/{keys[1]} format)", key)
    if chk.failed:
        return None
    prompt = chk.prompt(data[keys[0]], keys[0])
    completion = _completion_messages(data[keys[1]], chk, keys[1])
    if prompt is None or completion is None:
        return None
    return Example("chat", messages=prompt + completion)


def _alpaca(data: dict[str, Any], chk: Checker, _names: list[str] | None) -> Example | None:
    chk.unknown_keys(data, {"instruction", "input", "output"})
    instruction = chk.string(data, "instruction")
    extra = data.get("input")  # alpaca leaves `input` empty (or out) for most records
    extra = "" if extra is None else chk.text_value(extra, "input", empty="ok")
    output = chk.string(data, "output")
    if instruction is None or extra is None or output is None:
        return None
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return Example("chat", messages=[Message("user", user), Message("assistant", output)])


def _messages(data: dict[str, Any], chk: Checker, _names: list[str] | None) -> Example | None:
    chk.unknown_keys(data, EXAMPLE_KEYS)
    if data.get("messages") in (None, []):
        chk.error("missing_messages_list", "no 'messages' list (or it is empty)", "messages")
        return None
    tools = example_tools(chk, data)
    msgs = chk.messages(data["messages"], "messages")
    if msgs is None or tools is None:
        return None
    if not any(m.role == "assistant" for m in msgs):
        chk.error("example_missing_assistant_message", "no assistant message to learn from", "messages")
        return None
    check_tool_links(chk, msgs, tools, data)
    return None if chk.failed else Example("chat", messages=msgs, tools=tools)


_NORMALISERS: dict[str, Callable[[dict[str, Any], Checker, list[str] | None], Example | None]] = {
    "text": _text,
    "transcript": _transcript,
    "labelled": _labelled,
    "prompt_completion": _prompt_completion,
    "alpaca": _alpaca,
    "messages": _messages,
    "preference": preference_example,
}
