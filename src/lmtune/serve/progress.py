"""What a running job's folder says, copied into the database: step metrics, checkpoints, the result.

Usage:
    record_progress(store, job, run_dir)            # new metrics.jsonl steps -> events, new checkpoints
    finalize_success(store, cfg, job, run_dir)      # metrics CSV file, fine-tuned model, status succeeded
    fail_job(store, job_id, "training_failed", message)

The worker calls these from its polling loop; run_training writes the files (metrics.jsonl with one
JSON object per line, checkpoints/step-NNNNNN folders), so nothing here touches the training process.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from lmtune.serve.blobs import save_bytes
from lmtune.serve.jobs import fine_tuned_name
from lmtune.serve.store import Store, encode, new_id, now
from lmtune.train.checkpoint import list_checkpoints
from lmtune.train.metrics_log import read_metrics

# OpenAI's result file columns first (its CSV names train accuracy `train_accuracy`), then lmtune's own.
CSV_COLUMNS = ("step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy",
               "full_valid_loss", "full_valid_mean_token_accuracy", "epoch", "learning_rate", "grad_norm", "tokens",
               "train_reward_mean", "valid_reward_mean")
# The keys of OpenAI's metrics (events' data and checkpoints' metrics), each from its metrics.jsonl record.
# Reinforcement (GRPO) steps add the mean reward of the step's sampled completions, and of the validation's.
TRAIN_KEYS = {"train_loss": "loss", "train_mean_token_accuracy": "train_token_accuracy",
              "train_reward_mean": "train_reward"}
EVAL_KEYS = {"valid_loss": "eval_loss", "valid_mean_token_accuracy": "eval_token_accuracy",
             # lmtune validates on the whole validation set at every evaluation: valid and full_valid agree.
             "full_valid_loss": "eval_loss", "full_valid_mean_token_accuracy": "eval_token_accuracy",
             "valid_reward_mean": "eval_reward"}
METRIC_KEYS = ("step", *TRAIN_KEYS, *EVAL_KEYS)


def _number(value: Any) -> float | None:
    """A finite float, or None (JSON has no NaN: an empty validation set logs NaN)."""
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _step_metrics(records: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Per step: the train record's loss and token accuracy and the eval record's, merged."""
    by_step: dict[int, dict[str, Any]] = {}
    for r in records:
        row = by_step.setdefault(int(r.get("step", 0)), {"step": int(r.get("step", 0))})
        if r.get("kind") == "train":
            row.update({k: _number(r.get(src)) for k, src in TRAIN_KEYS.items()})
            row.update(learning_rate=r.get("lr"), epoch=r.get("epoch"), grad_norm=r.get("grad_norm"),
                       tokens=r.get("tokens"), total_steps=r.get("total_steps"))
        elif r.get("kind") == "eval" and "eval_loss" in r:
            row.update({k: _number(r.get(src)) for k, src in EVAL_KEYS.items()})
    for row in by_step.values():
        row["train_accuracy"] = row.get("train_mean_token_accuracy")
    return by_step


def _complete_steps(by_step: dict[int, dict[str, Any]], finished: bool) -> list[int]:
    """Steps whose records are all written: the loop writes a step's train record, then its eval record,
    so a step is complete once a later step has a record (or the run is over)."""
    logged = sorted(s for s, m in by_step.items() if "train_loss" in m or "valid_loss" in m)
    return logged if finished else logged[:-1]


def _event_data(m: dict[str, Any], total: int | None) -> dict[str, Any]:
    data = {k: m[k] for k in METRIC_KEYS if m.get(k) is not None}
    if total:
        data["total_steps"] = total
    if m.get("learning_rate") is not None:
        data["learning_rate"] = m["learning_rate"]
    return data


def _event_message(m: dict[str, Any], total: int | None) -> str:
    """OpenAI's wording: "Step 5/88: training loss=0.4780" (plus validation loss at evaluations)."""
    text = f"Step {m['step']}/{total}" if total else f"Step {m['step']}"
    parts = [f"training loss={m['train_loss']:.4f}"] if m.get("train_loss") is not None else []
    parts += [f"validation loss={m['valid_loss']:.4f}"] if m.get("valid_loss") is not None else []
    parts += [f"reward={m['train_reward_mean']:.4f}"] if m.get("train_reward_mean") is not None else []
    parts += [f"validation reward={m['valid_reward_mean']:.4f}"] if m.get("valid_reward_mean") is not None else []
    return f"{text}: {', '.join(parts)}"


def _total_steps(by_step: dict[int, dict[str, Any]]) -> int | None:
    return next((m["total_steps"] for _, m in sorted(by_step.items(), reverse=True) if m.get("total_steps")), None)


