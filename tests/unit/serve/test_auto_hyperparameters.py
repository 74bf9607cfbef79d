""""auto" hyperparameters resolve from the counted training file, by the rules docs/serve.md documents."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lmtune.serve.config import ServeConfig
from lmtune.serve.jobs import job_view, method_view, record_hyperparameters, resolve_hyperparameters, validate_job_files
from lmtune.serve.store import Store, encode, now

DOCS = Path(__file__).resolve().parents[3] / "docs" / "serve.md"
AUTO = {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"}


def documented_rows() -> dict[int, dict[str, float]]:
    """The worked examples of docs/serve.md's "auto" table: training examples -> resolved values."""
    rows = {}
    for line in DOCS.read_text().splitlines():
        m = re.fullmatch(r"\| ([\d,]+) training examples \| (\d+) \| (\d+) \| ([\d.]+) \|", line.strip())
        if m:
            rows[int(m[1].replace(",", ""))] = {"n_epochs": int(m[2]), "batch_size": int(m[3]),
                                                 "learning_rate_multiplier": float(m[4])}
    return rows


def write_chats(path: Path, n: int) -> None:
    with open(path, "w") as fh:
        for i in range(n):  # distinct, so deduplication keeps every line
            fh.write(json.dumps({"messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                                              {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."}]}) + "\n")


def add_job(store: Store, path: Path, hp: dict, kind: str = "supervised") -> dict:
    file_id, job_id = f"file-{path.stem}", f"ftjob-{path.stem}"
    store.insert("files", {"id": file_id, "project": "p", "filename": path.name, "purpose": "fine-tune",
                           "bytes": path.stat().st_size, "created_at": now(), "path": str(path)})
    store.insert("jobs", {"id": job_id, "project": "p", "model": "tiny-llama", "training_file": file_id,
                          "status": "validating_files", "created_at": now(), "hyperparameters": encode(hp),
                          "method": encode(method_view(kind, hp)), "seed": 0})
    return store.one("SELECT * FROM jobs WHERE id=?", (job_id,))


def test_a_50_line_and_a_50000_line_file_resolve_as_documented(tmp_path):
    documented = documented_rows()
    assert set(documented) >= {50, 50_000}, "docs/serve.md lost its table of worked auto examples"
    store, cfg = Store(tmp_path / "lmtune.db"), ServeConfig(data_dir=str(tmp_path))
    shown = {}
    for n in (50, 50_000):
        write_chats(tmp_path / f"train{n}.jsonl", n)
        job = add_job(store, tmp_path / f"train{n}.jsonl", AUTO)
        assert job_view(job)["hyperparameters"] == AUTO  # unresolved until the file is counted
        error, counted = validate_job_files(store, job)
        assert error is None and counted == n
        record_hyperparameters(store, job, cfg, counted)
        shown[n] = job_view(store.one("SELECT * FROM jobs WHERE id=?", (job["id"],)))["hyperparameters"]
        assert shown[n] == pytest.approx(documented[n])
    assert shown[50] != shown[50_000]


@pytest.mark.parametrize("n", [1, 10, 50, 500, 5_000, 50_000, 10**6])
def test_every_rule_keeps_values_in_range_and_the_examples_seen_bounded(n):
    hp = resolve_hyperparameters({**AUTO, "beta": "auto"}, ServeConfig(), n)
    assert 1 <= hp["n_epochs"] <= 25 and 1 <= hp["batch_size"] <= ServeConfig().default_batch_size
    assert 0 < hp["learning_rate_multiplier"] <= ServeConfig().default_learning_rate_multiplier
    assert hp["beta"] == ServeConfig().default_beta
    seen = n * hp["n_epochs"]
    assert seen >= 100 or hp["n_epochs"] == 25  # small files get more passes
    assert seen <= 25_000 or hp["n_epochs"] == 1  # large files fewer


def test_numbers_given_by_the_client_are_kept():
    given = {"n_epochs": 7, "batch_size": 2, "learning_rate_multiplier": 0.5}
    assert resolve_hyperparameters(given, ServeConfig(), 50_000) == given
    # A given batch size still scales an "auto" learning rate.
    mixed = resolve_hyperparameters({**AUTO, "batch_size": 2}, ServeConfig(), 50_000)
    assert mixed["batch_size"] == 2 and mixed["learning_rate_multiplier"] == pytest.approx(0.5)


def test_every_worked_example_of_the_docs_holds():
    documented = documented_rows()
    assert len(documented) >= 5
    for n, values in documented.items():
        assert resolve_hyperparameters(AUTO, ServeConfig(), n) == pytest.approx(values), n
