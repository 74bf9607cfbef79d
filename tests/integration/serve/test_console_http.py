"""The console's sessions, CSRF, isolation, escaping and headers, over HTTP against the real app (no workers).

The browser flows (training, live curves, playground) are in test_console_browser.py.
"""

from __future__ import annotations

import html
import json
import re

import pytest
from fastapi.testclient import TestClient

from lmtune.serve.app import create_app
from lmtune.serve.auth import create_key, hash_key, revoke_key
from lmtune.serve.config import ServeConfig
from lmtune.serve.console.session import COOKIE, Sessions
from lmtune.serve.console.web import CSP

HOSTILE = '<img src=x onerror=alert(1)>'
GOOD = b"".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                          {"role": "assistant", "content": f"a{i}"}]}).encode() + b"\n"
                for i in range(6))


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("console")
    runs = root / "cli-runs"
    (runs / "tiny-20261204").mkdir(parents=True)
    (runs / "tiny-20261204" / "config.yaml").write_text("model: {name: tiny-llama}\nmethod: {task: sft}\n")
    (runs / "tiny-20261204" / "report.html").write_text("<html><body><h1>Report</h1><script>alert(1)</script>")
    cfg = ServeConfig(data_dir=str(root / "data"), base_models=["tiny-llama"], start_workers=False,
                      console_runs_dir=str(runs))
    app = create_app(cfg)
    app.state.keys = {p: create_key(app.state.store, p) for p in ("alpha", "beta", "gamma")}
    return app


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def signed_in(app, project: str) -> tuple[TestClient, str]:
    """A client signed in as `project` and its CSRF token."""
    client = TestClient(app, base_url="http://127.0.0.1")
    token = csrf_of(client.get("/console/login").text)
    r = client.post("/console/login", data={"api_key": app.state.keys[project], "csrf_token": token},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/jobs"
    return client, csrf_of(client.get("/console/jobs").text)


def upload(client: TestClient, csrf: str, name: str, data: bytes):
    return client.post("/console/files", data={"csrf_token": csrf, "tokenizer": "tiny-llama"},
                       files={"file": (name, data, "application/octet-stream")})


def test_session_cookie_is_httponly_strict_signed_and_never_holds_the_key(app):
    client = TestClient(app, base_url="http://127.0.0.1")
    token = csrf_of(client.get("/console/login").text)
    key = app.state.keys["alpha"]
    r = client.post("/console/login", data={"api_key": key, "csrf_token": token}, follow_redirects=False)
    header = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith(COOKIE + "="))
    assert "HttpOnly" in header and "SameSite=strict" in header and "Path=/console" in header
    assert "Max-Age=28800" in header  # console_session_hours = 8
    value = client.cookies[COOKIE]
    assert key not in value and key.removeprefix("sk-lmt-") not in value and hash_key(key) not in value
    assert client.get("/console/jobs").status_code == 200


def test_a_wrong_key_is_refused_and_a_forged_expired_or_revoked_session_is_sent_to_sign_in(app):
    client = TestClient(app, base_url="http://127.0.0.1")
    token = csrf_of(client.get("/console/login").text)
    r = client.post("/console/login", data={"api_key": "sk-lmt-wrong", "csrf_token": token})
    assert r.status_code == 401 and "Incorrect or revoked API key." in r.text
    assert client.get("/console/jobs", follow_redirects=False).headers["location"] == "/console/login"

    client, _ = signed_in(app, "alpha")
    key_id, expires, nonce, sig = client.cookies[COOKIE].split(".")
    beta_id = app.state.store.one("SELECT id FROM keys WHERE project='beta'")["id"]
    client.cookies.clear()
    client.cookies.set(COOKIE, ".".join([beta_id, expires, nonce, sig]))  # another key's id, alpha's signature
    assert client.get("/console/jobs", follow_redirects=False).status_code == 303
    htmx = client.get("/console/jobs/table", headers={"HX-Request": "true"}, follow_redirects=False)
    assert htmx.headers["hx-redirect"] == "/console/login"

    sessions: Sessions = app.state.console.sessions
    expired = Sessions(sessions.secret, app.state.store, lifetime_s=-1).issue(app.state.keys["alpha"])
    assert sessions.read(expired) is None
    assert sessions.read(sessions.issue(app.state.keys["alpha"])).project == "alpha"

    gamma, _ = signed_in(app, "gamma")
    revoke_key(app.state.store, app.state.store.one("SELECT id FROM keys WHERE project='gamma'")["id"])
    assert gamma.get("/console/files", follow_redirects=False).headers["location"] == "/console/login"


