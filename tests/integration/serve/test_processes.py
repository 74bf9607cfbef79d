"""A job with hyperparameter num_processes 2 trains as two data-parallel processes (local executor)."""

from __future__ import annotations

import math

import openai

import pytest
import yaml

pytestmark = pytest.mark.slow


def test_a_job_on_two_processes_trains_with_the_global_batch(make_server, chat_data, wait):
    server = make_server("ranks")
    server.start()
    client = server.client(server.key("alpha"))
    training = client.files.create(file=("facts.jsonl", chat_data), purpose="fine-tune")
    method = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 2,
                                                                        "num_processes": 2}}}
    job = client.fine_tuning.jobs.create(model="tiny-llama", training_file=training.id, method=method)
    wait(client, job.id, ("succeeded",), timeout=300)
    (run,) = (server.data_dir / "runs").glob(f"{job.id}-*")
    assert yaml.safe_load((run / "config.yaml").read_text())["training"]["num_processes"] == 2
    train_examples = 16 - 2  # the server's 10 % validation split of 16 examples
    steps = [e.data["step"] for e in client.fine_tuning.jobs.list_events(job.id, limit=1000) if e.type == "metrics"]
    # Each step takes 2 examples on each of the 2 processes: a global batch of 4.
    assert sorted(steps) == list(range(1, 2 * math.ceil(train_examples / 4) + 1))
    with pytest.raises(openai.BadRequestError, match="num_processes"):
        bad = {"type": "supervised", "supervised": {"hyperparameters": {"num_processes": 0}}}
        client.fine_tuning.jobs.create(model="tiny-llama", training_file=training.id, method=bad)
