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
from pathlib import Path
from typing import Any

from lmtune.serve.blobs import save_bytes
from lmtune.serve.jobs import fine_tuned_name
from lmtune.serve.store import Store, encode, new_id, now
from lmtune.train.checkpoint import list_checkpoints
from lmtune.train.metrics_log import read_metrics

CSV_COLUMNS = ("step", "epoch", "train_loss", "valid_loss", "learning_rate", "grad_norm", "tokens")


def _step_metrics(records: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Per step: the train record's loss and the eval record's loss, merged."""
    by_step: dict[int, dict[str, Any]] = {}
    for r in records:
        row = by_step.setdefault(int(r.get("step", 0)), {"step": int(r.get("step", 0))})
        if r.get("kind") == "train":
            row.update(train_loss=r.get("loss"), learning_rate=r.get("lr"), epoch=r.get("epoch"),
                       grad_norm=r.get("grad_norm"), tokens=r.get("tokens"))
            if "train_reward" in r:  # GRPO: the mean reward of the step's sampled completions
                row["train_reward_mean"] = r["train_reward"]
        elif r.get("kind") == "eval" and "eval_loss" in r:
            row["valid_loss"] = r["eval_loss"]
            if "eval_reward" in r:
                row["valid_reward_mean"] = r["eval_reward"]
    return by_step


def record_progress(store: Store, job: dict[str, Any], run_dir: Path, final: bool = False) -> None:
    """Turn metrics.jsonl steps after job.metrics_step into metrics events, and new checkpoints into rows.

    Each batch of events commits together with the new metrics_step (and each checkpoint with its
    event), so a crash in between can neither lose nor repeat a step: a resumed run logs the steps
    after its checkpoint again, and those already recorded are skipped.
    """
    by_step = _step_metrics(read_metrics(run_dir / "metrics.jsonl"))
    last = job["metrics_step"]
    # The newest step waits for the next record (its evaluation, if it has one, comes right after its
    # train record) unless the run is over, so its event carries the validation figures too.
    newest = max((s for s, m in by_step.items() if "train_loss" in m), default=0)
    new = sorted(s for s, m in by_step.items() if s > last and "train_loss" in m
                 and (s < newest or final or "valid_loss" in m))
    if new:
        with store.tx() as db:
            for step in new:
                m = by_step[step]
                data = {"step": step, "train_loss": m["train_loss"], "learning_rate": m.get("learning_rate")}
                data.update({k: m[k] for k in ("valid_loss", "train_reward_mean", "valid_reward_mean") if k in m})
                reward = f", reward={m['train_reward_mean']:.4f}" if "train_reward_mean" in m else ""
                store.add_event(job["id"], f"Step {step}: training loss={m['train_loss']:.4f}{reward}", kind="metrics",
                                data=data, db=db)
            db.execute("UPDATE jobs SET metrics_step=? WHERE id=?", (new[-1], job["id"]))
        job["metrics_step"] = new[-1]
    known = {r["step"] for r in store.all("SELECT step FROM checkpoints WHERE job_id=?", (job["id"],))}
    name = fine_tuned_name(job["model"], job["project"], job["suffix"], job["id"])
    for folder in list_checkpoints(run_dir / "checkpoints"):
        step = int(folder.name.split("-")[1])
        if step in known:
            continue
        m = by_step.get(step, {})
        metrics = {"step": step, "train_loss": m.get("train_loss"), "valid_loss": m.get("valid_loss"),
                   "full_valid_loss": m.get("valid_loss"),
                   **{k: m[k] for k in ("train_reward_mean", "valid_reward_mean") if k in m}}
        with store.tx() as db:
            db.execute("INSERT INTO checkpoints (id, job_id, created_at, step, metrics, model_name) "
                       "VALUES (?, ?, ?, ?, ?, ?)",
                       (new_id("ftckpt"), job["id"], now(), step, encode(metrics), f"{name}:ckpt-step-{step}"))
            store.add_event(job["id"], f"Checkpoint created at step {step}", db=db)


def metrics_csv(run_dir: Path) -> bytes:
    """The result file: one CSV row per step with the losses, learning rate and tokens."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for step, row in sorted(_step_metrics(read_metrics(run_dir / "metrics.jsonl")).items()):
        if "train_loss" in row:
            writer.writerow(row)
    return out.getvalue().encode("utf-8")


def finalize_success(store: Store, blob_dir: Path, job: dict[str, Any], run_dir: Path) -> str:
    """Record the finished job: metrics CSV file, trained tokens, fine-tuned model; returns the model id."""
    record_progress(store, job, run_dir, final=True)
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
        db.execute("INSERT OR IGNORE INTO models (id, project, created_at, base, job_id, path) VALUES (?,?,?,?,?,?)",
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
