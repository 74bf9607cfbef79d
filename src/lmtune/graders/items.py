"""Reinforcement data in OpenAI's format: `messages` (the prompt) plus any fields, which graders see as `item`.

Usage:
    issues = check_items("train.jsonl", grader)     # line-numbered Issues: bad JSON, no prompt, missing fields
    to_chat_file("train.jsonl", "graded/train.jsonl")   # what lmtune's GRPO trains on
    item_of(reference)                               # the item back, inside the reward

lmtune's GRPO takes chat examples and hands each prompt's reference answer to the reward. A converted
line keeps the prompt's messages and carries the whole record (the item, messages included, as
OpenAI's graders see it) as JSON in a final assistant message: that reference is never trained on,
only decoded back into the item. Converted lines keep their line numbers, so errors still point at
the user's file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmtune.data.records import Issue
from lmtune.graders.spec import Grader, LabelModelGrader, ScoreModelGrader, leaves, parse_grader
from lmtune.graders.template import TemplateError, item_paths, lookup

ROLES = ("system", "developer", "user", "assistant")


def referenced_item_paths(grader: Grader) -> list[tuple[str, ...]]:
    """Every item path the grader's templates read (python graders read the item in code: none known)."""
    paths: list[tuple[str, ...]] = []
    for sub in leaves(grader):
        if isinstance(sub, (ScoreModelGrader, LabelModelGrader)):
            texts = [m.text() for m in sub.input]
        else:
            texts = [getattr(sub, "input", ""), getattr(sub, "reference", "")]
        for text in texts:
            paths += [p for p in item_paths(text) if p not in paths]
    return paths


def _record(line_text: str, file: str, line: int) -> tuple[dict[str, Any] | None, list[Issue]]:
    try:
        record = json.loads(line_text)
    except ValueError as err:
        return None, [Issue("invalid_json", f"not JSON: {err}", file, line)]
    if not isinstance(record, dict):
        return None, [Issue("invalid_record", "each line must be a JSON object", file, line)]
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        return None, [Issue("missing_messages_list", "no 'messages' list (or it is empty)", file, line, field="messages")]
    issues = []
    for k, m in enumerate(messages):
        ok = isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)
        if not ok:
            issues.append(Issue("invalid_message", f"messages[{k}] must be {{role: {'|'.join(ROLES)}, content: string}}",
                                file, line, field=f"messages[{k}]"))
    if not issues and messages[-1]["role"] == "assistant":
        issues.append(Issue("prompt_ends_with_answer", "the last message is the assistant's: reinforcement data "
                            "holds the prompt only (the model writes the answer)", file, line, field="messages"))
    return (record if not issues else None), issues


def check_items(path: str | Path, grader: Grader | dict[str, Any], shown_name: str | None = None) -> list[Issue]:
    """Line-numbered problems of a reinforcement file, including item fields the grader reads that a line lacks."""
    grader = parse_grader(grader) if isinstance(grader, dict) else grader
    paths = referenced_item_paths(grader)
    name = shown_name or str(path)
    issues: list[Issue] = []
    n = 0
    with open(path, encoding="utf-8") as fh:
        for line, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            record, found = _record(text, name, line)
            issues += found
            if record is None:
                continue
            n += 1
            for keys in paths:
                try:
                    lookup("item", keys, record)
                except TemplateError as err:
                    issues.append(Issue("missing_item_field", f"the grader reads {err}", name, line,
                                        field=".".join(keys)))
    if n == 0 and not issues:
        issues.append(Issue("no_examples", "no examples", name))
    return issues


def to_chat_file(src: str | Path, dst: str | Path) -> Path:
    """Write the chat file GRPO trains on (line for line); raises ValueError on a bad line."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    out = []
    with open(src, encoding="utf-8") as fh:
        for line, text in enumerate(fh, start=1):
            if not text.strip():
                out.append("")
                continue
            record, issues = _record(text, str(src), line)
            if record is None:
                raise ValueError(str(issues[0]))
            carrier = {"role": "assistant", "content": json.dumps(record, ensure_ascii=False, sort_keys=True)}
            out.append(json.dumps({"messages": [*record["messages"], carrier]}, ensure_ascii=False))
    dst.write_text("\n".join(out) + "\n", encoding="utf-8")
    return dst


def item_of(reference: str | None) -> dict[str, Any]:
    """The item a converted example carries as its reference answer."""
    if reference is None:
        return {}
    try:
        item = json.loads(reference)
    except ValueError:
        return {"reference_answer": reference}  # plain chat data: the answer is all the item there is
    return item if isinstance(item, dict) else {"reference_answer": reference}


def with_chat_files(cfg: Any, grader: dict[str, Any] | None, folder: Path) -> Any:
    """The RunConfig reading chat copies (in `folder`) of its OpenAI reinforcement files; unchanged
    unless its method trains on `grader` (the method record's). Raises DataError with every
    line-numbered problem first."""
    from lmtune.data.records import DataError

    if grader is None:
        return cfg
    updates: dict[str, Any] = {"format": "messages"}
    issues: list[Issue] = []
    for field in ("train_file", "validation_file", "test_file"):
        path = getattr(cfg.data, field)
        if path:
            issues += [i for i in check_items(Path(path).expanduser(), grader) if i.severity == "error"]
            updates[field] = str(folder / f"{field.removesuffix('_file')}.jsonl")
    if issues:
        raise DataError(issues)
    for field in ("train_file", "validation_file", "test_file"):
        if getattr(cfg.data, field):
            to_chat_file(Path(getattr(cfg.data, field)).expanduser(), updates[field])
    return cfg.model_copy(update={"data": cfg.data.model_copy(update=updates)})
