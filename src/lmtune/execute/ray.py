"""The Ray executor: each submitted process runs in a Ray task on a node that holds its resources.

Usage:
    executor = RayExecutor("auto")          # the cluster `ray start` runs here; or "host:port", "ray://host:port"
    handle = executor.submit("lmtune.serve.worker", ["train", "--config", cfg],
                             log_path=shared / "train.log", resources=Resources(cpus=4, gpus=1))
    handle.wait(); handle.cancel(); handle.node_id

The task starts `python -m module args` as a child process bound to the Ray worker's life (the same
launcher as the local executor), so when a node dies, its raylet's workers and their training
processes die with it. Ray does not retry the task (max_retries=0): the caller learns of the loss as
LOST_EXIT_CODE and decides what to run again, e.g. the job from its last checkpoint, on whichever node
has room. Paths in args and log_path must be reachable from every node (a shared file system).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import ray
from ray.exceptions import RayError, RayTaskError, TaskCancelledError

from lmtune.execute.base import LOST_EXIT_CODE, STOP_GRACE_SECONDS, Resources
from lmtune.execute.local import child_command

TASK_ERROR_EXIT_CODE = 1  # the task itself raised (e.g. the log folder is not reachable on that node)


def _run_module(module: str, args: list[str], log_path: str, env: dict[str, str]) -> int:
    """Body of the Ray task: run the module to its end; on ray.cancel, SIGTERM it, then SIGKILL."""
    node = ray.get_runtime_context().get_node_id()
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"[lmtune] ray node {node} host {socket.gethostname()} pid {os.getpid()} start {time.time():.3f}\n"
                  .encode())
        log.flush()
        process = subprocess.Popen(child_command(module, args), stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1", **env})
    try:
        rc = process.wait()
    except KeyboardInterrupt:  # ray.cancel(force=False) interrupts the task's main thread
        process.terminate()
        try:
            process.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        raise
    finally:
        with open(log_path, "ab") as log:
            log.write(f"[lmtune] ray node {node} end {time.time():.3f}\n".encode())
    return rc


class RayHandle:
    """A Ray task running one module."""

    def __init__(self, ref: ray.ObjectRef):
        self.ref = ref
        self.result: int | None = None

    def _settle(self) -> int:
        try:
            return ray.get(self.ref)
        except TaskCancelledError:
            return -signal.SIGTERM
        except RayTaskError:
            return TASK_ERROR_EXIT_CODE
        except RayError:  # the worker or its node died, or the object was lost with it
            return LOST_EXIT_CODE

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code once the task ends (LOST_EXIT_CODE when its node died), or None on timeout."""
        if self.result is None:
            ready, _ = ray.wait([self.ref], timeout=timeout)
            if not ready:
                return None
            self.result = self._settle()
        return self.result

    def poll(self) -> int | None:
        """The exit code, or None while the task is pending or running."""
        return self.wait(0)

    def cancel(self) -> None:
        """Interrupt the task (its process gets SIGTERM, then SIGKILL); force-kill the Ray worker if it hangs."""
        if self.poll() is not None:
            return
        ray.cancel(self.ref, force=False)
        if self.wait(STOP_GRACE_SECONDS + 5) is None:
            ray.cancel(self.ref, force=True)
            self.wait()


class RayExecutor:
    """Submits each process as a Ray task asking for its CPUs and GPUs."""

    def __init__(self, address: str = "auto"):
        if not ray.is_initialized():
            # Job output goes to each job's log file; the driver does not need a copy.
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        self._task = ray.remote(_run_module)

    def submit(self, module: str, args: list[str], *, log_path: Path, resources: Resources,
               env: dict[str, str] | None = None) -> RayHandle:
        """Queue `python -m module *args` on a node with the resources; output appended to log_path."""
        ref = self._task.options(num_cpus=resources.cpus, num_gpus=resources.gpus, max_retries=0).remote(
            module, list(args), str(Path(log_path).resolve()), dict(env or {}))
        return RayHandle(ref)
