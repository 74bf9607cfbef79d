"""What an OpenAI client met beyond plain chat fine-tuning, through the official client: a function-calling
training file trains, progress is reported as OpenAI reports it (metric events with step/total_steps,
validation loss and token accuracy at every evaluation, the result CSV's columns), checkpoint ids are
models, and chat takes tools, tool messages and response_format."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import openai
import pytest

pytestmark = pytest.mark.slow
FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "function_calling.jsonl"
TOOLS = [{"type": "function", "function": {"name": "get_current_weather", "parameters": {
    "type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}]
ASK = [{"role": "user", "content": "Weather in Oslo?"}]


@pytest.fixture(scope="module")
def tool_job(alpha, wait):
    """A finished job on the OpenAI function-calling fixture (5 lines, batch 1, 2 epochs: 10 steps)."""
    train = alpha.files.create(file=("function_calling.jsonl", FIXTURE.read_bytes()), purpose="fine-tune")
    valid = alpha.files.create(file=("function_calling_valid.jsonl", FIXTURE.read_bytes()), purpose="fine-tune")
    method = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 1}}}
    job = alpha.fine_tuning.jobs.create(model="tiny-llama", training_file=train.id, validation_file=valid.id,
                                        method=method, seed=3)
    return wait(alpha, job.id, ("succeeded",), timeout=300)


def test_progress_as_openai_reports_it(alpha, tool_job):
    events = [e for e in alpha.fine_tuning.jobs.list_events(tool_job.id, limit=1000) if e.type == "metrics"][::-1]
    total = events[-1].data["total_steps"]
    assert total == 10 and [e.data["step"] for e in events] == list(range(1, 11))
    assert all(e.data["total_steps"] == 10 and 0 <= e.data["train_mean_token_accuracy"] <= 1 for e in events)
    # Validation loss and token accuracy at every evaluation (once per epoch), not only at the end.
    evals = [e.data for e in events if "valid_loss" in e.data]
    assert [d["step"] for d in evals] == [5, 10]
    assert all(d["valid_loss"] > 0 and 0 <= d["valid_mean_token_accuracy"] <= 1 for d in evals)
    assert events[-1].message.startswith("Step 10/10: training loss=") and "validation loss=" in events[-1].message
    rows = list(csv.DictReader(io.StringIO(alpha.files.content(tool_job.result_files[0]).text)))
    assert list(rows[0])[:5] == ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
    assert [r["step"] for r in rows if r["valid_loss"]] == ["5", "10"]
    assert tool_job.estimated_finish is None  # only a running job has one
    newest = alpha.fine_tuning.jobs.checkpoints.list(tool_job.id).data[0]
    assert newest.step_number == 10 and newest.metrics.valid_loss == pytest.approx(evals[-1]["valid_loss"])
    assert newest.metrics.valid_mean_token_accuracy == pytest.approx(evals[-1]["valid_mean_token_accuracy"])


def test_chat_with_a_checkpoint_id(alpha, beta, tool_job):
    checkpoints = alpha.fine_tuning.jobs.checkpoints.list(tool_job.id).data
    earlier = checkpoints[1].fine_tuned_model_checkpoint  # step 8: kept (the server keeps the latest 3)
    assert earlier.endswith(":ckpt-step-8") and alpha.models.retrieve(earlier).id == earlier
    reply = alpha.chat.completions.create(model=earlier, messages=ASK, max_tokens=8, temperature=0)
    assert reply.model == earlier and reply.choices[0].message.content is not None
    again = alpha.chat.completions.create(model=earlier, messages=ASK, max_tokens=8, temperature=0)
    assert again.choices[0].message.content == reply.choices[0].message.content  # the built folder is reused
    with pytest.raises(openai.NotFoundError):
        beta.chat.completions.create(model=earlier, messages=ASK, max_tokens=4)
    with pytest.raises(openai.NotFoundError):
        beta.models.retrieve(earlier)


def test_chat_with_tools_tool_messages_and_response_format(alpha, tool_job):
    model = tool_job.fine_tuned_model
    history = [*ASK, {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
               "function": {"name": "get_current_weather", "arguments": '{"location": "Oslo"}'}}]},
               {"role": "tool", "tool_call_id": "call_1", "content": "9 C"}]
    reply = alpha.chat.completions.create(model=model, messages=history, tools=TOOLS, max_tokens=16, temperature=0)
    assert reply.choices[0].finish_reason in ("stop", "length", "tool_calls")
    # A named function starts the answer with the call's opening; 4 tokens cannot complete it: 422, not a half call.
    named = {"type": "function", "function": {"name": "get_current_weather"}}
    with pytest.raises(openai.UnprocessableEntityError) as unmet:
        alpha.chat.completions.create(model=model, messages=ASK, tools=TOOLS, tool_choice=named, max_tokens=4,
                                      temperature=0)
    assert unmet.value.code == "tool_choice_not_met"
    with pytest.raises(openai.BadRequestError) as refused:
        alpha.chat.completions.create(model=model, messages=ASK, tool_choice="required", max_tokens=4)
    assert refused.value.param == "tool_choice"
    # A conversation the model's template cannot render is the client's to fix: 400, not a server error.
    with pytest.raises(openai.BadRequestError) as unrenderable:
        alpha.chat.completions.create(model=model, messages=[{"role": "assistant", "content": "Hi!"}], max_tokens=4)
    assert unrenderable.value.param == "messages" and "starts with an assistant turn" in unrenderable.value.message
    # A random tiny model does not write JSON: the answer is refused with the reason, never passed as JSON.
    with pytest.raises(openai.UnprocessableEntityError) as unmet:
        alpha.chat.completions.create(model="tiny-llama", messages=ASK, response_format={"type": "json_object"},
                                      max_tokens=8, temperature=0)
    assert unmet.value.code == "response_format_not_met" and "not valid JSON" in unmet.value.message
