"""The HTTP surface without training: auth, files, errors in OpenAI's shape, OpenAPI, metrics, validation."""

from __future__ import annotations

import re

import httpx
import openai
import pytest


def test_no_key_or_a_wrong_key_is_401_in_openai_shape(server):
    for headers in ({}, {"Authorization": "Bearer sk-lmt-wrong"}, {"Authorization": "Basic abc"}):
        resp = httpx.get(server.url + "/v1/files", headers=headers)
        assert resp.status_code == 401
        error = resp.json()["error"]
        assert error["type"] == "invalid_request_error" and error["code"] == "invalid_api_key"
        assert set(error) == {"message", "type", "param", "code"}
    with pytest.raises(openai.AuthenticationError):
        server.client("sk-lmt-not-a-key").models.list()


def test_files_upload_page_retrieve_download_delete(alpha, beta, chat_data):
    data = chat_data
    ids = [alpha.files.create(file=(f"part{i}.jsonl", data), purpose="fine-tune").id for i in range(3)]
    page = alpha.files.list(limit=2)
    assert [f.id for f in page.data] == ids[::-1][:2] and page.has_more
    assert [f.id for f in alpha.files.list(limit=2, order="asc").data][:2] == ids[:2]
    listed = [f.id for f in alpha.files.list(limit=1).iter_pages() for f in f.data]  # noqa: B020
    assert [i for i in listed if i in ids] == ids[::-1]
    got = alpha.files.retrieve(ids[0])
    assert (got.filename, got.bytes, got.purpose, got.object) == ("part0.jsonl", len(data), "fine-tune", "file")
    assert alpha.files.content(ids[0]).content == data
    assert beta.files.list().data == [] or ids[0] not in [f.id for f in beta.files.list().data]
    deleted = alpha.files.delete(ids[1])
    assert deleted.deleted and deleted.id == ids[1]
    with pytest.raises(openai.NotFoundError):
        alpha.files.retrieve(ids[1])


def test_filename_is_only_sanitised_metadata(alpha, server, chat_data):
    f = alpha.files.create(file=("../../evil\x00/../name.jsonl", chat_data), purpose="fine-tune")
    assert "/" not in f.filename and "\x00" not in f.filename and f.filename.endswith("name.jsonl")
    blobs = list((server.data_dir / "blobs").iterdir())
    assert all(p.name.startswith("file-") for p in blobs)


def test_upload_over_the_limit_is_413_and_bad_purpose_400(alpha, chat_data):
    with pytest.raises(openai.APIStatusError) as err:
        alpha.files.create(file=("big.jsonl", b"x" * 300_000), purpose="fine-tune")
    assert err.value.status_code == 413
    with pytest.raises(openai.BadRequestError) as err:
        alpha.files.create(file=("a.jsonl", chat_data), purpose="assistants")
    assert err.value.body["param"] == "purpose"


def test_bad_requests_name_the_param(alpha, chat_data):
    f = alpha.files.create(file=("t.jsonl", chat_data), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as err:
        alpha.fine_tuning.jobs.create(model="tiny-llama", training_file=f.id,
                                      method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 0}}})
    assert err.value.body["param"] == "method.supervised.hyperparameters.n_epochs"
    with pytest.raises(openai.BadRequestError) as err:
        alpha.fine_tuning.jobs.create(model="gpt-4o", training_file=f.id)
    assert err.value.body["param"] == "model"
    with pytest.raises(openai.NotFoundError) as err:
        alpha.fine_tuning.jobs.create(model="tiny-llama", training_file="file-doesnotexist")
    assert err.value.body["param"] == "training_file"
    with pytest.raises(openai.BadRequestError) as err:
        alpha.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "hi"}], n=99)
    assert err.value.body["param"] == "n"
    with pytest.raises(openai.PermissionDeniedError):
        alpha.models.delete("tiny-llama")
    with pytest.raises(openai.NotFoundError):
        alpha.fine_tuning.jobs.retrieve("ftjob-nope")


def test_invalid_training_file_fails_at_validation_with_line_numbers(alpha, chat_data, wait):
    lines = chat_data.decode().splitlines()
    lines[1] = '{"messages": [{"role": "user", "content": "hi"}'                       # broken JSON, line 2
    lines[3] = '{"messages": [{"role": "wizard", "content": "x"}, {"role": "assistant", "content": "y"}]}'
    f = alpha.files.create(file=("bad.jsonl", ("\n".join(lines) + "\n").encode()), purpose="fine-tune")
    job = alpha.fine_tuning.jobs.create(model="tiny-llama", training_file=f.id)
    assert job.status == "validating_files"
    job = wait(alpha, job.id, ("failed",), timeout=60)
    assert job.error.code == "invalid_training_file" and job.error.param == "training_file"
    assert "bad.jsonl:2:" in job.error.message and "bad.jsonl:4:" in job.error.message
    assert "unrecognized_role" in job.error.message
    assert alpha.fine_tuning.jobs.list_events(job.id).data[0].level == "error"


def test_openapi_and_prometheus_metrics(server, alpha):
    alpha.files.list()
    spec = httpx.get(server.url + "/openapi.json").json()
    for path in ("/v1/files", "/v1/fine_tuning/jobs", "/v1/fine_tuning/jobs/{job_id}/events",
                 "/v1/chat/completions", "/v1/completions", "/v1/models"):
        assert path in spec["paths"]
    text = httpx.get(server.url + "/metrics").text
    assert 'lmtune_requests_total{method="GET",route="/v1/files",status="200"}' in text
    assert "lmtune_request_latency_seconds_bucket" in text
    assert "lmtune_queue_length" in text and 'lmtune_jobs{status="queued"}' in text
    assert server.keys["alpha"] not in server.log.read_text()  # keys are never logged


def test_metrics_latency_buckets_status_first_token_and_real_routes(server, alpha):
    alpha.files.list()
    with pytest.raises(openai.NotFoundError):
        alpha.files.retrieve("file-" + "0" * 24)
    chunks = list(alpha.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "hi"}],
                                                max_tokens=3, temperature=0, stream=True))
    assert chunks
    for path in ("/openapi.json", "/docs", "/docs-assets/swagger-ui.css"):
        assert httpx.get(server.url + path).status_code == 200
    text = httpx.get(server.url + "/metrics").text
    assert 'lmtune_request_latency_seconds_bucket{le="600.0",route="/v1/files",status="200"}' in text
    assert 'lmtune_request_latency_seconds_count{route="/v1/files/{file_id}",status="404"}' in text
    assert 'lmtune_time_to_first_token_seconds_count{endpoint="chat"} 1.0' in text
    for route in ("/openapi.json", "/docs", "/docs-assets"):
        assert f'lmtune_requests_total{{method="GET",route="{route}",status="200"}}' in text
    assert 'route="unmatched"' not in text


def test_docs_render_offline(server):
    html = httpx.get(server.url + "/docs").text
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert "SwaggerUIBundle" in html and len(assets) == 3 and "http" not in html.replace('"validatorUrl": null', "")
    for asset in assets:  # everything the page loads comes from this server
        assert asset.startswith("/docs-assets/") and httpx.get(server.url + asset).status_code == 200