def test_sign_in_without_a_valid_csrf_token_is_refused(app):
    client = TestClient(app, base_url="http://127.0.0.1")
    client.get("/console/login")
    for token in ("", "0" * 64):
        r = client.post("/console/login", data={"api_key": app.state.keys["alpha"], "csrf_token": token})
        assert r.status_code == 403 and "CSRF" in r.text
    assert COOKIE not in client.cookies


def test_state_changing_forms_without_the_sessions_csrf_token_are_refused(app):
    alpha, csrf = signed_in(app, "alpha")
    _, beta_csrf = signed_in(app, "beta")
    file_id = re.search(r"(file-[0-9a-f]{24})", upload(alpha, csrf, "train.jsonl", GOOD).text).group(1)
    r = alpha.post("/console/jobs", data={"csrf_token": csrf, "model": "tiny-llama", "training_file": file_id},
                   follow_redirects=False)
    job_id = r.headers["location"].rsplit("/", 1)[1]
    store = app.state.store
    files_before = store.one("SELECT COUNT(*) AS n FROM files WHERE project='alpha' AND deleted=0")["n"]
    jobs_before = store.one("SELECT COUNT(*) AS n FROM jobs WHERE project='alpha'")["n"]
    posts = [("/console/files", {"tokenizer": "tiny-llama"}, {"file": ("x.jsonl", GOOD)}),
             ("/console/jobs", {"model": "tiny-llama", "training_file": file_id}, None),
             (f"/console/jobs/{job_id}/cancel", {}, None), (f"/console/jobs/{job_id}/pause", {}, None),
             (f"/console/files/{file_id}/delete", {}, None), ("/console/models/delete", {"model": "x"}, None),
             ("/console/playground/stream", {"model": "tiny-llama", "prompt": "hi"}, None),
             ("/console/logout", {}, None)]
    for url, data, files in posts:
        for token in (None, "", beta_csrf):  # missing, empty, and another session's token
            body = data if token is None else {**data, "csrf_token": token}
            r = alpha.post(url, data=body, files=files, follow_redirects=False)
            assert r.status_code == 403, (url, token, r.status_code)
    assert store.one("SELECT COUNT(*) AS n FROM files WHERE project='alpha' AND deleted=0")["n"] == files_before
    assert store.one("SELECT COUNT(*) AS n FROM jobs WHERE project='alpha'")["n"] == jobs_before
    assert store.one("SELECT status FROM jobs WHERE id=?", (job_id,))["status"] == "validating_files"
    assert alpha.get("/console/jobs").status_code == 200  # still signed in: the logout was refused too


