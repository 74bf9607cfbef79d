"""Fine-tuning end to end through the official openai client: jobs, events, checkpoints, inference,
cancel, pause/resume, project isolation, model deletion, and DPO."""

from __future__ import annotations

import csv
import io

import httpx
import openai
import pytest

pytestmark = pytest.mark.slow
SUPERVISED = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 4}}}
LONG = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 200, "batch_size": 4}}}


@pytest.fixture(scope="module")
def finished(alpha, chat_data, wait):
    """(job, cancelled job): a long job paused, resumed and cancelled while running; a short one trained to the end."""
    f = alpha.files.create(file=("facts.jsonl", chat_data), purpose="fine-tune")
    doomed = alpha.fine_tuning.jobs.create(model="tiny-llama", training_file=f.id, method=LONG, seed=1)
    job = alpha.fine_tuning.jobs.create(model="tiny-llama", training_file=f.id, method=SUPERVISED, seed=7,
                                        suffix="facts", metadata={"team": "docs"})
    waiting = alpha.fine_tuning.jobs.create(model="tiny-llama", training_file=f.id, method=SUPERVISED)
    # The worker trains one job at a time: the first is running, the others wait in the queue.
    wait(alpha, doomed.id, ("running",), check=lambda j: alpha.fine_tuning.jobs.checkpoints.list(j.id).data)
    assert alpha.fine_tuning.jobs.retrieve(job.id).status == "queued"
    assert alpha.fine_tuning.jobs.pause(waiting.id).status == "paused"
    assert alpha.fine_tuning.jobs.resume(waiting.id).status == "queued"
    assert alpha.fine_tuning.jobs.cancel(waiting.id).status == "cancelled"
    # Pause a running job: it stops after its next checkpoint and the worker is free for the next job.
    # Resumed, it continues from that checkpoint (after `job`, if the worker took that one meanwhile).
    assert alpha.fine_tuning.jobs.pause(doomed.id).status == "paused"
    wait(alpha, doomed.id, ("paused",), check=lambda j: _said(alpha, j.id, "Training paused after the checkpoint"))
    assert alpha.fine_tuning.jobs.resume(doomed.id).status == "queued"
    wait(alpha, doomed.id, ("running",), check=lambda j: _said(alpha, j.id, "Resuming training from the checkpoint"))
    cancelled = alpha.fine_tuning.jobs.cancel(doomed.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    done = wait(alpha, job.id, ("succeeded",))
    return done, alpha.fine_tuning.jobs.retrieve(doomed.id)


def _said(client, job_id: str, text: str) -> bool:
    return any(e.message.startswith(text) for e in client.fine_tuning.jobs.list_events(job_id, limit=1000))


def test_paused_resumed_then_cancelled_job(alpha, finished, wait):
    _, doomed = finished
    # The worker stops the training child on its next poll after the cancel; wait for it to say so.
    wait(alpha, doomed.id, ("cancelled",), check=lambda j: _said(alpha, j.id, "Training stopped: the job was cancelled"))
    assert doomed.status == "cancelled" and doomed.fine_tuned_model is None
    messages = [e.message for e in alpha.fine_tuning.jobs.list_events(doomed.id, limit=1000)]
    assert "Training stopped: the job was cancelled" in messages
    steps = [e.data["step"] for e in alpha.fine_tuning.jobs.list_events(doomed.id, limit=1000) if e.type == "metrics"]
    assert 0 < len(steps) < 200 * 4  # it trained, and it did not train to the end
    assert sorted(steps) == list(range(1, len(steps) + 1))  # pause and resume lost and repeated no step
    with pytest.raises(openai.ConflictError):
        alpha.fine_tuning.jobs.cancel(doomed.id)


def test_succeeded_job_has_model_tokens_results_events_and_checkpoints(alpha, finished):
    job, _ = finished
    assert job.fine_tuned_model == f"ft:tiny-llama:alpha:facts:{job.id.removeprefix('ftjob-')}"
    assert job.trained_tokens > 0 and job.finished_at >= job.created_at
    assert job.hyperparameters.n_epochs == 2 and job.method.type == "supervised" and job.metadata == {"team": "docs"}
    rows = list(csv.DictReader(io.StringIO(alpha.files.content(job.result_files[0]).text)))
    assert [int(r["step"]) for r in rows] == list(range(1, len(rows) + 1)) and len(rows) >= 6  # 14 train rows / 4, 2 epochs
    assert all(float(r["train_loss"]) > 0 for r in rows)
    assert alpha.files.retrieve(job.result_files[0]).purpose == "fine-tune-results"
    events = list(alpha.fine_tuning.jobs.list_events(job.id, limit=3).iter_pages())
    everything = [e for page in events for e in page.data]
    assert len(events) > 1 and len({e.id for e in everything}) == len(everything)
    messages = [e.message for e in everything][::-1]  # oldest first
    assert messages[0].startswith("Created fine-tuning job") and messages[-1] == "The job has successfully completed"
    metrics = [e for e in everything if e.type == "metrics"]
    assert len(metrics) == len(rows) and metrics[0].data["step"] == len(rows)
    checkpoints = alpha.fine_tuning.jobs.checkpoints.list(job.id).data
    assert checkpoints and checkpoints[0].step_number == len(rows)
    assert checkpoints[0].fine_tuned_model_checkpoint == f"{job.fine_tuned_model}:ckpt-step-{len(rows)}"
    assert checkpoints[0].metrics.train_loss == pytest.approx(float(rows[-1]["train_loss"]))


def test_jobs_list_pages_newest_first(alpha, finished):
    pages = list(alpha.fine_tuning.jobs.list(limit=2).iter_pages())
    ids = [j.id for page in pages for j in page.data]
    assert len(pages) >= 2 and pages[0].has_more and not pages[-1].has_more
    assert ids.index(finished[0].id) < ids.index(finished[1].id)  # created later, listed first


def test_jobs_list_filters_by_metadata(alpha, finished):
    job = finished[0]  # the only job with metadata {"team": "docs"}
    assert [j.id for j in alpha.fine_tuning.jobs.list(metadata={"team": "docs"})] == [job.id]
    assert list(alpha.fine_tuning.jobs.list(metadata={"team": "ops"})) == []
    assert list(alpha.fine_tuning.jobs.list(metadata={"team": "docs", "other": "x"})) == []


def test_chat_streamed_and_not_with_the_fine_tuned_model(alpha, finished, server):
    model = finished[0].fine_tuned_model
    messages = [{"role": "user", "content": "What floats?"}]
    reply = alpha.chat.completions.create(model=model, messages=messages, max_tokens=12, temperature=0)
    text = reply.choices[0].message.content
    assert reply.object == "chat.completion" and reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens <= 12 and reply.usage.prompt_tokens > 0
    stream = alpha.chat.completions.create(model=model, messages=messages, max_tokens=12, temperature=0, stream=True,
                                           stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text  # greedy: same text
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens and not chunks[-1].choices
    raw = httpx.post(server.url + "/v1/chat/completions", json={"model": model, "messages": messages,
                     "max_completion_tokens": 3, "stream": True},
                     headers={"Authorization": f"Bearer {server.keys['alpha']}"}).text
    assert raw.startswith("data: {") and raw.endswith("data: [DONE]\n\n")
    done = alpha.completions.create(model=model, prompt=["Once upon", "A cat"], max_tokens=4, n=2, temperature=0.8)
    assert len(done.choices) == 4 and {c.index for c in done.choices} == {0, 1, 2, 3}
    base = alpha.chat.completions.create(model="tiny-llama", messages=messages, max_tokens=4, temperature=0)
    assert base.model == "tiny-llama"


def test_other_projects_get_404_for_every_resource(alpha, beta, finished):
    job, _ = finished
    file_id = job.training_file
    model = job.fine_tuned_model
    calls = [lambda: beta.files.retrieve(file_id), lambda: beta.files.content(file_id),
             lambda: beta.files.delete(file_id), lambda: beta.fine_tuning.jobs.retrieve(job.id),
             lambda: beta.fine_tuning.jobs.list_events(job.id), lambda: beta.fine_tuning.jobs.checkpoints.list(job.id),
             lambda: beta.fine_tuning.jobs.cancel(job.id), lambda: beta.fine_tuning.jobs.pause(job.id),
             lambda: beta.models.retrieve(model), lambda: beta.models.delete(model),
             lambda: beta.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}]),
             lambda: beta.fine_tuning.jobs.create(model="tiny-llama", training_file=file_id)]
    for call in calls:
        with pytest.raises(openai.NotFoundError):
            call()
    assert job.id not in [j.id for j in beta.fine_tuning.jobs.list()]
    assert model not in [m.id for m in beta.models.list()] and "tiny-llama" in [m.id for m in beta.models.list()]
    assert alpha.models.retrieve(model).owned_by == "alpha"  # untouched by beta's attempts


