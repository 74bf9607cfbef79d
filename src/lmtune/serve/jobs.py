"""Fine-tuning jobs: the RunConfig a job trains with, file validation, status changes and views.

Usage:
    hp = requested_hyperparameters(body)                    # as asked, "auto" kept until validation
    hp = resolve_hyperparameters(hp, serve_cfg, n_examples)  # "auto" -> the documented rules (serve/auto.py)
    cfg = build_run_config(job, serve_cfg, train_path, valid_path)   # a lmtune RunConfig
    error, n = validate_job_files(store, job)               # None or {"code", "message", "param"}; examples
    transition(store, job_id, "cancelled", CANCELLABLE)     # atomic: only from the listed states
    job_view(row)                                           # the fine_tuning.job object

Status: validating_files -> queued -> running -> succeeded | failed | cancelled, and running/queued
-> paused -> queued (resume). The jobs table is the queue: claim_next takes queued jobs fairly
across projects, oldest first within a project.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from lmtune.config import RunConfig
from lmtune.serve.auto import auto_batch_size, auto_epochs, scaled_multiplier
from lmtune.serve.config import ServeConfig
from lmtune.serve.schemas import CreateJob
from lmtune.serve.store import Store, encode, now

BASE_LEARNING_RATE = 2e-4  # learning_rate = BASE_LEARNING_RATE * learning_rate_multiplier
CANCELLABLE = ("validating_files", "queued", "running", "paused")
PAUSABLE = ("queued", "running")
ACTIVE = ("validating_files", "queued", "running", "paused")
MAX_ISSUES_SHOWN = 5
# Reinforcement: "auto" values, and completions sampled per prompt = RFT_GROUP * compute_multiplier.
RFT_DEFAULTS = {"eval_interval": 10, "eval_samples": 32, "compute_multiplier": 1.0}
RFT_GROUP = 4


def requested_hyperparameters(body: CreateJob) -> dict[str, Any]:
    """The hyperparameters as the client asked, "auto" kept until the files are validated."""
    return body.hyperparameters_for().model_dump()


def resolve_hyperparameters(given: dict[str, Any], cfg: ServeConfig, n_examples: int) -> dict[str, Any]:
    """`given` with each "auto" replaced by its rule (serve/auto.py) for a training file of n_examples."""
    hp = dict(given)
    if hp.get("n_epochs") == "auto":
        hp["n_epochs"] = auto_epochs(n_examples, cfg.default_n_epochs)
    if hp.get("batch_size") == "auto":
        hp["batch_size"] = auto_batch_size(n_examples, cfg.default_batch_size)
    if hp.get("learning_rate_multiplier") == "auto":
        hp["learning_rate_multiplier"] = scaled_multiplier(cfg.default_learning_rate_multiplier, hp["batch_size"])
    if hp.get("beta") == "auto":
        hp["beta"] = cfg.default_beta
    if hp.get("num_processes") == "auto":
        hp["num_processes"] = 1
    for key, default in RFT_DEFAULTS.items():  # reinforcement: OpenAI's eval_interval, eval_samples, ...
        if hp.get(key) == "auto":
            hp[key] = default
    return hp


def record_hyperparameters(store: Store, job: dict[str, Any], cfg: ServeConfig, n_examples: int) -> dict[str, Any]:
    """Resolve the job's "auto" hyperparameters for its counted training file and store them in its row."""
    kind = job["method"]["type"]
    hp = resolve_hyperparameters(job["method"][kind]["hyperparameters"], cfg, n_examples)
    method = with_hyperparameters(job["method"], hp)
    store.execute("UPDATE jobs SET hyperparameters=?, method=? WHERE id=?", (encode(hp), encode(method), job["id"]))
    return hp


def with_hyperparameters(method: dict[str, Any], hp: dict[str, Any]) -> dict[str, Any]:
    """The job's `method` object with these hyperparameters; anything else it holds (a grader) stays as sent."""
    kind = method["type"]
    return {**method, kind: {**method[kind], "hyperparameters": hp}}


