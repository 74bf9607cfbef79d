"""Config files: read a YAML run config with `--set` overrides, write it back, print the schema.

Usage:
    cfg = load_config("configs/demo.yaml", overrides=["training.learning_rate=1e-4"])
    text = dump_config(cfg)        # the YAML written into every run folder
    print(schema_text())           # every field with its type, default and docstring
"""

from __future__ import annotations

import re
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from lmtune.config import RunConfig


class ConfigError(ValueError):
    """A config file or override that does not fit the schema; the message names key path and file."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads `1e-4` as a float: PyYAML follows YAML 1.1, which needs `1.0e-4`."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
               r"|[0-9][0-9_]*[eE][-+]?[0-9]+|\.inf|\.Inf|\.INF|\.nan|\.NaN|\.NAN)$"),
    list("-+0123456789."),
)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def _is_text_field(path: list[str]) -> bool:
    """Whether `path` names a free-text field (str or str | None, also inside a dict[str, str])."""
    ann: Any = RunConfig
    for part in path:
        if isinstance(ann, type) and issubclass(ann, BaseModel) and part in ann.model_fields:
            ann = ann.model_fields[part].annotation
        elif get_origin(ann) is dict:
            ann = get_args(ann)[1]
        else:
            return False
    if ann is str:
        return True
    # str | None, not list[str] (whose args are also (str,)): a list typed as YAML stays a list.
    return get_origin(ann) in (Union, UnionType) and set(get_args(ann)) <= {str, type(None)}


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split `a.b.c=value` into its key path and a YAML-parsed value."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key.path=value")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = _yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    # Text fields keep what was typed when YAML reads it as something else: a run named 2024, a
    # revision 0123456 (octal to YAML 1.1), a prompt "Answer: one word" (a mapping to YAML).
    if value is not None and not isinstance(value, str) and _is_text_field(path):
        value = raw
    return path, value


def apply_override(tree: dict[str, Any], path: list[str], value: Any) -> None:
    """Set `value` at `path` inside a nested dict, creating sections as needed."""
    node = tree
    for i, part in enumerate(path[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {'.'.join(path)}: {'.'.join(path[: i + 1])} is not a section")
        node = child
    node[path[-1]] = value


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid config ({source}):"]
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        got = "" if e["type"] == "extra_forbidden" else f" (got {e.get('input')!r})"
        lines.append(f"  {where}: {msg}{got}")
    return "\n".join(lines)


def _fill_empty_sections(tree: dict[str, Any], model: type[BaseModel]) -> None:
    """A section header whose keys are all commented out (`training:`) reads as null: use its defaults."""
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel) and name in tree:
            if tree[name] is None:
                tree[name] = {}
            if isinstance(tree[name], dict):
                _fill_empty_sections(tree[name], ann)


def config_from_dict(tree: dict[str, Any], source: str = "<dict>") -> RunConfig:
    """Validate a nested dict into a RunConfig, with errors naming key paths and `source`."""
    _fill_empty_sections(tree, RunConfig)
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML config (or the defaults when path is None) and apply dotted overrides."""
    tree: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            loaded = _yaml(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"cannot read config file {path}: {err}") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        tree = loaded
    for text in overrides or []:
        apply_override(tree, *parse_override(text))
    if overrides:
        source += " with --set " + " ".join(overrides)
    return config_from_dict(tree, source)


def dump_config(cfg: RunConfig) -> str:
    """The resolved config as YAML, in schema order."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def show_config(cfg: RunConfig) -> str:
    """dump_config for people (`lmtune config show`): a split fraction that a given file overrides says so."""
    given = {"validation": cfg.data.validation_file, "test": cfg.data.test_file}
    lines, in_split = dump_config(cfg).splitlines(), False
    for i, line in enumerate(lines):
        if line == "  split:":
            in_split = True
        elif in_split and line.startswith("    "):
            key = line.strip().split(":")[0]
            if given.get(key):
                lines[i] = f"{line}  # ignored: data.{key}_file is set"
        else:
            in_split = False
    return "\n".join(lines) + "\n"


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if not getattr(annotation, "__args__", None) else None
    return text or str(annotation).replace("typing.", "")


def schema_lines(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[str]:
    """One line per field: dotted path, type, default and the field's docstring."""
    lines: list[str] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        ann = field.annotation
        doc = " ".join((field.description or "").split())  # a docstring may wrap over several lines
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            lines.append(f"{path}:  # {doc}")
            lines.extend(schema_lines(ann, path + "."))
            continue
        default = field.default_factory() if field.default_factory else field.default
        lines.append(f"{path} = {default!r}  [{_type_name(ann)}]  # {doc}")
    return lines


def schema_text() -> str:
    """The whole schema as text for `lmtune config schema`."""
    return "\n".join(schema_lines())
