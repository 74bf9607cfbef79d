"""Replicas sharing one data folder: a worker runs on its own server's settings, not the folder's serve.json.

Each replica writes <data_dir>/serve.json. A worker that read the file another replica wrote last took
that replica's worker count: worker 0 of a 2-worker server, told "1 worker", treated the job worker 1
was running as its own orphan, queued it again and started it a second time (found by the Ray
node-death test under load: two training tasks of one job on two nodes).
"""

from __future__ import annotations

import time

from lmtune.serve.app import start_worker
from lmtune.serve.config import ServeConfig
from lmtune.serve.store import Store

from .test_store import add_job


def test_a_late_worker_keeps_its_servers_worker_count_and_leaves_a_siblings_job_alone(tmp_path):
    root = tmp_path / "shared-data"
    mine = ServeConfig(data_dir=str(root), workers=2, poll_seconds=0.1)
    store = Store(mine.database)
    job_id = add_job(store, "alpha", status="running")
    store.execute("UPDATE jobs SET worker=1, replica=? WHERE id=?", (mine.replica, job_id))  # worker 1 runs it
    ServeConfig(data_dir=str(root), workers=1, start_workers=False).save()  # the other replica wrote last
    worker = start_worker(mine, 0)
    try:
        deadline = time.time() + 120
        while store.one("SELECT idx FROM workers WHERE idx=0") is None:  # its first heartbeat: orphans handled
            assert worker.poll() is None, f"worker 0 exited with {worker.returncode}"
            assert time.time() < deadline, "worker 0 did not start within 120 s"
            time.sleep(0.2)
    finally:
        worker.terminate()
        worker.wait(30)
    row = store.one("SELECT status, worker FROM jobs WHERE id=?", (job_id,))
    assert (row["status"], row["worker"]) == ("running", 1)
    assert not store.all("SELECT message FROM events WHERE job_id=?", (job_id,))
