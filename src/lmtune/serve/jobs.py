"""Fine-tuning jobs: the RunConfig a job trains with, file validation, status changes and views.

Usage:
    hp = resolve_hyperparameters(body, serve_cfg)          # "auto" -> the documented defaults
    cfg = build_run_config(job, serve_cfg, train_path, valid_path)   # a lmtune RunConfig
    error = validate_job_files(store, job)                  # None, or {"code", "message", "param"}
    transition(store, job_id, "cancelled", CANCELLABLE)     # atomic: only from the listed states
    job_view(row)                                           # the fine_tuning.job object

Status: validating_files -> queued -> running -> succeeded | failed | cancelled, and running/queued
-> paused -> queued (resume). The jobs table is the queue: queued jobs run oldest first.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from lmtune.config import RunConfig
from lmtune.serve.config import ServeConfig
from lmtune.serve.schemas import CreateJob
from lmtune.serve.store import Store, now

BASE_LEARNING_RATE = 2e-4  # learning_rate = BASE_LEARNING_RATE * learning_rate_multiplier
CANCELLABLE = ("validating_files", "queued", "running", "paused")
PAUSABLE = ("queued", "running")
ACTIVE = ("validating_files", "queued", "running", "paused")
MAX_ISSUES_SHOWN = 5
# Reinforcement: "auto" values, and completions sampled per prompt = RFT_GROUP * compute_multiplier.
RFT_DEFAULTS = {"eval_interval": 10, "eval_samples": 32, "compute_multiplier": 1.0}
RFT_GROUP = 4


def resolve_hyperparameters(body: CreateJob, cfg: ServeConfig) -> dict[str, Any]:
    """The job's hyperparameters with every "auto" replaced by the server default."""
    given = body.hyperparameters_for().model_dump()
    defaults = {"n_epochs": cfg.default_n_epochs, "batch_size": cfg.default_batch_size,
                "learning_rate_multiplier": cfg.default_learning_rate_multiplier, "beta": cfg.default_beta,
                **RFT_DEFAULTS}
    return {k: defaults[k] if v == "auto" else v for k, v in given.items()}


def method_view(method_type: str, hp: dict[str, Any], grader: dict[str, Any] | None = None) -> dict[str, Any]:
    """The job's `method` object: {type, supervised|dpo|reinforcement: {hyperparameters, grader?}}."""
    inner: dict[str, Any] = {"hyperparameters": hp}
    if grader is not None:
        inner["grader"] = grader
    return {"type": method_type, method_type: inner}


def fine_tuned_name(base: str, project: str, suffix: str | None, job_id: str) -> str:
    """ft:{base}:{owner}:{suffix}:{id}, as OpenAI names fine-tuned models."""
    return f"ft:{Path(base).name}:{project}:{suffix or ''}:{job_id.removeprefix('ftjob-')}"


def build_run_config(job: dict[str, Any], cfg: ServeConfig, train_path: str, valid_path: str | None) -> RunConfig:
    """The RunConfig that trains `job` (raises pydantic's ValidationError on a bad value)."""
    method_type = job["method"]["type"]
    hp = job["method"][method_type]["hyperparameters"]
    dpo = method_type == "dpo"
    tree: dict[str, Any] = {
        # Converted base models are shared (~/.cache/lmtune by default: no user data). Prepared data and
        # baselines (copies of the examples) stay in the project's own cache, inside the data folder,
        # where deleting the file can find them (lmtune.serve.purge).
        "model": {"name": job["model"]},
        "data": {
            "cache_dir": str(cfg.project_cache(job["project"])),
            "train_file": train_path,
            "validation_file": valid_path,
            "format": "preference" if dpo else "auto",
            "max_seq_len": cfg.max_seq_len,
            # A service job should train on what it was given: near duplicates across the split warn.
            "leakage": "warn",
            "split": {"validation": 0.1, "test": 0.1 if cfg.eval_at_end else 0.0},
        },
        "method": {"task": "dpo" if dpo else "sft", "peft": "lora"},
        "training": {
            "epochs": hp["n_epochs"],
            "batch_size": hp["batch_size"],
            "learning_rate": BASE_LEARNING_RATE * hp["learning_rate_multiplier"],
            "seed": job["seed"],
            "save_every": cfg.checkpoint_every,
            "keep_checkpoints": cfg.keep_checkpoints,
            "progress_bar": False,
            "num_threads": cfg.training_threads,
            "early_stopping": {"patience": None},  # train the epochs asked for, as OpenAI does
        },
        "eval": {"at_end": cfg.eval_at_end},
        "output": {"dir": str(cfg.runs_dir), "name": job["id"]},
    }
    if dpo:
        tree["method"]["dpo"] = {"beta": hp["beta"]}
    if method_type == "reinforcement":
        _reinforcement(tree, job["method"]["reinforcement"]["grader"], hp, cfg.reinforcement_max_new_tokens)
    return RunConfig.model_validate(tree)


