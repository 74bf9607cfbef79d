"""Per-key rate limits over HTTP on the real app: 429 in OpenAI's shape with retry-after, other keys served."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from lmtune.serve.app import create_app
from lmtune.serve.auth import create_key
from lmtune.serve.config import ServeConfig
from lmtune.serve.limits import admit, charge_tokens


def _app(tmp_path, store_url: str, **limits):
    url = None if store_url.endswith(".db") else store_url
    cfg = ServeConfig(data_dir=str(tmp_path / "data"), database_url=url, base_models=["tiny-llama"],
                      start_workers=False, console=False, **limits)
    app = create_app(cfg)
    keys = {p: create_key(app.state.store, p) for p in ("alpha", "beta")}
    return TestClient(app), keys


def test_a_key_over_its_request_limit_gets_429_while_other_keys_are_served(tmp_path, store_url):
    client, keys = _app(tmp_path, store_url, requests_per_minute=3)
    alpha, beta = ({"Authorization": f"Bearer {keys[p]}"} for p in ("alpha", "beta"))
    assert [client.get("/v1/files", headers=alpha).status_code for _ in range(3)] == [200] * 3
    refused = client.get("/v1/fine_tuning/jobs", headers=alpha)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
    assert "requests per minute: limit 3" in error["message"]
    assert client.get("/v1/files", headers=beta).status_code == 200


def test_the_official_client_sees_a_rate_limit_error(tmp_path, store_url):
    openai = pytest.importorskip("openai")
    client, keys = _app(tmp_path, store_url, requests_per_minute=1)
    sdk = openai.OpenAI(base_url="http://testserver/v1", api_key=keys["alpha"], http_client=client, max_retries=0)
    sdk.files.list()
    with pytest.raises(openai.RateLimitError) as caught:
        sdk.files.list()
    assert caught.value.response.headers["retry-after"]


def test_token_budget_refuses_completions_only(tmp_path, store_url):
    client, keys = _app(tmp_path, store_url, tokens_per_minute=50)
    store, cfg = client.app.state.store, client.app.state.cfg
    key_id = store.one("SELECT id FROM keys WHERE project='alpha'")["id"]
    admit(store, cfg, key_id, uses_tokens=True)
    charge_tokens(store, key_id, 49)
    admit(store, cfg, key_id, uses_tokens=True)  # 49 < 50: still served
    charge_tokens(store, key_id, 1)
    alpha = {"Authorization": f"Bearer {keys['alpha']}"}
    body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    refused = client.post("/v1/chat/completions", headers=alpha, json=body)
    assert refused.status_code == 429 and "tokens per minute: limit 50" in refused.json()["error"]["message"]
    assert client.get("/v1/files", headers=alpha).status_code == 200  # listing spends no tokens
    beta = {"Authorization": f"Bearer {keys['beta']}"}
    answered = client.post("/v1/chat/completions", headers=beta, json=body)
    assert answered.status_code == 200
    used = answered.json()["usage"]["total_tokens"]
    beta_id = store.one("SELECT id FROM keys WHERE project='beta'")["id"]
    assert store.one("SELECT tokens FROM rate_usage WHERE key_id=?", (beta_id,))["tokens"] == used


def test_limits_are_off_by_default(tmp_path, store_url):
    client, keys = _app(tmp_path, store_url)
    alpha = {"Authorization": f"Bearer {keys['alpha']}"}
    assert all(client.get("/v1/files", headers=alpha).status_code == 200 for _ in range(20))
    assert client.app.state.store.one("SELECT COUNT(*) AS n FROM rate_usage")["n"] == 0
