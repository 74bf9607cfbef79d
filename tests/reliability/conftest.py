"""Fixtures of the reliability suite: the serve test helpers (a real `lmtune serve` on loopback) reused.

    def test_x(rserver):                 # one server for the folder, projects alpha and beta, no worker
        rserver.client(rserver.keys["alpha"]).files.list()

The Server class, data builders and wait_for live in tests/integration/serve/conftest.py, imported here
as a module of the tests package (pytest's importlib mode gives it the same name, so it loads once).
"""

from __future__ import annotations

import pytest

from ..integration.serve import conftest as serve  # the serve suite's Server helpers, one module for all
Server, wait_for, chat_jsonl, dpo_jsonl, TERMINAL = (serve.Server, serve.wait_for, serve.chat_jsonl,
                                                     serve.dpo_jsonl, serve.TERMINAL)


@pytest.fixture(scope="package")
def rserver(tmp_path_factory):
    """A server without workers (nothing trains), keys for projects alpha and beta in .keys."""
    srv = Server(tmp_path_factory.mktemp("reliability-serve"), start_workers=False, max_tokens_limit=32)
    srv.start()
    srv.keys = {"alpha": srv.key("alpha"), "beta": srv.key("beta")}
    yield srv
    srv.stop()


# The serve suite's factory of private servers (stopped after each test), under its own name.
make_server = serve.make_server


@pytest.fixture(scope="package")
def chat_data() -> bytes:
    """16 chat examples in OpenAI's fine-tuning format."""
    return chat_jsonl()
