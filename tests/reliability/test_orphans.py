"""SIGKILL of `lmtune serve` alone (not its process group) at six moments of its start-up and of a running
job leaves no lmtune process behind 10 s later: the worker and the training child are bound to their
parent by the kernel's parent-death signal, set before their heavy imports (lmtune.execute.lifeline).
A server restarted on the same data directory then trains the queued job to success.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ..integration.serve import conftest as serve  # the serve suite's Server helpers

pytestmark = pytest.mark.slow
METHOD = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 6, "batch_size": 4}}}
EXIT_DEADLINE = 10.0


def _processes(marker: str) -> dict[int, str]:
    """pid -> command line of every live process whose command line mentions `marker` (zombies have none)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmd:
                found[int(entry.name)] = cmd
    return found


def _role(cmd: str) -> str:
    return "train" if "lmtune.serve.worker train" in cmd else "worker" if "lmtune.serve.worker" in cmd else "server"


def _wait_until(condition, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _launch(server) -> subprocess.Popen:
    """`lmtune serve` without waiting for it to answer (the kill may come first)."""
    config = server.root / "serve.yaml"
    config.write_text(yaml.safe_dump(server.settings))
    log = open(server.log, "ab")  # noqa: SIM115 - the server owns it
    proc = subprocess.Popen([sys.executable, "-m", "lmtune.serve", "serve", "--config", str(config)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    return proc


def _latest_checkpoint(server) -> int:
    steps = [int(p.name.split("-")[1]) for p in (server.data_dir / "runs").glob("*/checkpoints/step-*")]
    return max(steps, default=0)


def _moments(server):
    """(name, wait) pairs: each wait returns once its moment of a fresh server's life has come."""
    marker = str(server.root)

    def has(role: str):
        return lambda: any(_role(c) == role for c in _processes(marker).values())

    def worker_importing():
        _wait_until(has("worker"), 60, "a worker process")
        time.sleep(1.0)  # torch and the training code load for several seconds

    def training_steps():
        start = _latest_checkpoint(server)
        _wait_until(has("train"), 120, "a training process")
        _wait_until(lambda: _latest_checkpoint(server) > start, 120, "a new checkpoint")

    return [("server importing", lambda: time.sleep(0.3)),
            ("worker just spawned", lambda: _wait_until(has("worker"), 60, "a worker process")),
            ("worker importing", worker_importing),
            ("server answering, worker validating", lambda: _wait_until(lambda: _answers(server), 60, "health")),
            ("training child just spawned", lambda: _wait_until(has("train"), 120, "a training process")),
            ("training mid-job", training_steps)]


def _answers(server) -> bool:
    import httpx

    try:
        return httpx.get(server.url + "/health", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def test_sigkill_of_the_server_at_six_moments_leaves_no_process(make_server, chat_data):
    server = make_server("orphans", start_workers=False, checkpoint_every=2)
    server.start()
    client = server.client(server.key("alpha"))
    f = client.files.create(file=("facts.jsonl", chat_data), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="tiny-llama", training_file=f.id, method=METHOD, seed=3)
    server.stop()
    server.settings["start_workers"] = True
    marker = str(server.root)
    seen: dict[str, set[str]] = {}
    for name, wait in _moments(server):
        proc = _launch(server)
        try:
            wait()
            seen[name] = {_role(c) for c in _processes(marker).values()}
            proc.send_signal(signal.SIGKILL)  # the server only: its children must notice on their own
            proc.wait()
            left = _processes(marker)
            deadline = time.time() + EXIT_DEADLINE
            while left and time.time() < deadline:
                time.sleep(0.1)
                left = _processes(marker)
            assert not left, f"killed at '{name}': still running {sorted(left.values())}"
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert seen["server importing"] == {"server"} and "worker" in seen["worker importing"]
    assert "train" in seen["training mid-job"]
    server.start()
    done = serve.wait_for(client, job.id, timeout=300)
    assert done.status == "succeeded", done.error
