"""The local executor: each submitted process is a child of this one, and dies with it.

Usage:
    handle = LocalExecutor().submit("lmtune.serve.worker", ["train", ...], log_path=log, resources=Resources())

The child starts as `python -m lmtune.execute.lifeline PID MODULE ARGS`: it asks the kernel for
SIGKILL when its parent dies (Linux PR_SET_PDEATHSIG) before MODULE is imported, so a worker killed at
any moment takes its training process with it. The signal follows the *thread* that started the child: submit from a thread that
lives as long as the process you want to tie it to (the main thread, in lmtune's worker).
`resources` is not enforced locally; the caller sizes threads (training.num_threads) itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lmtune.execute.base import STOP_GRACE_SECONDS, Resources


def child_command(module: str, args: list[str]) -> list[str]:
    """`python -m module *args`, bound to this process's life before the module is even imported."""
    return [sys.executable, "-m", "lmtune.execute.lifeline", str(os.getpid()), module, *args]


class LocalHandle:
    """A child process started by LocalExecutor."""

    def __init__(self, process: subprocess.Popen):
        self.process = process

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    def poll(self) -> int | None:
        """Its exit code, or None while it runs."""
        return self.process.poll()

    def wait(self, timeout: float | None = None) -> int | None:
        """Its exit code once it ends, or None if it still runs after `timeout` seconds."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def cancel(self) -> None:
        """SIGTERM, then SIGKILL if it has not ended after STOP_GRACE_SECONDS."""
        if self.process.poll() is None:
            self.process.terminate()
            if self.wait(STOP_GRACE_SECONDS) is None:
                self.process.kill()
                self.process.wait()


class LocalExecutor:
    """Runs each submitted module as a child process of this one."""

    def submit(self, module: str, args: list[str], *, log_path: Path, resources: Resources | None = None,
               env: dict[str, str] | None = None) -> LocalHandle:
        """Start `python -m module *args` with output appended to log_path (env: extra variables)."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:  # the child holds its own descriptor; ours can close
            process = subprocess.Popen(child_command(module, args), stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL,
                                       env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        return LocalHandle(process)
