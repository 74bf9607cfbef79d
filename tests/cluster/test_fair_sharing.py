"""Fair sharing end to end: a real server with one worker, one project queueing 5 jobs, another 1."""

from __future__ import annotations

import pytest

from ..integration.serve import conftest as serve  # the serve suite's Server helpers

pytestmark = pytest.mark.slow
SHORT = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 4}}}


def test_a_project_with_five_queued_jobs_does_not_delay_another_projects_single_job(make_server, chat_data):
    server = make_server("fair")
    server.start()
    busy, single = (server.client(server.key(p)) for p in ("busy", "single"))
    busy_file = busy.files.create(file=("facts.jsonl", chat_data), purpose="fine-tune")
    single_file = single.files.create(file=("facts.jsonl", chat_data), purpose="fine-tune")
    queued = [busy.fine_tuning.jobs.create(model="tiny-llama", training_file=busy_file.id, method=SHORT, seed=i)
              for i in range(5)]
    mine = single.fine_tuning.jobs.create(model="tiny-llama", training_file=single_file.id, method=SHORT)
    serve.wait_for(single, mine.id, ("succeeded",), timeout=240)
    statuses = [busy.fine_tuning.jobs.retrieve(j.id).status for j in queued]
    # First come first served would have trained all 5 first; fair: one of them, then the single job
    # (the worker may have taken the busy project's second job by the time we look).
    assert statuses[0] == "succeeded" and statuses[2:] == ["queued"] * 3, statuses
    for job, status in zip(queued, statuses):
        if status != "succeeded":
            busy.fine_tuning.jobs.cancel(job.id)  # nothing more to see: stop the server sooner
