"""The Ray executor: each submitted process runs in a Ray task on a node that holds its resources.

Usage:
    executor = RayExecutor("auto")          # the cluster `ray start` runs here; or "host:port", "ray://host:port"
    handle = executor.submit("lmtune.serve.worker", ["train", "--config", cfg],
                             log_path=shared / "train.log", resources=Resources(cpus=4, gpus=1))
    handle.wait(); handle.cancel()

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
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

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


def _rendezvous() -> tuple[str, int]:
    """On rank 0's node: its address and a free port there for the ranks' process group."""
    with socket.socket() as sock:
        sock.bind(("", 0))
        return ray.util.get_node_ip_address(), sock.getsockname()[1]


def rank_log(log_path: Path, rank: int) -> Path:
    """Where rank `rank` writes: rank 0 to log_path itself, the others beside it."""
    return log_path if rank == 0 else log_path.with_name(f"{log_path.stem}.rank{rank}{log_path.suffix}")


class RayGroupHandle:
    """N ranks of one module in a placement group, started once the group's bundles are reserved.

    Like torchrun, each rank gets RANK, WORLD_SIZE and MASTER_ADDR/MASTER_PORT (rank 0's node), so
    accelerate (and torch.distributed) in the module forms the process group. A failed or lost rank
    stops the others: a data-parallel group cannot continue without one of its members.
    """

    def __init__(self, executor: RayExecutor, group: PlacementGroup, launch: tuple, rendezvous: ray.ObjectRef):
        self.executor, self.launch, self.rendezvous = executor, launch, rendezvous
        self.group: PlacementGroup | None = group
        self.ranks: list[RayHandle] = []
        self.result: int | None = None

    def _start_ranks(self) -> bool:
        if not self.ranks:
            if not ray.wait([self.rendezvous], timeout=0)[0]:
                return False
            module, args, log_path, env, resources, num_processes = self.launch
            try:
                addr, port = ray.get(self.rendezvous)
            except RayError:  # rank 0's node died before the ranks started
                self.result = LOST_EXIT_CODE
                self.cancel()
                return False
            for rank in range(num_processes):
                # Ray gives each rank only its own GPUs, so every rank is local rank 0 of what it sees.
                dist = {"RANK": str(rank), "WORLD_SIZE": str(num_processes), "LOCAL_RANK": "0",
                        "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": addr, "MASTER_PORT": str(port)}
                strategy = PlacementGroupSchedulingStrategy(self.group, placement_group_bundle_index=rank)
                self.ranks.append(self.executor.submit_one(module, args, rank_log(log_path, rank), {**env, **dist},
                                                           resources, scheduling_strategy=strategy))
        return True

    def poll(self) -> int | None:
        """The group's exit code (0 when every rank succeeded), or None while any runs."""
        if self.result is not None or not self._start_ranks():
            return self.result
        codes = [rank.poll() for rank in self.ranks]
        failed = [c for c in codes if c not in (None, 0)]
        if failed or all(c == 0 for c in codes):
            self.result = LOST_EXIT_CODE if LOST_EXIT_CODE in failed else (failed[0] if failed else 0)
            self.cancel()
        return self.result

    def wait(self, timeout: float | None = None) -> int | None:
        """The group's exit code once it ends, or None after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(0.2)
        return self.result

    def cancel(self) -> None:
        """Stop every rank, then release the group's reserved resources."""
        for rank in self.ranks:
            rank.cancel()
        if self.result is None:
            self.result = -signal.SIGTERM
        if self.group is not None:
            remove_placement_group(self.group)
            self.group = None


class RayExecutor:
    """Submits each process as a Ray task asking for its CPUs and GPUs (several ranks: a placement group)."""

    def __init__(self, address: str = "auto"):
        if not ray.is_initialized():
            # Job output goes to each job's log file; the driver does not need a copy.
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        self._task = ray.remote(_run_module)

    def submit(self, module: str, args: list[str], *, log_path: Path, resources: Resources,
               env: dict[str, str] | None = None, num_processes: int = 1) -> RayHandle | RayGroupHandle:
        """Queue `python -m module *args` on a node with the resources; output appended to log_path.

        num_processes > 1 runs that many data-parallel ranks, each with `resources`, packed on as few
        nodes as have room (a placement group: all ranks start together or none does).
        """
        log_path = Path(log_path).resolve()
        if num_processes == 1:
            return self.submit_one(module, args, log_path, dict(env or {}), resources)
        bundle = {"CPU": resources.cpus, **({"GPU": resources.gpus} if resources.gpus else {})}
        group = placement_group([bundle] * num_processes, strategy="PACK")
        rendezvous = ray.remote(_rendezvous).options(
            num_cpus=0, scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=0)
        ).remote()
        return RayGroupHandle(self, group, (module, list(args), log_path, dict(env or {}), resources, num_processes),
                              rendezvous)

    def submit_one(self, module: str, args: list[str], log_path: Path, env: dict[str, str], resources: Resources,
                   **options) -> RayHandle:
        """One Ray task running the module (options: Ray's, e.g. a placement group's scheduling strategy)."""
        ref = self._task.options(num_cpus=resources.cpus, num_gpus=resources.gpus, max_retries=0, **options).remote(
            module, list(args), str(log_path), env)
        return RayHandle(ref)