def test_deleting_the_fine_tuned_model(alpha, finished):
    model = finished[0].fine_tuned_model
    alpha.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert alpha.models.delete(model).deleted
    with pytest.raises(openai.NotFoundError):
        alpha.models.retrieve(model)
    with pytest.raises(openai.NotFoundError):
        alpha.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    assert model not in [m.id for m in alpha.models.list()]


def test_dpo_job(alpha, dpo_data, wait, finished):
    """Needs method.task dpo in the training loop (an objective named dpo)."""
    f = alpha.files.create(file=("prefs.jsonl", dpo_data), purpose="fine-tune")
    method = {"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 1, "batch_size": 4, "beta": 0.2}}}
    job = alpha.fine_tuning.jobs.create(model="tiny-llama", training_file=f.id, method=method)
    assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.2
    job = wait(alpha, job.id, ("succeeded", "failed"))
    assert job.status == "succeeded", job.error
    reply = alpha.chat.completions.create(model=job.fine_tuned_model, messages=[{"role": "user", "content": "Hi"}],
                                          max_tokens=4, temperature=0)
    assert reply.choices[0].message.role == "assistant"


def test_dpo_job_with_a_file_that_is_not_preference_pairs_fails_validation(alpha, dpo_data, wait):
    method = {"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 1}}}
    chat_file = alpha.files.create(file=("chat.jsonl", dpo_data.replace(b'"preferred_output"', b'"x"')),
                                   purpose="fine-tune")
    bad = wait(alpha, alpha.fine_tuning.jobs.create(model="tiny-llama", training_file=chat_file.id, method=method).id,
               ("failed",))
    assert bad.error.code == "invalid_training_file"