def record_progress(store: Store, job: dict[str, Any], run_dir: Path, finished: bool = False) -> None:
    """Turn complete metrics.jsonl steps after job.metrics_step into metrics events, and new checkpoints
    into rows; `finished` (the run is over) also records the last step.

    Each batch of events commits together with the new metrics_step (and each checkpoint with its
    event), so a crash in between can neither lose nor repeat a step: a resumed run logs the steps
    after its checkpoint again, and those already recorded are skipped.
    """
    by_step = _step_metrics(read_metrics(run_dir / "metrics.jsonl"))
    total = _total_steps(by_step)
    new = [s for s in _complete_steps(by_step, finished) if s > job["metrics_step"]]
    if new:
        with store.tx() as db:
            for step in new:
                m = by_step[step]
                store.add_event(job["id"], _event_message(m, total), kind="metrics", data=_event_data(m, total),
                                db=db)
            db.execute("UPDATE jobs SET metrics_step=? WHERE id=?", (new[-1], job["id"]))
        job["metrics_step"] = new[-1]
    known = {r["step"] for r in store.all("SELECT step FROM checkpoints WHERE job_id=?", (job["id"],))}
    name = fine_tuned_name(job["model"], job["project"], job["suffix"], job["id"])
    for folder in list_checkpoints(run_dir / "checkpoints"):
        step = int(folder.name.split("-")[1])
        if step in known:
            continue
        m = by_step.get(step, {})
        metrics = {k: m.get(k) for k in METRIC_KEYS} | {"step": step}
        with store.tx() as db:
            db.execute("INSERT INTO checkpoints (id, job_id, created_at, step, metrics, model_name) "
                       "VALUES (?, ?, ?, ?, ?, ?)",
                       (new_id("ftckpt"), job["id"], now(), step, encode(metrics), f"{name}:ckpt-step-{step}"))
            store.add_event(job["id"], f"Checkpoint created at step {step}", db=db)


def metrics_csv(run_dir: Path) -> bytes:
    """The result file: one CSV row per logged step, OpenAI's columns first (empty where not measured)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for step, row in sorted(_step_metrics(read_metrics(run_dir / "metrics.jsonl")).items()):
        if "train_loss" in row or "valid_loss" in row:
            writer.writerow(row)
    return out.getvalue().encode("utf-8")


def finalize_success(store: Store, blob_dir: Path, job: dict[str, Any], run_dir: Path) -> str:
    """Record the finished job: metrics CSV file, trained tokens, fine-tuned model; returns the model id."""
    record_progress(store, job, run_dir, finished=True)
    records = read_metrics(run_dir / "metrics.jsonl")
    tokens = sum(int(r.get("tokens") or 0) for r in records if r.get("kind") == "train")
    file_id = new_id("file")
    data = metrics_csv(run_dir)
    path = save_bytes(blob_dir, file_id, "step_metrics.csv", data)
    model_id = fine_tuned_name(job["model"], job["project"], job["suffix"], job["id"])
    created = now()
    with store.tx() as db:
        db.execute("INSERT INTO files (id, project, filename, purpose, bytes, created_at, path) VALUES (?,?,?,?,?,?,?)",
                   (file_id, job["project"], "step_metrics.csv", "fine-tune-results", len(data), created, str(path)))
        db.execute("INSERT INTO models (id, project, created_at, base, job_id, path) VALUES (?,?,?,?,?,?) "
                   "ON CONFLICT DO NOTHING",
                   (model_id, job["project"], created, job["model"], job["id"], str(run_dir)))
        db.execute("UPDATE jobs SET status='succeeded', finished_at=?, fine_tuned_model=?, trained_tokens=?, "
                   "result_files=?, run_dir=? WHERE id=?",
                   (created, model_id, tokens, encode([file_id]), str(run_dir), job["id"]))
        store.add_event(job["id"], f"New fine-tuned model created: {model_id}", db=db)
        store.add_event(job["id"], "The job has successfully completed", db=db)
    return model_id


def fail_job(store: Store, job_id: str, code: str, message: str, param: str | None = None) -> None:
    """Mark a job failed with OpenAI's error object and log the reason as an error event."""
    error = {"code": code, "message": message, "param": param}
    with store.tx() as db:
        changed = db.execute("UPDATE jobs SET status='failed', finished_at=?, error=? WHERE id=? AND status NOT IN "
                             "('succeeded', 'failed', 'cancelled')", (now(), encode(error), job_id)).rowcount
        if changed:
            store.add_event(job_id, f"The job failed: {message}", level="error", db=db)
