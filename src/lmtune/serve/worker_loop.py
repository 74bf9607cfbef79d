"""The worker's loop: validates new jobs' files, takes queued jobs one at a time and trains them.

Usage (python -m lmtune.serve.worker runs this; see lmtune.serve.worker):
    Worker(cfg, index=0).run(parent=server_pid)     # until the server dies

Training runs `lmtune.pipeline.training.run_training` — the code path of `lmtune train` — in a process
started through the worker's executor (lmtune.execute: a child process, or a Ray task on some node),
so a cancel or pause can stop it at once (SIGTERM) and a crash cannot take the worker down. A job
whose Ray node died goes back to the queue and resumes from its last checkpoint. The worker polls the database for status changes made by the server, and the run
folder for metrics and checkpoints. Pause waits for the next checkpoint, then stops the child;
resume (and a server restart) continue from the latest checkpoint with run_training(resume=run_dir).
A lock file per worker index makes a restarted worker wait until its predecessor has gone.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import OperationalError

from lmtune.execute.base import LOST_EXIT_CODE, Executor, Handle, Resources, make_executor
from lmtune.execute.lifeline import parent_alive
from lmtune.serve.config import ServeConfig
from lmtune.serve.jobs import (build_run_config, claim_next, job_processes, record_hyperparameters, transition,
                              validate_job_files)
from lmtune.serve.metrics import HEARTBEAT_SECONDS
from lmtune.serve.progress import fail_job, finalize_success, record_progress
from lmtune.serve.store import Store

log = logging.getLogger("lmtune.serve.worker")


def _latest_step(run_dir: Path | None) -> int | None:
    from lmtune.train.checkpoint import latest_checkpoint

    found = latest_checkpoint(run_dir / "checkpoints") if run_dir else None
    return int(found.name.split("-")[1]) if found else None


def _log_tail(path: Path) -> str:
    """The last informative line of a training log (the exception, when there is one)."""
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()] \
        if path.exists() else []
    return (lines[-1] if lines else "the training process ended without output")[:1000]


class Worker:
    """One worker: at most one training child at a time."""

    def __init__(self, cfg: ServeConfig, index: int = 0, executor: Executor | None = None):
        self.cfg, self.index = cfg, index
        self.store = Store(cfg.database)
        self.executor = executor or make_executor(cfg.executor, cfg.ray_address)
        self.job: dict[str, Any] | None = None
        self.child: Handle | None = None
        self.run_dir: Path | None = None
        self.progress: list[tuple[float, int]] = []  # (time, step) of the job's last two step advances
        self.last_beat = 0.0

    def requeue_orphans(self) -> None:
        """Jobs this worker was running when it died go back to the queue; their checkpoints are kept."""
        mine = "worker=? OR worker IS NULL" + (" OR worker>=?" if self.index == 0 else "")
        args = (self.index, self.cfg.workers) if self.index == 0 else (self.index,)
        # Replicas share the database: another replica's running jobs are not this worker's orphans.
        sql = ("SELECT id FROM jobs WHERE status='running' AND (replica=? OR replica IS NULL) "
               f"AND ({mine})")  # noqa: S608
        for job in self.store.all(sql, (self.cfg.replica, *args)):
            if transition(self.store, job["id"], "queued", ("running",)):
                self.store.add_event(job["id"], "The server restarted; the job continues from its last checkpoint")

    def tick(self) -> None:
        """One round: validate new jobs, start a queued one when idle, follow the running one."""
        for job in self.store.all("SELECT * FROM jobs WHERE status='validating_files' ORDER BY seq"):
            self.validate(job)
        if self.child is None:
            job = claim_next(self.store, self.index, self.cfg.replica, self.cfg.max_running_jobs_per_project)
            if job is not None:
                self.start(job)
        else:
            self.follow()

    def validate(self, job: dict[str, Any]) -> None:
        """validating_files -> queued, or failed with the validator's line-numbered messages."""
        error, n_examples = validate_job_files(self.store, job)
        if error is not None:
            fail_job(self.store, job["id"], error["code"], error["message"], error["param"])
            return
        hp = record_hyperparameters(self.store, job, self.cfg, n_examples)
        if transition(self.store, job["id"], "queued", ("validating_files",)):
            shown = ", ".join(f"{k}={v}" for k, v in hp.items())
            self.store.add_event(job["id"], f"Files validated ({n_examples} training examples; {shown}), "
                                 "moving job to queued state")

    def start(self, job: dict[str, Any]) -> None:
        """Start the training child: resuming from the job's latest checkpoint when there is one."""
        from lmtune.config_file import dump_config
        from lmtune.runs import read_lineage

        run_dir = Path(job["run_dir"]) if job["run_dir"] else None
        step = _latest_step(run_dir)
        if run_dir and (run_dir / "final").exists() and "result" in read_lineage(run_dir):
            finalize_success(self.store, self.cfg.blob_dir, job, run_dir)  # finished before a crash
            return
        job_dir = self.cfg.jobs_dir / job["id"]
        job_dir.mkdir(parents=True, exist_ok=True)
        args = ["train", "--config", str(job_dir / "config.yaml")]
        if step is not None:
            args += ["--resume", str(run_dir)]
            self.store.add_event(job["id"], f"Resuming training from the checkpoint at step {step}")
        else:
            try:
                files = {p: self.store.one("SELECT path FROM files WHERE id=?", (job[p],)) for p in
                         ("training_file", "validation_file") if job[p]}
                run_cfg = build_run_config(job, self.cfg, files["training_file"]["path"],
                                           files["validation_file"]["path"] if "validation_file" in files else None)
            except (ValidationError, TypeError, KeyError) as err:
                fail_job(self.store, job["id"], "invalid_config", f"cannot build the run config: {err}")
                return
            (job_dir / "config.yaml").write_text(dump_config(run_cfg), encoding="utf-8")
            run_dir = None
            self.store.execute("UPDATE jobs SET run_dir=NULL, metrics_step=0 WHERE id=?", (job["id"],))
            job["metrics_step"] = 0
            self.store.add_event(job["id"], "Fine-tuning job started")
        self.child = self.executor.submit("lmtune.serve.worker", args, log_path=job_dir / "train.log",
                                          resources=self.resources(), num_processes=job_processes(job))
        self.job, self.run_dir, self.progress = job, run_dir, []

    def resources(self) -> Resources:
        """What each process of a job asks of its node: its training threads as CPUs, and the set GPUs."""
        return Resources(cpus=float(self.cfg.training_threads or 1), gpus=float(self.cfg.job_gpus))

    def _find_run_dir(self) -> Path | None:
        found = [p for p in self.cfg.runs_dir.glob(f"{self.job['id']}-*") if (p / "config.yaml").exists()]
        if not found:
            return None
        run_dir = max(found, key=lambda p: p.stat().st_mtime)
        self.store.execute("UPDATE jobs SET run_dir=? WHERE id=?", (str(run_dir), self.job["id"]))
        return run_dir

    def follow(self) -> None:
        """React to the job's status (cancel, pause, resume) and record its progress."""
        assert self.job is not None and self.child is not None
        job_id = self.job["id"]
        row = self.store.one("SELECT * FROM jobs WHERE id=?", (job_id,))
        status = row["status"] if row else "cancelled"
        self.run_dir = self.run_dir or self._find_run_dir()
        if self.run_dir is not None and row is not None:
            row["metrics_step"] = self.job["metrics_step"]
            record_progress(self.store, row, self.run_dir)
            if row["metrics_step"] > self.job["metrics_step"]:
                self.progress = [*self.progress[-1:], (time.time(), row["metrics_step"])]
            self.job["metrics_step"] = row["metrics_step"]
        rc = self.child.poll()
        if status == "queued" and transition(self.store, job_id, "running", ("queued",)):
            status = "running"  # resumed before the pause took effect: carry on
        if status == "cancelled":
            self.stop("Training stopped: the job was cancelled")
        elif status == "paused":
            step = _latest_step(self.run_dir)
            if rc is not None and rc == 0 and self.run_dir is not None:
                transition(self.store, job_id, "running", ("paused",))
                self.finish(0)
            elif rc is not None or (step is not None and step > (row["pause_step"] or 0)):
                self.stop(f"Training paused after the checkpoint at step {step}" if step else "Training paused")
        elif rc == LOST_EXIT_CODE and transition(self.store, job_id, "queued", ("running",)):
            self.store.add_event(job_id, "The node training the job went away; the job continues from its "
                                         "last checkpoint on another node")
            self.child = self.job = self.run_dir = None
        elif rc is not None:
            self.finish(rc)

    def finish(self, rc: int) -> None:
        """The child ended on its own: record success or failure."""
        assert self.job is not None
        run_dir = self.run_dir or self._find_run_dir()
        if rc == 0 and run_dir is not None and (run_dir / "final").exists():
            finalize_success(self.store, self.cfg.blob_dir, self.job, run_dir)
        else:
            if run_dir is not None:  # the steps it did train stay visible
                record_progress(self.store, self.job, run_dir, finished=True)
            message = _log_tail(self.cfg.jobs_dir / self.job["id"] / "train.log")
            fail_job(self.store, self.job["id"], "training_failed", message)
        self.child = self.job = self.run_dir = None

    def stop(self, message: str) -> None:
        """Terminate the training child (SIGTERM, then SIGKILL) and forget the job."""
        assert self.job is not None and self.child is not None
        self.child.cancel()
        self.store.add_event(self.job["id"], message)
        self.child = self.job = self.run_dir = None

    def steps_per_second(self) -> float:
        """The running job's step rate between its last two step advances (0 when idle)."""
        if self.job is None or len(self.progress) < 2:
            return 0.0
        (t0, s0), (t1, s1) = self.progress
        return (s1 - s0) / max(t1 - t0, 1e-9)

    def heartbeat(self) -> None:
        """Record that this worker is alive, with its job and step rate (read by GET /metrics)."""
        if self.job is None:
            self.progress = []
        self.store.execute("INSERT INTO workers (idx, pid, heartbeat, job_id, steps_per_second) VALUES (?, ?, ?, ?, ?) "
                           "ON CONFLICT(idx) DO UPDATE SET pid=excluded.pid, heartbeat=excluded.heartbeat, "
                           "job_id=excluded.job_id, steps_per_second=excluded.steps_per_second",
                           (self.index, os.getpid(), time.time(), self.job and self.job["id"], self.steps_per_second()))
        self.last_beat = time.monotonic()

    def run(self, parent: int | None = None) -> None:
        """Poll forever; exit (stopping the child) when the process that started us is gone."""
        self.requeue_orphans()
        while parent is None or parent_alive(parent):  # the fallback where no parent-death signal exists
            try:
                self.tick()
                if time.monotonic() - self.last_beat >= HEARTBEAT_SECONDS:
                    self.heartbeat()
            except OperationalError as err:
                # The database is down (PostgreSQL restarting): the training child keeps going, its
                # files hold what happens meanwhile, and the next tick after the database is back records it.
                log.warning("database unavailable, retrying: %s", str(err).splitlines()[0])
            time.sleep(self.cfg.poll_seconds)
        if self.child is not None and self.child.poll() is None:
            self.child.cancel()  # the job stays `running` in the database and resumes at the next start
