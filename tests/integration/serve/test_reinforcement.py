"""Reinforcement fine-tuning through the official openai client: one job per grader type on tiny-llama."""

from __future__ import annotations

import io
import json

import pytest

pytestmark = pytest.mark.slow

PROMPTS = [("What is 2 + 2?", "4"), ("What is 3 + 5?", "8"), ("What is 10 - 7?", "3"), ("What is 6 / 2?", "3"),
           ("What is 4 * 2?", "8"), ("What is 9 - 4?", "5"), ("What is 1 + 1?", "2"), ("What is 7 + 2?", "9")]
VALID = [("What is 5 + 5?", "10"), ("What is 8 - 2?", "6")]
SAMPLE = "{{ sample.output_text }}"
NUMERIC = "def grade(sample, item):\n    return float(item['answer'] in sample['output_text'])\n"
GRADERS = {
    "string_check": {"type": "string_check", "name": "exact", "input": SAMPLE, "reference": "{{ item.answer }}",
                     "operation": "ilike"},
    "text_similarity": {"type": "text_similarity", "name": "fuzzy", "input": SAMPLE,
                        "reference": "The answer is {{ item.answer }}.", "evaluation_metric": "fuzzy_match"},
    "python": {"type": "python", "name": "numeric", "source": NUMERIC},
    "score_model": {"type": "score_model", "name": "judge", "model": "tiny-llama", "range": [0, 1],
                    "sampling_params": {"max_completions_tokens": 4},
                    "input": [{"role": "user", "content": f"Answer {{{{ item.answer }}}}. Reply: {SAMPLE}"}]},
    "label_model": {"type": "label_model", "name": "label", "model": "tiny-llama", "labels": ["right", "wrong"],
                    "passing_labels": ["right"],
                    "input": [{"role": "user", "content": f"Is {SAMPLE} equal to {{{{ item.answer }}}}?"}]},
    "multi": {"type": "multi", "name": "combined", "calculate_output": "0.7 * numeric + 0.3 * fmt",
              "graders": {"numeric": {"type": "python", "name": "numeric", "source": NUMERIC},
                          "fmt": {"type": "string_check", "name": "fmt", "input": SAMPLE, "reference": "4",
                                  "operation": "like"}}},
}


def rft_jsonl(missing_answer_on: int | None = None, prompts=PROMPTS) -> bytes:
    rows = []
    for k, (q, a) in enumerate(prompts):
        row = {"messages": [{"role": "user", "content": q}], "answer": a}
        if k == missing_answer_on:
            del row["answer"]
        rows.append(json.dumps(row))
    return ("\n".join(rows) + "\n").encode()


@pytest.fixture(scope="module")
def rft_server(module_server):
    srv = module_server("rft")
    srv.start()
    srv.keys = {"alpha": srv.key("alpha")}
    return srv


@pytest.fixture(scope="module")
def rft_files(rft_server):
    client = rft_server.client(rft_server.keys["alpha"])
    train = client.files.create(file=("rft.jsonl", io.BytesIO(rft_jsonl())), purpose="fine-tune").id
    valid = client.files.create(file=("rft-valid.jsonl", io.BytesIO(rft_jsonl(prompts=VALID))), purpose="fine-tune").id
    return train, valid


@pytest.mark.parametrize("kind", list(GRADERS))
def test_reinforcement_job_succeeds_for_each_grader_type(rft_server, rft_files, wait, kind):
    client = rft_server.client(rft_server.keys["alpha"])
    job = client.fine_tuning.jobs.create(
        model="tiny-llama", training_file=rft_files[0], validation_file=rft_files[1], suffix=kind.replace("_", "-"),
        method={"type": "reinforcement", "reinforcement": {
            "grader": GRADERS[kind],
            "hyperparameters": {"n_epochs": 1, "batch_size": 2, "eval_interval": 2, "eval_samples": 2,
                                "compute_multiplier": 0.5}}})
    assert job.method.type == "reinforcement" and job.method.reinforcement.grader.type == kind
    done = wait(client, job.id, timeout=300)
    assert done.status == "succeeded", done.error
    events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    metrics = [e.data for e in events if e.type == "metrics"]
    assert metrics and all(0.0 <= m["train_reward_mean"] <= 1.0 for m in metrics)
    assert any("valid_reward_mean" in m for m in metrics)
    answer = client.chat.completions.create(model=done.fine_tuned_model, max_tokens=4,
                                            messages=[{"role": "user", "content": "What is 2 + 2?"}])
    assert answer.choices[0].message.content is not None


def test_a_line_without_a_field_the_grader_reads_fails_validation_with_its_line(rft_server, wait):
    client = rft_server.client(rft_server.keys["alpha"])
    bad = client.files.create(file=("bad.jsonl", io.BytesIO(rft_jsonl(missing_answer_on=2))), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="tiny-llama", training_file=bad.id, method={
        "type": "reinforcement", "reinforcement": {"grader": GRADERS["string_check"]}})
    done = wait(client, job.id, statuses=("failed",), timeout=60)
    assert "bad.jsonl:3" in done.error.message and "answer" in done.error.message
