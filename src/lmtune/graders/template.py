"""Grader templates as OpenAI documents them: `{{ namespace.path }}` with namespaces `item` and `sample`.

Usage:
    sample = sample_namespace('{"answer": 4}')   # output_text, output_json (when the text is JSON), output_tools
    render("{{ item.answer }} vs {{ sample.output_json.answer }}", item, sample)   # "4 vs 4"
    item_paths("{{ item.meta.id }}")              # [("meta", "id")]

A path is dot-separated keys, with `[n]` or `.n` for list indices. A string value is inserted as it
is; any other value as JSON. A path that is not there raises TemplateError naming it.
"""

from __future__ import annotations

import json
import re
from typing import Any

PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_STEP = re.compile(r"[^.\[\]]+|\[\d+\]")
_VARIABLE = re.compile(r"(?:item|sample)(?:\.[^.\[\]\s]+|\[\d+\])+")


class TemplateError(ValueError):
    """A template names a variable that the item or sample does not have (OpenAI's invalid_variable_error)."""


def sample_namespace(output_text: str) -> dict[str, Any]:
    """The `sample` namespace of one model output: output_text, output_json (when it parses) and output_tools."""
    try:
        output_json = json.loads(output_text)
    except ValueError:
        output_json = None
    return {"output_text": output_text, "output_json": output_json, "output_tools": []}


def _path(expression: str) -> tuple[str, tuple[str, ...]]:
    """(namespace, keys) of `item.a.b[0]`; TemplateError for anything else."""
    if not _VARIABLE.fullmatch(expression):
        raise TemplateError(f"template variable {{{{ {expression} }}}} must be item.<field> or sample.<field>")
    steps = [s.strip("[]") for s in _STEP.findall(expression)]
    return steps[0], tuple(steps[1:])


def lookup(namespace: str, keys: tuple[str, ...], value: Any) -> Any:
    """The value at `keys` in `value`; TemplateError naming the missing part."""
    walked = namespace
    for key in keys:
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            what = "has no field" if isinstance(value, dict) or value is None else f"is a {type(value).__name__}, no"
            raise TemplateError(f"{{{{ {namespace}.{'.'.join(keys)} }}}}: {walked} {what} {key!r}")
        walked += f".{key}"
    return value


def render(template: str, item: dict[str, Any], sample: dict[str, Any]) -> str:
    """The template with every placeholder replaced by its value."""
    spaces = {"item": item, "sample": sample}

    def value(match: re.Match) -> str:
        namespace, keys = _path(match.group(1))
        found = lookup(namespace, keys, spaces[namespace])
        return found if isinstance(found, str) else json.dumps(found, ensure_ascii=False)

    return PLACEHOLDER.sub(value, template)


def placeholders(template: str) -> list[tuple[str, tuple[str, ...]]]:
    """(namespace, keys) of every placeholder in the template; TemplateError for a malformed one."""
    return [_path(m.group(1)) for m in PLACEHOLDER.finditer(template)]


def item_paths(template: str) -> list[tuple[str, ...]]:
    """The item paths a template reads."""
    return [keys for namespace, keys in placeholders(template) if namespace == "item"]
