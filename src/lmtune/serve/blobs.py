"""Uploaded and generated files on disk, named by their file id (never by the client's filename).

Usage:
    name = sanitize_filename(upload.filename)                  # metadata only
    path, size = save_stream(cfg.blob_dir, file_id, name, upload.file, cfg.max_upload_bytes)
    path = save_bytes(cfg.blob_dir, file_id, "step_metrics.csv", data)

A blob is written to a temporary file in the same folder, fsynced, renamed into place and the folder
fsynced, all before the database row exists; so an acknowledged file survives a crash, and a crash
in between leaves only a stray temporary file. The data loaders pick the reader from the suffix, so
the blob keeps a suffix taken from a fixed list when the filename has one (else .jsonl).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO

from lmtune.fsutil import fsync_path

SUFFIXES = (".jsonl.gz", ".json.gz", ".csv.gz", ".txt.gz", ".jsonl", ".json", ".csv", ".parquet", ".txt")
MAX_FILENAME = 255


class TooLarge(Exception):
    """The upload exceeded the size limit."""


def sanitize_filename(name: str | None) -> str:
    """The client's filename as harmless metadata: last path part, no control characters, <= 255 chars."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = "".join(ch for ch in base if ch.isprintable() and ch != "\x00").strip()
    if base in ("", ".", ".."):
        base = "upload.jsonl"
    return base[-MAX_FILENAME:] if len(base) > MAX_FILENAME else base


def blob_suffix(filename: str) -> str:
    """A suffix from the fixed list that the filename ends with, else .jsonl."""
    lower = filename.lower()
    return next((s for s in SUFFIXES if lower.endswith(s)), ".jsonl")


def save_stream(folder: Path, file_id: str, filename: str, source: BinaryIO, limit: int) -> tuple[Path, int]:
    """Copy `source` into the blob of `file_id` durably; raises TooLarge past `limit` bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{file_id}{blob_suffix(filename)}"
    fd, tmp_name = tempfile.mkstemp(prefix=".upload-", dir=folder)
    tmp = Path(tmp_name)
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"file is larger than {limit} bytes")
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, final)
        fsync_path(folder)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final, size


def save_bytes(folder: Path, file_id: str, filename: str, data: bytes) -> Path:
    """Write generated content (e.g. a metrics CSV) as the blob of `file_id`, durably."""
    import io

    path, _ = save_stream(folder, file_id, filename, io.BytesIO(data), limit=len(data) + 1)
    return path


def remove(path: str | Path) -> None:
    """Delete a blob (already gone is fine)."""
    Path(path).unlink(missing_ok=True)
