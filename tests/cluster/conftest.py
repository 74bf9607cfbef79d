"""Fixtures of the cluster tests: one database of each backend (SQLite file, real PostgreSQL server)."""

from __future__ import annotations

import pytest

from lmtune.serve.store import Store

from ..integration.serve import conftest as serve  # the serve suite's Server helpers, one module for all

make_server = serve.make_server  # Server(tmp_path / name, **settings), stopped after the test


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
    return serve.chat_jsonl()
