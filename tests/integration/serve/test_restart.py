"""A server killed with SIGKILL mid-job (worker and training process too) loses nothing: on restart the
job continues from its last checkpoint and finishes; files, jobs and events are all still there."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_sigkill_mid_job_then_restart_resumes_from_the_checkpoint(make_server, chat_data, wait):
    server = make_server("crash")
    server.start()
    key = server.key("alpha")
    client = server.client(key)
    files = [client.files.create(file=(f"facts{i}.jsonl", chat_data), purpose="fine-tune") for i in range(2)]
    method = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 30, "batch_size": 4}}}
    job = client.fine_tuning.jobs.create(model="tiny-llama", training_file=files[0].id, method=method, seed=3)
    queued = client.fine_tuning.jobs.create(model="tiny-llama", training_file=files[1].id, method=method)
    wait(client, job.id, ("running",), check=lambda j: client.fine_tuning.jobs.checkpoints.list(j.id).data)
    server.kill()

    server.start()
    client = server.client(key)  # the key survived too
    assert {f.id for f in client.files.list()} >= {f.id for f in files}
    assert client.files.content(files[0].id).content == chat_data
    assert client.fine_tuning.jobs.retrieve(queued.id).status in ("validating_files", "queued")
    done = wait(client, job.id, ("succeeded",), timeout=150)
    events = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=1000)][::-1]
    resumed = [m for m in events if m.startswith("Resuming training from the checkpoint at step")]
    assert "The server restarted; the job continues from its last checkpoint" in events and resumed
    assert int(resumed[0].rsplit(" ", 1)[1]) > 0
    steps = [e.data["step"] for e in client.fine_tuning.jobs.list_events(job.id, limit=1000) if e.type == "metrics"]
    assert sorted(steps) == list(range(1, 30 * 4 + 1))  # every step recorded once, none lost or repeated
    assert done.trained_tokens > 0
    client.fine_tuning.jobs.cancel(queued.id)
