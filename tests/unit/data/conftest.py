"""Fixtures for the data tests: the shared real data sets and a writer of small files in tmp_path."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

# The real data sets live next to the project (../shared/data), never inside it.
SHARED_DATA = Path(os.environ.get("LMTUNE_SHARED_DATA", Path(__file__).resolve().parents[3].parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """The folder of real data sets; tests that need it are skipped where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """write(name, content) -> path: str/bytes as is, a list as JSON lines; `.gz` names are gzipped."""

    def _write(name: str, content: str | bytes | list) -> Path:
        if isinstance(content, list):
            content = "".join(json.dumps(r) + "\n" for r in content)
        data = content.encode("utf-8") if isinstance(content, str) else content
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
        return path

    return _write
