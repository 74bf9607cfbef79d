"""Several `lmtune serve` replicas on one PostgreSQL database, and PostgreSQL stopped mid-run.

Real servers (subprocesses with their workers and training children), a real PostgreSQL server,
and the official openai client; the server helpers are those of tests/integration/serve.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import openai
import pytest

from lmtune.serve.store import Store

from ..integration.serve import conftest as serve  # the serve suite's Server helpers

pytestmark = pytest.mark.slow
SHORT = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 4}}}


def make_key(server, project: str, database_url: str) -> str:
    """`lmtune keys create` against the replicas' shared database."""
    out = subprocess.run([sys.executable, "-m", "lmtune.serve", "keys", "create", "--project", project,
                          "--data-dir", str(server.data_dir), "--database-url", database_url],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def started_events(client: openai.OpenAI, job_id: str) -> list[str]:
    events = [e for e in client.fine_tuning.jobs.list_events(job_id, limit=1000)][::-1]
    assert len({e.id for e in events}) == len(events)
    return [e.message for e in events if e.message == "Fine-tuning job started"]


def test_two_replicas_on_one_database_run_every_job_exactly_once(make_server, fresh_postgres, chat_data):
    replicas = [make_server(f"r{i}", database_url=fresh_postgres) for i in range(2)]
    for r in replicas:
        r.start()
    key = make_key(replicas[0], "alpha", fresh_postgres)
    clients = [r.client(key) for r in replicas]
    try:
        files = [c.files.create(file=(f"facts{i}.jsonl", chat_data), purpose="fine-tune")
                 for i, c in enumerate(clients)]
        jobs = [clients[i % 2].fine_tuning.jobs.create(model="tiny-llama", training_file=files[i % 2].id,
                                                       method=SHORT, seed=i) for i in range(4)]
        # Any replica answers for any job, whichever replica took the request.
        assert {j.id for j in clients[1].fine_tuning.jobs.list(limit=10)} == {j.id for j in jobs}
        done = [serve.wait_for(clients[(i + 1) % 2], j.id, ("succeeded",), timeout=240) for i, j in enumerate(jobs)]
        assert all(d.fine_tuned_model for d in done)
        for job in jobs:
            assert started_events(clients[0], job.id) == ["Fine-tuning job started"]  # trained once
            steps = [e.data["step"] for e in clients[1].fine_tuning.jobs.list_events(job.id, limit=1000)
                     if e.type == "metrics"]
            assert sorted(steps) == list(range(1, len(steps) + 1)) and steps
        ran_on = {r["replica"] for r in Store(fresh_postgres).all("SELECT replica FROM jobs")}
        assert ran_on <= {f"{socket.gethostname()}:{r.data_dir}" for r in replicas}
    finally:
        for r in replicas:
            r.stop()


def test_postgres_stopped_mid_run_gives_503_then_nothing_is_lost(make_server, postgres_server, fresh_postgres,
                                                                  chat_data):
    server = make_server("pgdown", database_url=fresh_postgres)
    server.start()
    client = server.client(make_key(server, "alpha", fresh_postgres))
    f = client.files.create(file=("facts.jsonl", chat_data), purpose="fine-tune")
    long = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 12, "batch_size": 4}}}
    job = client.fine_tuning.jobs.create(model="tiny-llama", training_file=f.id, method=long, seed=3)
    queued = client.fine_tuning.jobs.create(model="tiny-llama", training_file=f.id, method=SHORT, seed=4)
    serve.wait_for(client, job.id, ("running",), check=lambda j: client.fine_tuning.jobs.checkpoints.list(j.id).data)

    postgres_server.stop("fast")
    try:
        for call in (client.files.list, lambda: client.fine_tuning.jobs.retrieve(job.id),
                     lambda: client.fine_tuning.jobs.create(model="tiny-llama", training_file=f.id)):
            with pytest.raises(openai.InternalServerError) as caught:
                call()
            assert caught.value.status_code == 503
            error = caught.value.response.json()["error"]
            assert error["code"] == "database_unavailable" and error["type"] == "server_error"
            assert "Traceback" not in caught.value.response.text
        health = httpx.get(server.url + "/health", timeout=10)
        assert health.status_code == 503
        time.sleep(3)  # the worker keeps training while it cannot record anything
    finally:
        postgres_server.start()

    assert client.files.retrieve(f.id).id == f.id  # acknowledged before the outage: still there
    done = serve.wait_for(client, job.id, ("succeeded",), timeout=240)
    after = serve.wait_for(client, queued.id, ("succeeded",), timeout=240)  # queued before: runs after
    assert done.fine_tuned_model and after.fine_tuned_model
    steps = [e.data["step"] for e in client.fine_tuning.jobs.list_events(job.id, limit=1000) if e.type == "metrics"]
    assert sorted(steps) == list(range(1, 12 * 4 + 1))  # every step recorded once, also those of the outage
    assert started_events(client, job.id) == ["Fine-tuning job started"]
    server.stop()