def method_view(method_type: str, hp: dict[str, Any], grader: dict[str, Any] | None = None) -> dict[str, Any]:
    """The job's `method` object: {type, supervised|dpo|reinforcement: {hyperparameters, grader?}}."""
    inner: dict[str, Any] = {"hyperparameters": hp}
    if grader is not None:
        inner["grader"] = grader
    return {"type": method_type, method_type: inner}


def fine_tuned_name(base: str, project: str, suffix: str | None, job_id: str) -> str:
    """ft:{base}:{owner}:{suffix}:{id}, as OpenAI names fine-tuned models."""
    return f"ft:{Path(base).name}:{project}:{suffix or ''}:{job_id.removeprefix('ftjob-')}"


def job_processes(job: dict[str, Any]) -> int:
    """The job's data-parallel processes (1 for jobs created before the setting existed)."""
    method_type = job["method"]["type"]
    return int(job["method"][method_type]["hyperparameters"].get("num_processes", 1))


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
            "num_processes": job_processes(job),
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


def validate_job_files(store: Store, job: dict[str, Any]) -> tuple[dict[str, str] | None, int]:
    """Check the job's training (and validation) file with lmtune's validator (reinforcement files: against
    the grader's templates): (an error dict or None, the number of training examples)."""
    from lmtune.data.validate import validate_file
    from lmtune.graders.items import check_items

    dpo = job["method"]["type"] == "dpo"
    n_train = 0
    reinforcement = job["method"]["type"] == "reinforcement"
    for param in ("training_file", "validation_file"):
        if not job[param]:
            continue
        row = store.one("SELECT * FROM files WHERE id=?", (job[param],))
        if row is None or row["deleted"] or not Path(row["path"]).exists():
            return {"code": f"invalid_{param}", "param": param,
                    "message": f"{param} {job[param]} no longer exists"}, n_train
        if reinforcement:
            grader = job["method"]["reinforcement"]["grader"]
            lines = [str(i) for i in check_items(row["path"], grader, row["filename"])]
            kinds: set[str] = set()
            n_examples = _count_lines(row["path"])
        else:
            report = validate_file(row["path"], fmt="preference" if dpo else "auto")
            lines = _issue_lines(report, row["filename"])
            kinds = set(report.stats.get("kinds", {}))
            n_examples = report.n_examples
        if not lines and not dpo and "preference" in kinds:
            lines = [f"{row['filename']}: holds preference pairs; train them with method type 'dpo'"]
        if not lines and n_examples == 0:
            lines = [f"{row['filename']}: no examples"]
        if lines:
            shown = lines[:MAX_ISSUES_SHOWN]
            more = len(lines) - len(shown)
            text = "; ".join(shown) + (f" (and {more} more errors)" if more else "")
            return {"code": f"invalid_{param}", "param": param,
                    "message": f"The {param.replace('_', ' ')} has {len(lines)} errors: {text}"}, n_train
        if param == "training_file":
            n_train = n_examples
    return None, n_train


def _count_lines(path: str) -> int:
    """Non-blank lines of a JSONL file: a reinforcement file's examples once check_items found no problem."""
    with open(path, encoding="utf-8") as fh:
        return sum(1 for line in fh if line.strip())


def transition(store: Store, job_id: str, to: str, allowed_from: tuple[str, ...], **fields: Any) -> bool:
    """Move a job to status `to` if it is in one of `allowed_from`; True when it moved."""
    sets = ", ".join(["status=?", *(f"{k}=?" for k in fields)])
    marks = ", ".join("?" for _ in allowed_from)
    changed = store.execute(f"UPDATE jobs SET {sets} WHERE id=? AND status IN ({marks})",  # noqa: S608
                            (to, *fields.values(), job_id, *allowed_from))
    return changed > 0


