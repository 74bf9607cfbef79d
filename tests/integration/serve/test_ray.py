"""Jobs on a real Ray cluster of two 1-CPU nodes on this machine (ray.cluster_utils.Cluster, loopback only).

The executor alone: a task runs where its CPUs are, one per node at a time, stops on cancel, and a
dead node shows as LOST_EXIT_CODE. Then `lmtune serve` with executor "ray": six jobs submitted through
two API replicas with the openai client all succeed, each exactly once, at most one per node at a
time; and a job whose node is SIGKILLed resumes from its checkpoint on the other node and ends with
the adapter of an uninterrupted run. One cluster serves the whole module (Ray starts slowly).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmtune.execute.base import LOST_EXIT_CODE, Resources

ray = pytest.importorskip("ray", reason="Ray is in the cluster extra (make test installs it)")
from ray.cluster_utils import Cluster  # noqa: E402

from lmtune.execute.ray import RayExecutor  # noqa: E402

pytestmark = pytest.mark.slow
NODE_ARGS = {"num_cpus": 1, "object_store_memory": 80 * 1024**2}
SPAN = re.compile(r"\[lmtune\] ray node (\w+) (?:host \S+ pid \d+ )?(start|end) ([\d.]+)")
RAY_WORKER = re.compile(r"\[lmtune\] ray node (\w+) host \S+ pid (\d+) start")
SLEEPER = ["-n", "1", "-r", "1", "import os, time; print('pid', os.getpid(), flush=True); time.sleep({seconds})"]
SHORT = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 4}}}
LONG = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 8, "batch_size": 4}}}  # time to kill


@pytest.fixture(scope="module")
def cluster():
    """A head node without CPUs (nothing trains there) and two worker nodes with one CPU each."""
    made = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False,
                                                         "object_store_memory": 80 * 1024**2})
    for _ in range(2):
        made.add_node(**NODE_ARGS)
    made.wait_for_nodes()
    ray.init(address=made.address, log_to_driver=False)
    yield made
    ray.shutdown()
    made.shutdown()


@pytest.fixture
def database_settings(fresh_postgres) -> dict:
    """Where the replicas keep their state: a fresh database on the session's real PostgreSQL server.

    The one place that picks the database (return {} for SQLite in the shared data folder).
    """
    return {"database_url": fresh_postgres}


def spans(log: Path) -> list[tuple[str, float, float]]:
    """(node id, start, end) of every run of a task recorded in a log."""
    opened: dict[str, float] = {}
    out = []
    for node, kind, at in SPAN.findall(log.read_text()):
        if kind == "start":
            opened[node] = float(at)
        else:
            out.append((node, opened.pop(node), float(at)))
    return out


def overlapping(intervals: list[tuple[str, float, float]]) -> list[tuple]:
    """Pairs of runs on the same node that overlapped in time."""
    return [(a, b) for i, a in enumerate(intervals) for b in intervals[i + 1:]
            if a[0] == b[0] and a[1] < b[2] and b[1] < a[2]]


def wait_until(check, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_tasks_run_one_per_node_at_a_time_and_report_exit_codes(cluster, tmp_path):
    executor = RayExecutor(cluster.address)
    logs = [tmp_path / f"t{i}.log" for i in range(3)]
    args = [a.format(seconds=2) for a in SLEEPER]
    handles = [executor.submit("timeit", args, log_path=log, resources=Resources(cpus=1)) for log in logs]
    assert [h.wait(120) for h in handles] == [0, 0, 0]
    runs = [s for log in logs for s in spans(log)]
    assert len(runs) == 3 and not overlapping(runs)
    assert len({node for node, _, _ in runs}) == 2  # both nodes were used
    failing = executor.submit("timeit", ["-n", "1", "-r", "1", "import os; os._exit(7)"], log_path=logs[0],
                              resources=Resources(cpus=1))
    assert failing.wait(60) == 7


def test_cancel_stops_the_process_on_its_node(cluster, tmp_path):
    log = tmp_path / "sleeper.log"
    handle = RayExecutor(cluster.address).submit("timeit", [a.format(seconds=120) for a in SLEEPER], log_path=log,
                                                 resources=Resources(cpus=1))
    pid = int(wait_until(lambda: re.findall(r"^pid (\d+)", log.read_text() if log.exists() else "", re.M), 60,
                         "the process to start")[0])
    handle.cancel()
    assert handle.poll() == -signal.SIGTERM
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), 10, "the cancelled process to end")


def _kill_node_running(cluster, log: Path, pids: list[int]) -> None:
    """SIGKILL the job's processes (its Ray worker first) and its node's raylet, as a machine loss would.

    Then a fresh node joins, so the later tests find two nodes again.
    """
    node_id, worker = RAY_WORKER.findall(log.read_text())[-1]
    for pid in [int(worker), *pids]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # bound to the Ray worker, the job's process may be gone already
            pass
    (node,) = [n for n in cluster.worker_nodes if n.node_id == node_id]
    cluster.remove_node(node, allow_graceful=False)
    cluster.add_node(**NODE_ARGS)


def test_a_dead_node_shows_as_lost(cluster, tmp_path):
    log = tmp_path / "doomed.log"
    handle = RayExecutor(cluster.address).submit("timeit", [a.format(seconds=120) for a in SLEEPER], log_path=log,
                                                 resources=Resources(cpus=1))
    pid = int(wait_until(lambda: re.findall(r"^pid (\d+)", log.read_text() if log.exists() else "", re.M), 60,
                         "the process to start")[0])
    _kill_node_running(cluster, log, [pid])
    assert handle.wait(60) == LOST_EXIT_CODE


def _replicas(make_server, cluster, database_settings: dict, tmp_path: Path):
    """Two `lmtune serve` replicas on one data folder and database; the first runs the two job drivers."""
    shared = {"data_dir": str(tmp_path / "shared-data"), "executor": "ray", "ray_address": cluster.address,
              **database_settings}
    # Each worker drives one job at a time on whichever node Ray picks; two workers keep both nodes busy.
    first = make_server("replica-a", workers=2, **shared)
    second = make_server("replica-b", start_workers=False, **shared)
    first.data_dir = second.data_dir = Path(shared["data_dir"])
    first.start()
    second.start()
    return first, second


def _events(client, job_id: str) -> list:
    return list(client.fine_tuning.jobs.list_events(job_id, limit=1000))[::-1]  # oldest first


def _final_adapter(data_dir: Path, job_id: str) -> dict[str, torch.Tensor]:
    (run,) = (data_dir / "runs").glob(f"{job_id}-*")
    return load_file(run / "final" / "adapter_model.safetensors")


def test_six_jobs_through_two_replicas_run_once_each_one_per_node(make_server, cluster, database_settings, tmp_path,
                                                                   chat_data, wait):
    first, second = _replicas(make_server, cluster, database_settings, tmp_path)
    key = first.key("alpha")
    clients = [first.client(key), second.client(key)]
    training = clients[0].files.create(file=("facts.jsonl", chat_data), purpose="fine-tune")
    jobs = [clients[i % 2].fine_tuning.jobs.create(model="tiny-llama", training_file=training.id, method=SHORT,
                                                   seed=5) for i in range(6)]
    done = [wait(clients[(i + 1) % 2], job.id, ("succeeded",), timeout=400) for i, job in enumerate(jobs)]
    assert len({j.fine_tuned_model for j in done}) == 6
    runs = []
    for job in jobs:
        job_runs = spans(first.data_dir / "jobs" / job.id / "train.log")
        assert len(job_runs) == 1  # trained exactly once
        runs += job_runs
        messages = [e.message for e in _events(clients[0], job.id)]
        assert messages.count("Fine-tuning job started") == 1
        assert messages.count("The job has successfully completed") == 1
        created = [e.created_at for e in _events(clients[1], job.id)]
        assert created == sorted(created)
        steps = [e.data["step"] for e in _events(clients[1], job.id) if e.type == "metrics"]
        assert steps == list(range(1, len(steps) + 1)) and steps  # every step once, in order
    assert not overlapping(runs)
    assert len({node for node, _, _ in runs}) == 2


def test_a_job_whose_node_dies_resumes_elsewhere_with_the_same_adapter(make_server, cluster, database_settings,
                                                                        tmp_path, chat_data, wait):
    first, second = _replicas(make_server, cluster, database_settings, tmp_path)
    key = first.key("alpha")
    client = first.client(key)
    training = client.files.create(file=("facts.jsonl", chat_data), purpose="fine-tune")
    job = second.client(key).fine_tuning.jobs.create(model="tiny-llama", training_file=training.id, method=LONG,
                                                     seed=5)
    log = first.data_dir / "jobs" / job.id / "train.log"
    wait(client, job.id, ("running",), check=lambda j: client.fine_tuning.jobs.checkpoints.list(j.id).data, timeout=300)
    found = subprocess.run(["pgrep", "-f", f"{job.id}/config.yaml"], capture_output=True, text=True).stdout
    trainers = [int(pid) for pid in found.split()]
    _kill_node_running(cluster, log, trainers)
    done = wait(client, job.id, ("succeeded",), timeout=300)
    messages = [e.message for e in _events(client, job.id)]
    assert any(m.startswith("The node training the job went away") for m in messages)
    resumed = [m for m in messages if m.startswith("Resuming training from the checkpoint at step")]
    assert resumed and int(resumed[0].rsplit(" ", 1)[1]) > 0
    nodes = [n for n, k, _ in SPAN.findall(log.read_text()) if k == "start"]
    assert len(nodes) == 2 and nodes[0] != nodes[1]
    steps = [e.data["step"] for e in _events(client, job.id) if e.type == "metrics"]
    assert steps == list(range(1, len(steps) + 1))  # recorded exactly once across the two runs
    assert done.fine_tuned_model
    # The same job again, uninterrupted, trains to exactly the same adapter.
    again = client.fine_tuning.jobs.create(model="tiny-llama", training_file=training.id, method=LONG, seed=5)
    wait(client, again.id, ("succeeded",), timeout=300)
    adapter, reference = _final_adapter(first.data_dir, job.id), _final_adapter(first.data_dir, again.id)
    assert adapter.keys() == reference.keys() and adapter
    assert all(torch.equal(adapter[k], reference[k]) for k in reference)


ROOT = Path(__file__).resolve().parents[3]
TWEETS = ROOT.parent / "shared" / "data" / "tweeteval" / "emotion"


@pytest.mark.skipif(not TWEETS.is_dir(), reason="shared data not found")
def test_two_ranks_on_two_nodes_train_as_one_process_with_the_same_global_batch(cluster, tmp_path):
    executor = RayExecutor(cluster.address)

    def losses(name: str, num_processes: int, *overrides: str) -> list[float]:
        runs = tmp_path / name
        settings = [f"data.train_file={TWEETS / 'train_text.txt'}", f"data.validation_file={TWEETS / 'val_text.txt'}",
                    f"data.test_file={TWEETS / 'test_text.txt'}", "data.max_validation_examples=8",
                    "training.max_steps=4", "training.precision=fp32", "training.warmup_ratio=0", "lora.dropout=0",
                    "training.lr_scheduler=constant", "training.eval_every=4", "eval.at_end=false",
                    f"output.dir={runs}", f"training.num_processes={num_processes}", *overrides]
        args = ["train", str(ROOT / "configs" / "tiny.yaml"), *[a for s in settings for a in ("--set", s)]]
        log = tmp_path / f"{name}.log"
        handle = executor.submit("lmtune.cli", args, log_path=log, resources=Resources(cpus=1),
                                 num_processes=num_processes)
        assert handle.wait(300) == 0, log.read_text()[-3000:]
        (run,) = runs.iterdir()
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if "loss" in r]

    two = losses("two", 2, "training.batch_size=4")
    logs = [tmp_path / "two.log", tmp_path / "two.rank1.log"]
    assert len({node for log in logs for node, kind, _ in SPAN.findall(log.read_text()) if kind == "start"}) == 2
    one = losses("one", 1, "training.batch_size=4", "training.grad_accum=2")
    assert len(one) == 4
    assert one == pytest.approx(two, abs=1e-5)
