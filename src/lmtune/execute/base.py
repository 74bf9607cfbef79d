"""Where a job's process runs: one small interface, a local and a Ray implementation.

Usage:
    executor = make_executor("local")                      # or make_executor("ray", address="auto")
    handle = executor.submit("lmtune.serve.worker", ["train", "--config", "job.yaml"],
                             log_path=Path("train.log"), resources=Resources(cpus=2))
    handle.poll()            # None while it runs, then its exit code
    handle.wait(timeout=5)   # the exit code, or None if still running after 5 s
    handle.cancel()          # SIGTERM, then SIGKILL after a grace period

An executor runs `python -m module *args` with stdout and stderr appended to log_path. The exit code
LOST_EXIT_CODE means the process's machine went away (a Ray node died): nothing is known about how
far it got, and the caller may run it again (from its last checkpoint). This layer sits above the
pipeline and below cli/serve: `lmtune serve` runs its jobs and `lmtune tune` its trials through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

LOST_EXIT_CODE = 75  # EX_TEMPFAIL (sysexits.h): the node running the process died; try again
STOP_GRACE_SECONDS = 10.0  # SIGTERM -> SIGKILL; a checkpoint being written finishes well within it
EXECUTORS = ("local", "ray")


@dataclass
class Resources:
    """What one submitted process needs on the node that runs it."""

    cpus: float = 1.0
    gpus: float = 0.0


class Handle(Protocol):
    """A submitted process."""

    def poll(self) -> int | None:
        """Its exit code, or None while it runs."""
        ...

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until it ends (at most `timeout` seconds); its exit code, or None on timeout."""
        ...

    def cancel(self) -> None:
        """Stop it now: SIGTERM, then SIGKILL after STOP_GRACE_SECONDS."""
        ...


class Executor(Protocol):
    """Runs `python -m module *args` somewhere that has the resources."""

    def submit(self, module: str, args: list[str], *, log_path: Path, resources: Resources) -> Handle:
        """Start the process; its output is appended to log_path."""
        ...


def make_executor(kind: str = "local", address: str | None = None) -> Executor:
    """The executor named `kind` ("local" or "ray"); Ray is imported only for "ray"."""
    if kind == "local":
        from lmtune.execute.local import LocalExecutor

        return LocalExecutor()
    if kind == "ray":
        from lmtune.execute.ray import RayExecutor

        return RayExecutor(address or "auto")
    raise ValueError(f"unknown executor {kind!r}: expected one of {', '.join(EXECUTORS)}")