# Per project with queued jobs, computed once (MATERIALIZED: not again for every queued job) by index
# lookups, not a scan of the whole history: jobs running now and when its latest job started (never: 0). Fair order: the project with the fewest running jobs first,
# then the one that has waited longest since its last start, then FIFO within the project, so a
# project with many queued jobs cannot hold back another's single job.
_CANDIDATE = """WITH p AS MATERIALIZED (
    SELECT q.project,
      (SELECT COUNT(*) FROM jobs r WHERE r.project = q.project AND r.status = 'running') AS running,
      COALESCE((SELECT MAX(s.started_at) FROM jobs s WHERE s.project = q.project), 0) AS last_start
    FROM (SELECT DISTINCT project FROM jobs WHERE status = 'queued') q)
  SELECT j.id, j.project FROM jobs j JOIN p ON p.project = j.project
  WHERE j.status = 'queued' AND p.running < ?{skip}
  ORDER BY p.running, p.last_start, j.seq LIMIT 1"""


def claim_next(store: Store, worker: int, replica: str | None = None,
               max_per_project: int | None = None) -> dict[str, Any] | None:
    """Atomically take the next queued job, fairly across projects, for `worker` (status running), or None.

    At most `max_per_project` jobs of one project run at once. Atomic across processes and machines:
    on SQLite the write transaction holds the database's write lock; on PostgreSQL the candidate row
    is locked with FOR UPDATE SKIP LOCKED (concurrent claimers take different jobs without waiting)
    and the project's running count is re-read under a per-project transaction lock.
    """
    limit = max_per_project or 2**31 - 1
    skipped: list[str] = []
    with store.tx() as db:
        postgres = db.dialect == "postgresql"
        while True:
            skip = f" AND j.project NOT IN ({', '.join('?' for _ in skipped)})" if skipped else ""
            sql = _CANDIDATE.format(skip=skip) + (" FOR UPDATE OF j SKIP LOCKED" if postgres else "")
            row = db.execute(sql, (limit, *skipped)).fetchone()
            if row is None:
                return None
            if not postgres:
                break
            # Two replicas may both have counted the project's running jobs before either committed.
            db.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (row["project"],))
            running = db.execute("SELECT COUNT(*) AS n FROM jobs WHERE project=? AND status='running'",
                                 (row["project"],)).fetchone()["n"]
            if running < limit:
                break
            skipped.append(row["project"])
        db.execute("UPDATE jobs SET status='running', worker=?, replica=?, started_at=COALESCE(started_at, ?) "
                   "WHERE id=?", (worker, replica, now(), row["id"]))
    return store.one("SELECT * FROM jobs WHERE id=?", (row["id"],))


def job_view(row: dict[str, Any], estimate: int | None = None) -> dict[str, Any]:
    """The fine_tuning.job object of a jobs row (`estimate`: its estimated_finish)."""
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
        "estimated_finish": estimate,
        "integrations": [],
        "metadata": row["metadata"],
        "method": method,
        "user_provided_suffix": row["suffix"],
    }


def estimated_finish(store: Store, job: dict[str, Any]) -> int | None:
    """When a running job should end (unix seconds): its remaining steps at the step rate its worker
    measured; None until both are known."""
    if job["status"] != "running":
        return None
    last = store.one("SELECT data FROM events WHERE job_id=? AND type='metrics' ORDER BY seq DESC LIMIT 1",
                     (job["id"],))
    rate = store.one("SELECT steps_per_second FROM workers WHERE job_id=?", (job["id"],))
    total = (last or {}).get("data", {}).get("total_steps")
    if not total or not rate or not rate["steps_per_second"]:
        return None
    return now() + round(max(total - job["metrics_step"], 0) / rate["steps_per_second"])


def event_view(row: dict[str, Any]) -> dict[str, Any]:
    """The fine_tuning.job.event object of an events row."""
    return {"id": row["id"], "object": "fine_tuning.job.event", "created_at": row["created_at"],
            "level": row["level"], "message": row["message"], "type": row["type"], "data": row["data"]}


def checkpoint_view(row: dict[str, Any]) -> dict[str, Any]:
    """The fine_tuning.job.checkpoint object of a checkpoints row."""
    return {"id": row["id"], "object": "fine_tuning.job.checkpoint", "created_at": row["created_at"],
            "fine_tuned_model_checkpoint": row["model_name"], "fine_tuning_job_id": row["job_id"],
            "metrics": row["metrics"], "step_number": row["step"]}
