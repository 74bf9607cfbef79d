"""Bad requests get a clean 4xx in OpenAI's error shape, never a 5xx: oversized uploads (with and without a
Content-Length), wrong content types, malformed JSON, huge max_tokens, negative or absurd hyperparameters,
unknown models.
"""

from __future__ import annotations

import json

import httpx
import pytest

from lmtune.serve.schemas import RANGES

SHAPE = {"message", "type", "param", "code"}


def _error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert set(error) == SHAPE and error["message"] and error["type"] == "invalid_request_error"
    return error


@pytest.fixture(scope="module")
def api(rserver):
    headers = {"Authorization": f"Bearer {rserver.keys['alpha']}"}
    return httpx.Client(base_url=rserver.url + "/v1", headers=headers, timeout=60)


@pytest.fixture(scope="module")
def file_id(api, chat_data) -> str:
    return api.post("/files", data={"purpose": "fine-tune"}, files={"file": ("t.jsonl", chat_data)}).json()["id"]


def _blobs(rserver) -> set[str]:
    folder = rserver.data_dir / "blobs"
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def test_oversized_uploads_are_413_and_leave_nothing(api, rserver):
    before = _blobs(rserver)
    big = b'{"text": "x"}\n' * 20_000  # 280 kB against a 200 kB limit
    _error(api.post("/files", data={"purpose": "fine-tune"}, files={"file": ("big.jsonl", big)}), 413)
    # Chunked (no Content-Length): only the streaming copy can notice, and it does.
    boundary = "reliability"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n--{boundary}\r\n"
            f"Content-Disposition: form-data; name=\"file\"; filename=\"big.jsonl\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()

    def body():
        yield head
        for _ in range(20):
            yield big[:14_000]
        yield f"\r\n--{boundary}--\r\n".encode()

    resp = api.post("/files", content=body(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert _error(resp, 413)["code"] == "file_too_large"
    assert _blobs(rserver) == before


@pytest.mark.parametrize("kind", ["json", "text", "urlencoded", "no-file", "bad-multipart"])
def test_wrong_content_types_for_uploads(api, kind):
    if kind == "json":
        resp = api.post("/files", json={"purpose": "fine-tune", "file": "aGVsbG8="})
    elif kind == "text":
        resp = api.post("/files", content=b"hello", headers={"Content-Type": "text/plain"})
    elif kind == "urlencoded":
        resp = api.post("/files", data={"purpose": "fine-tune", "file": "hello"})
    elif kind == "no-file":
        resp = api.post("/files", files={"purpose": (None, "fine-tune")})
    else:
        resp = api.post("/files", content=b"--x\r\ngarbage", headers={"Content-Type": "multipart/form-data; boundary=x"})
    _error(resp, 400)


@pytest.mark.parametrize("path", ["/chat/completions", "/completions", "/fine_tuning/jobs"])
@pytest.mark.parametrize("body,ctype", [(b"{not json", "application/json"), (b"[1, 2]", "application/json"),
                                        (b'"text"', "application/json"), (b"model=tiny-llama", "text/plain"),
                                        (b"model=tiny-llama", "application/x-www-form-urlencoded"),
                                        (b"\xff\xfe\x00", "application/json"), (b"", "application/json")])
def test_wrong_content_types_and_malformed_json(api, path, body, ctype):
    _error(api.post(path, content=body, headers={"Content-Type": ctype}), 400)


CHAT = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("extra,param", [
    ({"max_tokens": 10**9}, "max_tokens"), ({"max_tokens": 2**70}, "max_tokens"),
    ({"max_completion_tokens": 10**6}, "max_tokens"), ({"max_tokens": -5}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"), ({"n": 10**6}, "n"), ({"temperature": 1e308}, "temperature"),
    ({"top_p": -1}, "top_p"), ({"stop": ["a"] * 100}, "stop"), ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"), ({"logit_bias": {"1": 5}}, "logit_bias"),
])
def test_absurd_sampling_values(api, extra, param):
    error = _error(api.post("/chat/completions", json={**CHAT, **extra}), 400)
    assert error["param"] and error["param"].startswith(param.split(".")[0])


@pytest.mark.parametrize("model", ["gpt-4o", "ft:tiny-llama:alpha::nope", "../../etc/passwd", "tiny-llama:ckpt-step-1",
                                   "x" * 10_000])
def test_unknown_models(api, model):
    for path, body in (("/chat/completions", {**CHAT, "model": model}), ("/completions", {"model": model, "prompt": "a"})):
        error = _error(api.post(path, json=body), 404)
        assert error["code"] == "model_not_found"
    assert api.get(f"/models/{model}").status_code == 404


def _hp(**values):
    return {"type": "supervised", "supervised": {"hyperparameters": values}}


@pytest.mark.parametrize("method", [
    _hp(n_epochs=-1), _hp(n_epochs=0), _hp(n_epochs=10**9), _hp(n_epochs=2.5), _hp(n_epochs="lots"),
    _hp(batch_size=-8), _hp(batch_size=10**12), _hp(learning_rate_multiplier=-1), _hp(learning_rate_multiplier=0),
    _hp(learning_rate_multiplier=1e300), _hp(learning_rate_multiplier="NaN"),
    {"type": "dpo", "dpo": {"hyperparameters": {"beta": -0.1}}}, {"type": "dpo", "dpo": {"hyperparameters": {"beta": 1e9}}},
    {"type": "reinforcement"}, {"type": "supervised", "supervised": {"hyperparameters": None, "x": 1}},
])
def test_absurd_hyperparameters(api, file_id, method):
    error = _error(api.post("/fine_tuning/jobs", json={"model": "tiny-llama", "training_file": file_id,
                                                       "method": method}), 400)
    assert error["param"].startswith("method")


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_in_json(api, file_id, raw):
    body = json.dumps({"model": "tiny-llama", "training_file": file_id, "seed": 1,
                       "method": _hp(learning_rate_multiplier=1.0)}).replace("1.0", raw)
    _error(api.post("/fine_tuning/jobs", content=body, headers={"Content-Type": "application/json"}), 400)
    chat = json.dumps({**CHAT, "temperature": 0.5}).replace("0.5", raw)
    _error(api.post("/chat/completions", content=chat, headers={"Content-Type": "application/json"}), 400)


def test_absurd_job_fields(api, file_id):
    base = {"model": "tiny-llama", "training_file": file_id}
    for extra in ({"seed": -1}, {"seed": 2**63}, {"suffix": "a/b"}, {"suffix": "x" * 100},
                  {"metadata": {str(i): "v" for i in range(50)}}, {"training_file": ""},
                  {"model": "tiny-llama" * 100}):
        _error(api.post("/fine_tuning/jobs", json={**base, **extra}), 400)
    _error(api.post("/fine_tuning/jobs", json={**base, "training_file": "file-" + "0" * 24}), 404)
    _error(api.get("/fine_tuning/jobs", params={"limit": 10**9}), 400)
    _error(api.get("/files", params={"after": "file-unknown"}), 400)


@pytest.mark.parametrize(("method_type", "field", "value"), [
    ("supervised", "n_epochs", -1), ("supervised", "n_epochs", 0), ("supervised", "n_epochs", 1.5),
    ("supervised", "n_epochs", 100000), ("supervised", "batch_size", 0), ("supervised", "learning_rate_multiplier", -0.5),
    ("dpo", "beta", -0.1),
])
def test_out_of_range_hyperparameters_name_the_field_and_its_range(api, file_id, method_type, field, value):
    method = {"type": method_type, method_type: {"hyperparameters": {field: value}}}
    error = _error(api.post("/fine_tuning/jobs", json={"model": "tiny-llama", "training_file": file_id,
                                                       "method": method}), 400)
    assert error["param"] == f"method.{method_type}.hyperparameters.{field}"
    assert error["message"] == f"{error['param']}: must be {RANGES[field].describe()}; got {value!r}"


def test_malformed_json_body_says_so(api):
    resp = api.post("/fine_tuning/jobs", content=b'{"model": "tiny-llama", ', headers={"Content-Type": "application/json"})
    message = _error(resp, 400)["message"]
    assert message.startswith("We could not parse the JSON body of your request") and "at character 24" in message


def test_unknown_query_parameters_are_refused_by_name(api, rserver):
    error = _error(api.get("/files", params={"purpose": "fine-tune", "ordr": "asc"}), 400)
    assert error["param"] == "ordr" and "'ordr'" in error["message"] and error["code"] == "unknown_parameter"
    assert _error(api.get("/fine_tuning/jobs", params={"status": "running"}), 400)["param"] == "status"
    assert _error(api.get("/models", params={"x": "1"}), 400)["param"] == "x"
    assert api.get("/fine_tuning/jobs", params={"metadata[team]": "docs", "limit": 5}).status_code == 200
    assert httpx.get(rserver.url + "/v1/files", params={"ordr": "asc"}).status_code == 401  # the key comes first


def test_prompts_beyond_the_context_are_context_length_exceeded(api):
    long_text = "word " * 500  # 2,500 tokens for tiny-llama's byte tokenizer; its context is 2,048
    error = _error(api.post("/chat/completions", json={**CHAT, "messages": [{"role": "user", "content": long_text}]}), 400)
    assert error["code"] == "context_length_exceeded" and error["param"] == "messages"
    assert error["message"].startswith("This model's maximum context length is 2048 tokens. However, your messages "
                                       "resulted in ")
    near = "word " * 400  # 2,019 tokens with the chat template: fits alone, not with 32 tokens of completion
    error = _error(api.post("/chat/completions", json={**CHAT, "max_tokens": 32,
                                                       "messages": [{"role": "user", "content": near}]}), 400)
    assert error["code"] == "context_length_exceeded" and "you requested" in error["message"]
    assert "32 in the completion" in error["message"]
    error = _error(api.post("/completions", json={"model": "tiny-llama", "prompt": ["hi", long_text]}), 400)
    assert error["code"] == "context_length_exceeded" and error["param"] == "prompt"
    fits = api.post("/chat/completions", json={**CHAT, "messages": [{"role": "user", "content": near}]})
    assert fits.status_code == 200, fits.text  # without max_tokens the reply takes what the context leaves
