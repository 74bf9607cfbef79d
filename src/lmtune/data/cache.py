"""The on-disk form of a prepared data set: write it atomically, read it back exactly.

Usage:
    write_cache(cache_dir, manifest, examples, encoded)   # as prepare_data does after a fresh run
    prepared = load_prepared(cache_dir)                   # PreparedData with from_cache=True

A cache folder holds manifest.json plus, per split (train, validation, test):
- `<split>.examples.jsonl`: each example's canonical form with its source file and line;
- `<split>.encoded.safetensors`: token ids and labels of all sequences as flat int64 arrays with their
  lengths, truncation counts and class targets (preference pairs under `chosen.` and `rejected.` prefixes), because
  one array per split loads in milliseconds where a JSON list of lists takes seconds.
Which folder a preparation lives in (its cache key) is decided by lmtune.data.prepare.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from lmtune.data.encode import Encoded
from lmtune.data.records import Example, Issue, Message, ToolCall
from lmtune.data.split import SPLITS
from lmtune.fsutil import atomic_dir


@dataclass
class PreparedData:
    """Examples and token ids per split (train, validation, test) with the manifest describing them."""

    examples: dict[str, list[Example]]
    encoded: dict[str, list]
    label_names: list[str] | None
    manifest: dict[str, Any]
    issues: list[Issue]
    from_cache: bool
    cache_dir: Path


def write_cache(
    cache_dir: Path, manifest: dict[str, Any], examples: dict[str, list[Example]], encoded: dict[str, list]
) -> None:
    """Write into a temporary sibling folder, then rename it into place so readers never see half a cache."""
    with atomic_dir(cache_dir) as tmp:  # a refresh replaces the old copy in one rename
        for split in SPLITS:
            write_split(tmp, split, examples[split], encoded[split])
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")


def load_prepared(cache_dir: str | Path) -> PreparedData:
    """Read a cached preparation written by write_cache."""
    cache_dir = Path(cache_dir)
    manifest = json.loads((cache_dir / "manifest.json").read_text(encoding="utf-8"))
    examples, encoded = {}, {}
    for split in SPLITS:
        examples[split], encoded[split] = read_split(cache_dir, split)
    issues = [Issue(**d) for d in manifest["warnings"]]
    return PreparedData(examples, encoded, manifest["label_names"], manifest, issues, True, cache_dir)


def write_split(folder: Path, split: str, examples: list[Example], encoded: list) -> None:
    """`<split>.examples.jsonl` (canonical form plus file and line) and `<split>.encoded.safetensors`."""
    with open(folder / f"{split}.examples.jsonl", "w", encoding="utf-8") as fh:
        for ex in examples:
            fh.write(json.dumps({**ex.canonical(), "file": ex.file, "line": ex.line}, ensure_ascii=False) + "\n")
    if encoded and isinstance(encoded[0], tuple):
        arrays = {**_flatten([c for c, _ in encoded], "chosen."), **_flatten([r for _, r in encoded], "rejected.")}
    else:
        arrays = _flatten(encoded, "")
    save_file(arrays, str(folder / f"{split}.encoded.safetensors"))


def _message(row: list) -> Message:
    """A Message from its canonical list: [role, content, weight] plus [tool calls, tool_call_id] if any."""
    if len(row) == 3:
        return Message(*row)
    return Message(*row[:3], tuple(ToolCall(*c) for c in row[3]), row[4])


def read_split(folder: Path, split: str) -> tuple[list[Example], list]:
    """The examples and encodings written by write_split."""
    examples = []
    for line in (folder / f"{split}.examples.jsonl").read_text(encoding="utf-8").splitlines():
        d = json.loads(line)
        for key in ("messages", "prompt", "chosen", "rejected"):
            d[key] = [_message(m) for m in d[key]]
        examples.append(Example(**d))
    arrays = load_file(str(folder / f"{split}.encoded.safetensors"))
    if "chosen.lengths" in arrays:
        return examples, list(zip(_unflatten(arrays, "chosen."), _unflatten(arrays, "rejected.")))
    return examples, _unflatten(arrays, "")


def _flatten(seqs: list[Encoded], prefix: str) -> dict[str, np.ndarray]:
    """Token ids of many sequences as flat arrays plus lengths (fast to save and to load)."""
    return {
        prefix + "input_ids": np.array([t for e in seqs for t in e.input_ids], dtype=np.int64),
        prefix + "labels": np.array([t for e in seqs for t in e.labels], dtype=np.int64),
        prefix + "lengths": np.array([len(e.input_ids) for e in seqs], dtype=np.int64),
        prefix + "truncated": np.array([e.truncated for e in seqs], dtype=np.int64),
        prefix + "targets": np.array([e.target for e in seqs], dtype=np.int64),
    }


def _unflatten(arrays: dict[str, np.ndarray], prefix: str) -> list[Encoded]:
    """The sequences that _flatten packed, cut back apart by their lengths."""
    ids, labels = arrays[prefix + "input_ids"].tolist(), arrays[prefix + "labels"].tolist()
    cuts, targets = arrays[prefix + "truncated"].tolist(), arrays[prefix + "targets"].tolist()
    out, start = [], 0
    for n, cut, target in zip(arrays[prefix + "lengths"].tolist(), cuts, targets):
        out.append(Encoded(ids[start : start + n], labels[start : start + n], cut, target))
        start += n
    return out
