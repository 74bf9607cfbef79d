"""Fixtures of the `lmtune` command tests: the project root as working directory, one finished tiny run."""

from __future__ import annotations

import pytest

from .cli_helpers import FAST, ROOT, SHARED, run_cli, sets


@pytest.fixture
def in_project_root(monkeypatch):
    """Config paths (../shared/data/...) are relative to the project root."""
    monkeypatch.chdir(ROOT)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """(runs folder, run folder, cache folder) of one finished tiny run, shared by the test_cli*.py files."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED}")
    tmp = tmp_path_factory.mktemp("cli")
    runs, cache = tmp / "runs", tmp / "cache"
    code = run_cli(["train", "configs/tiny.yaml", *sets(f"output.dir={runs}", f"model.cache_dir={cache}", *FAST)])
    assert code == 0
    (run,) = runs.iterdir()
    return runs, run, cache
