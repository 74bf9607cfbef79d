"""Fixtures of the cluster tests: one database of each backend (SQLite file, real PostgreSQL server)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from lmtune.serve.store import Store

_SERVE_CONFTEST = Path(__file__).resolve().parents[1] / "integration" / "serve" / "conftest.py"


def _serve_helpers():
    """The serve suite's Server helpers (a conftest is not importable by name under importlib mode)."""
    name = "lmtune_tests_serve_helpers"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _SERVE_CONFTEST)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


make_server = _serve_helpers().make_server  # Server(tmp_path / name, **settings), stopped after the test


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path) -> str:
    """A fresh database of each backend."""
    if request.param == "sqlite":
        return str(tmp_path / "lmtune.db")
    return request.getfixturevalue("fresh_postgres")


@pytest.fixture
def store(store_url) -> Store:
    return Store(store_url)


@pytest.fixture(scope="package")
def chat_data() -> bytes:
    """16 chat examples in OpenAI's fine-tuning format."""
    return _serve_helpers().chat_jsonl()