def _reinforcement(tree: dict[str, Any], grader: dict[str, Any], hp: dict[str, Any], max_new_tokens: int) -> None:
    """GRPO with the grader as the reward: OpenAI's RFT hyperparameters mapped onto lmtune's (docs/serve.md)."""
    tree["method"] = {"task": "grpo", "peft": "lora", "grpo": {
        "grader": grader, "group_size": max(2, round(RFT_GROUP * hp["compute_multiplier"])),
        "max_new_tokens": max_new_tokens}}
    tree["data"]["format"] = "messages"
    tree["data"]["max_validation_examples"] = hp["eval_samples"]
    tree["data"]["split"] = {"validation": 0.1, "test": 0.0}
    tree["training"]["eval_every"] = hp["eval_interval"]
    # The kept weights are those of the best validation reward (GRPO's loss says nothing of quality).
    tree["training"]["early_stopping"] = {"metric": "eval_reward", "mode": "max", "patience": None}
    # The end-of-run comparison scores text metrics against a reference answer; graded data has none.
    tree["eval"]["at_end"] = False


def _issue_lines(report: Any, filename: str) -> list[str]:
    # The blob path is the server's business: show the name the client uploaded instead.
    return [str(dataclasses.replace(issue, file=filename)) for issue in report.errors]


def validate_job_files(store: Store, job: dict[str, Any]) -> dict[str, str] | None:
    """Check the job's training (and validation) file with lmtune's validator (reinforcement files: against
    the grader's templates); an error dict or None."""
    from lmtune.data.validate import validate_file
    from lmtune.graders.items import check_items

    dpo = job["method"]["type"] == "dpo"
    reinforcement = job["method"]["type"] == "reinforcement"
    for param in ("training_file", "validation_file"):
        if not job[param]:
            continue
        row = store.one("SELECT * FROM files WHERE id=?", (job[param],))
        if row is None or row["deleted"] or not Path(row["path"]).exists():
            return {"code": f"invalid_{param}", "param": param, "message": f"{param} {job[param]} no longer exists"}
        if reinforcement:
            lines = [str(i) for i in check_items(row["path"], job["method"]["reinforcement"]["grader"], row["filename"])]
            kinds: set[str] = set()
        else:
            report = validate_file(row["path"], fmt="preference" if dpo else "auto")
            lines = _issue_lines(report, row["filename"])
            kinds = set(report.stats.get("kinds", {}))
        if not lines and not dpo and "preference" in kinds:
            lines = [f"{row['filename']}: holds preference pairs; train them with method type 'dpo'"]
        if not lines and not reinforcement and report.n_examples == 0:
            lines = [f"{row['filename']}: no examples"]
        if lines:
            shown = lines[:MAX_ISSUES_SHOWN]
            more = len(lines) - len(shown)
            text = "; ".join(shown) + (f" (and {more} more errors)" if more else "")
            return {"code": f"invalid_{param}", "param": param,
                    "message": f"The {param.replace('_', ' ')} has {len(lines)} errors: {text}"}
    return None


def transition(store: Store, job_id: str, to: str, allowed_from: tuple[str, ...], **fields: Any) -> bool:
    """Move a job to status `to` if it is in one of `allowed_from`; True when it moved."""
    sets = ", ".join(["status=?", *(f"{k}=?" for k in fields)])
    marks = ", ".join("?" for _ in allowed_from)
    changed = store.execute(f"UPDATE jobs SET {sets} WHERE id=? AND status IN ({marks})",  # noqa: S608
                            (to, *fields.values(), job_id, *allowed_from))
    return changed > 0


def claim_next(store: Store, worker: int) -> dict[str, Any] | None:
    """Atomically take the oldest queued job for `worker` (status running), or None."""
    with store.tx() as db:
        row = db.execute("SELECT id FROM jobs WHERE status='queued' ORDER BY seq LIMIT 1").fetchone()
        if row is None:
            return None
        db.execute("UPDATE jobs SET status='running', worker=?, started_at=COALESCE(started_at, ?) WHERE id=?",
                   (worker, now(), row["id"]))
    return store.one("SELECT * FROM jobs WHERE id=?", (row["id"],))


def job_view(row: dict[str, Any]) -> dict[str, Any]:
    """The fine_tuning.job object of a jobs row."""
    method = row["method"]
    hp = dict(method[method["type"]]["hyperparameters"])
    return {
        "id": row["id"],
        "object": "fine_tuning.job",
        "created_at": row["created_at"],
        "error": row["error"],
        "fine_tuned_model": row["fine_tuned_model"],
        "finished_at": row["finished_at"],
        "hyperparameters": {k: hp[k] for k in ("n_epochs", "batch_size", "learning_rate_multiplier")},
        "model": row["model"],
        "organization_id": row["project"],
        "result_files": row["result_files"] or [],
        "seed": row["seed"],
        "status": row["status"],
        "trained_tokens": row["trained_tokens"],
        "training_file": row["training_file"],
        "validation_file": row["validation_file"],
        "estimated_finish": None,
        "integrations": [],
        "metadata": row["metadata"],
        "method": method,
        "user_provided_suffix": row["suffix"],
    }


def event_view(row: dict[str, Any]) -> dict[str, Any]:
    """The fine_tuning.job.event object of an events row."""
    return {"id": row["id"], "object": "fine_tuning.job.event", "created_at": row["created_at"],
            "level": row["level"], "message": row["message"], "type": row["type"], "data": row["data"]}


def checkpoint_view(row: dict[str, Any]) -> dict[str, Any]:
    """The fine_tuning.job.checkpoint object of a checkpoints row."""
    return {"id": row["id"], "object": "fine_tuning.job.checkpoint", "created_at": row["created_at"],
            "fine_tuned_model_checkpoint": row["model_name"], "fine_tuning_job_id": row["job_id"],
            "metrics": row["metrics"], "step_number": row["step"]}
