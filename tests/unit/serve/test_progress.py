"""Job progress as OpenAI reports it: metric events with step/total_steps, validation loss and token
accuracy at every evaluation, checkpoint metrics, the result CSV's columns and estimated_finish."""

from __future__ import annotations

import csv
import io
import json
import time

import pytest

from lmtune.serve.jobs import estimated_finish
from lmtune.serve.progress import metrics_csv, record_progress
from lmtune.serve.store import Store, now


def _train(step: int, loss: float, acc: float) -> dict:
    return {"kind": "train", "step": step, "total_steps": 4, "epoch": step / 2, "loss": loss, "lr": 1e-3,
            "grad_norm": 1.0, "tokens": 10, "tokens_per_s": 100.0, "train_token_accuracy": acc}


def _eval(step: int, loss: float, acc: float) -> dict:
    return {"kind": "eval", "step": step, "eval_loss": loss, "eval_perplexity": 2.0, "eval_token_accuracy": acc}


@pytest.fixture
def job(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    row = {"id": "ftjob-1", "project": "p", "model": "tiny-llama", "training_file": "file-1", "status": "running",
           "created_at": now(), "hyperparameters": "{}", "method": "{}", "seed": 0}
    store.insert("jobs", row)
    return store, store.one("SELECT * FROM jobs WHERE id=?", ("ftjob-1",)), tmp_path / "run"


def _write(run_dir, records):
    run_dir.mkdir(exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def _metrics(store):
    return [e["data"] for e in store.all("SELECT data FROM events WHERE type='metrics' ORDER BY seq")]


def test_a_step_waits_for_its_eval_record_then_reports_validation_loss_and_accuracy(job):
    store, row, run_dir = job
    # The loop has written step 2's train record but not yet its eval record: step 2 must wait.
    _write(run_dir, [_train(1, 2.0, 0.1), _train(2, 1.5, 0.2)])
    record_progress(store, row, run_dir)
    assert [d["step"] for d in _metrics(store)] == [1]
    _write(run_dir, [_train(1, 2.0, 0.1), _train(2, 1.5, 0.2), _eval(2, 1.7, 0.25), _train(3, 1.2, 0.3)])
    record_progress(store, row, run_dir)
    step2 = _metrics(store)[1]
    assert step2 == {"step": 2, "total_steps": 4, "train_loss": 1.5, "train_mean_token_accuracy": 0.2,
                     "valid_loss": 1.7, "valid_mean_token_accuracy": 0.25, "full_valid_loss": 1.7,
                     "full_valid_mean_token_accuracy": 0.25, "learning_rate": 1e-3}
    messages = [e["message"] for e in store.all("SELECT message FROM events WHERE type='metrics' ORDER BY seq")]
    assert messages == ["Step 1/4: training loss=2.0000", "Step 2/4: training loss=1.5000, validation loss=1.7000"]
    # The finished run records its last step too, and a checkpoint carries the step's metrics.
    (run_dir / "checkpoints" / "step-000003").mkdir(parents=True)
    (run_dir / "checkpoints" / "step-000003" / "state.json").write_text("{}")
    record_progress(store, row, run_dir, finished=True)
    assert [d["step"] for d in _metrics(store)] == [1, 2, 3] and row["metrics_step"] == 3
    ckpt = store.one("SELECT * FROM checkpoints")
    assert ckpt["model_name"] == "ft:tiny-llama:p::1:ckpt-step-3"
    assert ckpt["metrics"]["train_loss"] == 1.2 and ckpt["metrics"]["train_mean_token_accuracy"] == 0.3


def test_result_csv_has_openai_columns_first(job):
    _, _, run_dir = job
    _write(run_dir, [_train(1, 2.0, 0.1), _train(2, 1.5, 0.2), _eval(2, 1.7, float("nan"))])
    rows = list(csv.DictReader(io.StringIO(metrics_csv(run_dir).decode())))
    assert list(rows[0])[:5] == ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
    assert rows[0]["train_accuracy"] == "0.1" and rows[0]["valid_loss"] == ""
    # NaN (an empty validation set) is left empty, not written as a number no CSV reader expects.
    assert rows[1]["valid_loss"] == "1.7" and rows[1]["valid_mean_token_accuracy"] == ""


def test_estimated_finish_from_remaining_steps_and_the_workers_step_rate(job):
    store, row, run_dir = job
    assert estimated_finish(store, row) is None  # nothing measured yet
    _write(run_dir, [_train(1, 2.0, 0.1), _train(2, 1.5, 0.2)])
    record_progress(store, row, run_dir)
    store.execute("INSERT INTO workers (idx, pid, heartbeat, job_id, steps_per_second) VALUES (0, 1, ?, ?, 0.5)",
                  (time.time(), row["id"]))
    row = store.one("SELECT * FROM jobs WHERE id=?", (row["id"],))
    # 3 of 4 steps left at 0.5 steps/s: about 6 s from now.
    assert estimated_finish(store, row) - now() in (6, 7)
    assert estimated_finish(store, {**row, "status": "succeeded"}) is None