def test_another_projects_ids_answer_404_in_the_console(app):
    alpha, csrf = signed_in(app, "alpha")
    beta, beta_csrf = signed_in(app, "beta")
    file_id = re.search(r"(file-[0-9a-f]{24})", upload(alpha, csrf, "mine.jsonl", GOOD).text).group(1)
    job_id = alpha.post("/console/jobs", data={"csrf_token": csrf, "model": "tiny-llama", "training_file": file_id},
                        follow_redirects=False).headers["location"].rsplit("/", 1)[1]
    model_id = f"ft:tiny-llama:alpha::{job_id.removeprefix('ftjob-')}"
    app.state.store.insert("models", {"id": model_id, "project": "alpha", "created_at": 0, "base": "tiny-llama",
                                      "job_id": job_id, "path": "/nonexistent"})
    gets = [f"/console/files/{file_id}", f"/console/jobs/{job_id}", f"/console/jobs/{job_id}/panel",
            f"/console/jobs/{job_id}/metrics", f"/console/jobs/{job_id}/report"]
    for url in gets:
        assert beta.get(url).status_code == 404, url
        assert alpha.get(url).status_code == (404 if url.endswith("/report") else 200), url
    posts = [(f"/console/jobs/{job_id}/cancel", {}), (f"/console/files/{file_id}/delete", {}),
             ("/console/models/delete", {"model": model_id})]
    for url, data in posts:
        assert beta.post(url, data={**data, "csrf_token": beta_csrf}).status_code == 404, url
    r = beta.post("/console/playground/stream", data={"csrf_token": beta_csrf, "model": model_id, "prompt": "hi"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert job_id not in beta.get("/console/jobs").text and file_id not in beta.get("/console/files").text
    assert model_id not in beta.get("/console/models").text and model_id in alpha.get("/console/models").text
    assert app.state.store.one("SELECT status FROM jobs WHERE id=?", (job_id,))["status"] == "validating_files"


def test_hostile_file_names_metadata_and_validator_messages_are_escaped(app):
    alpha, csrf = signed_in(app, "alpha")
    role = '<b onmouseover=alert(4)>x</b>'  # the validator's message quotes the bad role
    bad = (GOOD + json.dumps({"messages": HOSTILE}).encode() + b"\n" + b"{not json " + HOSTILE.encode() + b"\n"
           + json.dumps({"messages": [{"role": role, "content": "hi"}]}).encode() + b"\n")
    r = upload(alpha, csrf, HOSTILE + ".jsonl", bad)
    assert r.status_code == 422
    assert HOSTILE not in r.text and html.escape(HOSTILE, quote=False) in r.text
    assert role not in r.text and f"role &#39;{html.escape(role, quote=False)}&#39; is not one of" in r.text
    lines = re.findall(r'<td class="line">(\d+)</td>', r.text)
    assert {"7", "8", "9"} <= set(lines)  # the three bad lines, by number
    file_id = re.search(r"(file-[0-9a-f]{24})", r.text).group(1)
    assert HOSTILE not in alpha.get("/console/files").text
    r = alpha.post("/console/jobs", data={"csrf_token": csrf, "model": "tiny-llama", "training_file": file_id,
                                          "metadata": f"note={HOSTILE}\n<b>k</b>=<script>alert(2)</script>"},
                   follow_redirects=False)
    page = alpha.get(r.headers["location"]).text
    assert HOSTILE not in page and "<script>alert(2)" not in page and "<b>k</b>" not in page
    assert html.escape(HOSTILE, quote=False) in page and "&lt;script&gt;alert(2)&lt;/script&gt;" in page


def test_a_refused_job_shows_the_apis_message_naming_the_field(app):
    alpha, csrf = signed_in(app, "alpha")
    file_id = re.search(r"(file-[0-9a-f]{24})", upload(alpha, csrf, "t.jsonl", GOOD).text).group(1)
    r = alpha.post("/console/jobs", data={"csrf_token": csrf, "model": "tiny-llama", "training_file": file_id,
                                          "n_epochs": "0"})
    assert r.status_code == 400 and "method.supervised.hyperparameters.n_epochs" in r.text
    r = alpha.post("/console/jobs", data={"csrf_token": csrf, "model": "gpt-9", "training_file": file_id})
    assert r.status_code == 400 and "Model gpt-9 is not available for fine-tuning" in r.text


def test_pages_carry_the_csp_and_load_nothing_from_other_sites(app):
    alpha, _ = signed_in(app, "alpha")
    for url in ("/console/login", "/console/files", "/console/jobs", "/console/models", "/console/playground",
                "/console/runs"):
        r = alpha.get(url)
        assert r.status_code == 200, url
        assert r.headers["content-security-policy"] == CSP and r.headers["x-content-type-options"] == "nosniff"
        for ref in re.findall(r'(?:src|href|action)="([^"]*)"', r.text):
            assert ref.startswith(("/", "#", "?")), (url, ref)
    assert "script-src 'self'" in CSP and "'unsafe-inline'" not in CSP.split("style-src")[0]
    vendor = alpha.get("/console/static/vendor/htmx-2.0.11/htmx.min.js")
    assert vendor.status_code == 200 and "htmx" in vendor.text


def test_cli_run_reports_are_listed_and_served_sandboxed(app):
    alpha, _ = signed_in(app, "alpha")
    page = alpha.get("/console/runs").text
    assert "tiny-20261204" in page and "tiny-llama" in page
    r = alpha.get("/console/runs/tiny-20261204/report")
    assert r.status_code == 200 and "sandbox" in r.headers["content-security-policy"]
    assert "script-src" not in r.headers["content-security-policy"]  # default-src 'none' covers scripts
    for name in ("..", "%2e%2e", "nope", "tiny-20261204%2F..%2F.."):
        assert alpha.get(f"/console/runs/{name}/report").status_code == 404, name


def test_job_actions_go_through_the_api_and_its_refusals_show_as_pages(app):
    alpha, csrf = signed_in(app, "alpha")
    file_id = re.search(r"(file-[0-9a-f]{24})", upload(alpha, csrf, "t.jsonl", GOOD).text).group(1)
    job_url = alpha.post("/console/jobs", data={"csrf_token": csrf, "model": "tiny-llama", "training_file": file_id},
                         follow_redirects=False).headers["location"]
    job_id = job_url.rsplit("/", 1)[1]
    app.state.store.execute("UPDATE jobs SET status='queued' WHERE id=?", (job_id,))  # as the worker's validation does
    page = alpha.post(f"{job_url}/pause", data={"csrf_token": csrf}).text
    assert 'id="job-status" class="status status-paused">paused<' in page and 'id="resume-job"' in page
    page = alpha.post(f"{job_url}/resume", data={"csrf_token": csrf}).text
    assert ">queued<" in page and "Job resumed" in page
    assert ">cancelled<" in alpha.post(f"{job_url}/cancel", data={"csrf_token": csrf}).text
    r = alpha.post(f"{job_url}/resume", data={"csrf_token": csrf})
    assert r.status_code == 409 and f"Cannot resume job {job_id}: its status is cancelled" in r.text
    assert alpha.post(f"{job_url}/explode", data={"csrf_token": csrf}).status_code == 404
    assert app.state.store.one("SELECT status FROM jobs WHERE id=?", (job_id,))["status"] == "cancelled"


def test_a_jobs_evaluation_report_is_shown_sandboxed(app, tmp_path):
    alpha, csrf = signed_in(app, "alpha")
    beta, _ = signed_in(app, "beta")
    file_id = re.search(r"(file-[0-9a-f]{24})", upload(alpha, csrf, "t.jsonl", GOOD).text).group(1)
    job_url = alpha.post("/console/jobs", data={"csrf_token": csrf, "model": "tiny-llama", "training_file": file_id},
                         follow_redirects=False).headers["location"]
    assert "Evaluation report" not in alpha.get(job_url).text
    (tmp_path / "report.html").write_text("<html><body><h1>Fine-tuned vs base</h1><script>alert(1)</script>")
    app.state.store.execute("UPDATE jobs SET run_dir=? WHERE id=?", (str(tmp_path), job_url.rsplit("/", 1)[1]))
    assert f'<iframe class="report" src="{job_url}/report" title="Evaluation report" sandbox>' in alpha.get(job_url).text
    r = alpha.get(job_url + "/report")
    assert r.status_code == 200 and "Fine-tuned vs base" in r.text
    assert r.headers["content-security-policy"].startswith("default-src 'none'") and "sandbox" in r.headers[
        "content-security-policy"]
    assert beta.get(job_url + "/report").status_code == 404


def test_playground_refusals_come_back_in_the_apis_error_shape(app):
    alpha, csrf = signed_in(app, "alpha")
    r = alpha.post("/console/playground/stream", data={"csrf_token": csrf, "model": "tiny-llama", "prompt": "hi",
                                                       "temperature": "5"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "temperature"
    r = alpha.post("/console/playground/stream", data={"csrf_token": csrf, "model": "tiny-llama", "prompt": "  "})
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("prompt:")
    r = alpha.post("/console/playground/stream", data={"csrf_token": csrf, "model": "tiny-llama", "prompt": "hi",
                                                       "max_tokens": "999999"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
