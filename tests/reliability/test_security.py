"""Nobody gets in: every route needs a valid key (401), every resource kind is invisible to other projects
(404), uploaded filenames cannot escape the data folder, weights load only from safetensors, remote code
stays off, and keys are stored hashed and never written anywhere in the data folder or logs.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from lmtune.serve.auth import hash_key
from lmtune.serve.store import Store, new_id, now


def _routes(server) -> list[tuple[str, str]]:
    spec = httpx.get(server.url + "/openapi.json").json()
    return [(method.upper(), path.replace("{model_id}", "tiny-llama").replace("{file_id}", "file-x")
             .replace("{job_id}", "ftjob-x")) for path, ops in spec["paths"].items() for method in ops]


def _revoked_key(server) -> str:
    key = server.key("gamma")
    with sqlite3.connect(server.data_dir / "lmtune.db") as db:
        db.execute("UPDATE keys SET revoked=1 WHERE hash=?", (hash_key(key),))
    return key


def test_every_route_is_401_without_a_valid_key(rserver):
    routes = _routes(rserver)
    assert len(routes) >= 15
    bad = [{}, {"Authorization": "Bearer sk-lmt-wrong"}, {"Authorization": "Bearer"}, {"Authorization": "Bearer  sk-lmt-"},
           {"Authorization": rserver.keys["alpha"]}, {"Authorization": f"Bearer {_revoked_key(rserver)}"}]
    for method, path in routes:
        for headers in bad:
            resp = httpx.request(method, rserver.url + path, headers=headers, json={} if method == "POST" else None)
            assert resp.status_code == 401, (method, path, headers, resp.text)
            assert resp.json()["error"]["code"] == "invalid_api_key"


@pytest.fixture(scope="module")
def alphas(rserver, chat_data):
    """Resources of project alpha: a file, a job (never trained: no worker), its checkpoint, a fine-tuned model."""
    headers = {"Authorization": f"Bearer {rserver.keys['alpha']}"}
    f = httpx.post(rserver.url + "/v1/files", headers=headers, data={"purpose": "fine-tune"},
                   files={"file": ("mine.jsonl", chat_data)}).json()
    job = httpx.post(rserver.url + "/v1/fine_tuning/jobs", headers=headers,
                     json={"model": "tiny-llama", "training_file": f["id"]}).json()
    model = f"ft:tiny-llama:alpha::{job['id'].removeprefix('ftjob-')}"
    store = Store(rserver.data_dir / "lmtune.db")  # as a worker would record them after training
    store.insert("checkpoints", {"id": new_id("ftckpt"), "job_id": job["id"], "created_at": now(), "step": 2,
                                 "metrics": {"train_loss": 1.0}, "model_name": model + ":ckpt-step-2"})
    store.insert("models", {"id": model, "project": "alpha", "created_at": now(), "base": "tiny-llama",
                            "job_id": job["id"], "path": str(rserver.data_dir / "runs" / "nowhere")})
    return {"file": f["id"], "job": job["id"], "model": model, "headers": headers}


def test_every_resource_kind_is_404_for_another_project(rserver, alphas):
    beta = {"Authorization": f"Bearer {rserver.keys['beta']}"}
    f, job, model = alphas["file"], alphas["job"], alphas["model"]
    requests = [("GET", f"/v1/files/{f}", None), ("GET", f"/v1/files/{f}/content", None),
                ("DELETE", f"/v1/files/{f}", None),
                ("GET", f"/v1/fine_tuning/jobs/{job}", None), ("GET", f"/v1/fine_tuning/jobs/{job}/events", None),
                ("GET", f"/v1/fine_tuning/jobs/{job}/checkpoints", None),
                ("POST", f"/v1/fine_tuning/jobs/{job}/pause", None), ("POST", f"/v1/fine_tuning/jobs/{job}/resume", None),
                ("POST", f"/v1/fine_tuning/jobs/{job}/cancel", None),
                ("POST", "/v1/fine_tuning/jobs", {"model": "tiny-llama", "training_file": f}),
                ("POST", "/v1/fine_tuning/jobs", {"model": "tiny-llama", "training_file": "file-mine",
                                                  "validation_file": f}),
                ("GET", f"/v1/models/{model}", None), ("DELETE", f"/v1/models/{model}", None),
                ("POST", "/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "hi"}]}),
                ("POST", "/v1/completions", {"model": model, "prompt": "hi"})]
    for method, path, body in requests:
        resp = httpx.request(method, rserver.url + path, headers=beta, json=body)
        assert resp.status_code == 404, (method, path, resp.text)
        assert "mine.jsonl" not in resp.text  # nothing about the owner's resource leaks
    for path, key in [("/v1/files", f), ("/v1/fine_tuning/jobs", job), ("/v1/models", model)]:
        assert key not in httpx.get(rserver.url + path, headers=beta).text
        assert httpx.get(rserver.url + path, params={"after": key}, headers=beta).status_code in (400, 200)
    # A cursor from another project's list is refused, not used to page through it.
    assert httpx.get(rserver.url + "/v1/files", params={"after": f}, headers=beta).status_code == 400
    # ...and all of it is still there for its owner.
    own = alphas["headers"]
    for path in (f"/v1/files/{f}", f"/v1/fine_tuning/jobs/{job}", f"/v1/models/{model}"):
        assert httpx.get(rserver.url + path, headers=own).status_code == 200
    assert httpx.get(rserver.url + f"/v1/fine_tuning/jobs/{job}/checkpoints", headers=own).json()["data"]


NAMES = ["../../../escaped.jsonl", "/etc/passwd", "..\\..\\escaped.jsonl", "a\x00b/../../c.jsonl", "x" * 5000 + ".jsonl",
         "..", ".", "", "/", "dir/../../../../tmp/evil.jsonl", "\u202egnp.jsonl", "~/.ssh/authorized_keys"]


@pytest.mark.parametrize("name", NAMES, ids=range(len(NAMES)))
def test_filenames_cannot_escape_the_data_folder(rserver, alphas, chat_data, name):
    before = {p for p in rserver.root.rglob("*")}
    resp = httpx.post(rserver.url + "/v1/files", headers=alphas["headers"], data={"purpose": "fine-tune"},
                      files={"file": (name, chat_data)})
    if resp.status_code == 400:  # multipart itself refused (an empty or a 5000-character name): fine, cleanly
        assert set(resp.json()["error"]) == {"message", "type", "param", "code"}
        assert {p for p in rserver.root.rglob("*") if p.is_file()} - before == set()
        return
    assert resp.status_code == 200, resp.text
    meta = resp.json()
    assert not set("/\\\x00") & set(meta["filename"]) and 0 < len(meta["filename"]) <= 255
    assert meta["filename"] not in ("..", ".")
    created = {p for p in rserver.root.rglob("*")} - before
    blob_dir = (rserver.data_dir / "blobs").resolve()
    assert created and all(p.resolve().parent == blob_dir and p.name.startswith("file-") for p in created if p.is_file())
    assert not Path("/tmp/evil.jsonl").exists() and not (rserver.root.parent / "escaped.jsonl").exists()
    got = httpx.get(rserver.url + f"/v1/files/{meta['id']}/content", headers=alphas["headers"])
    assert got.content == chat_data


@pytest.mark.parametrize("path", ["/v1/files/..%2F..%2Flmtune.db/content", "/v1/files/../serve.json",
                                  "/v1/models/..%2F..%2Fserve.json", "/v1/fine_tuning/jobs/..%2Fx/events"])
def test_ids_in_paths_are_only_looked_up(rserver, alphas, path):
    resp = httpx.get(rserver.url + path, headers=alphas["headers"])
    assert resp.status_code == 404 and "SQLite" not in resp.text and "data_dir" not in resp.text


def test_keys_are_stored_hashed_and_never_written_anywhere(rserver, alphas):
    keys = list(rserver.keys.values())
    for key in keys + ["sk-lmt-wrong-guess-of-a-key"]:
        httpx.get(rserver.url + "/v1/files", headers={"Authorization": f"Bearer {key}"})
    with sqlite3.connect(rserver.data_dir / "lmtune.db") as db:
        stored = {row[0] for row in db.execute("SELECT hash FROM keys")}
    assert {hashlib.sha256(k.encode()).hexdigest() for k in keys} <= stored
    files = [p for p in rserver.root.rglob("*") if p.is_file()]  # database, WAL, blobs, logs, settings
    assert any(p.name == "server.log" for p in files) and any(p.name.startswith("lmtune.db") for p in files)
    for path in files:
        data = path.read_bytes()
        for key in keys + ["sk-lmt-wrong-guess-of-a-key"]:
            assert key.encode() not in data and key.removeprefix("sk-lmt-").encode() not in data, path


def test_the_api_cannot_name_code_to_run(rserver, alphas):
    """A reward function, remote code or any unknown field is a 400: names come from fixed enums only."""
    base = {"model": "tiny-llama", "training_file": alphas["file"]}
    bodies = [
        {**base, "method": {"type": "grpo"}},
        {**base, "method": {"type": "supervised", "supervised": {"hyperparameters": {"reward": "os:system"}}}},
        {**base, "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1, "reward_function": "m:f"}}}},
        {**base, "method": {"type": "supervised", "supervised": {}, "reward": "lmtune.graders.rewards:gsm8k_numeric"}},
        {**base, "reward": "subprocess:run"}, {**base, "trust_remote_code": True},
        {**base, "hyperparameters": {"n_epochs": 1, "module": "os:system"}},
        {**base, "integrations": [{"type": "wandb", "wandb": {"project": "x"}}]},
        {**base, "model": "os:system"}, {**base, "model": "/etc"}, {**base, "model": "../../models/x"},
    ]
    for body in bodies:
        resp = httpx.post(rserver.url + "/v1/fine_tuning/jobs", headers=alphas["headers"], json=body)
        assert resp.status_code == 400, (body, resp.text)
        assert set(resp.json()["error"]) == {"message", "type", "param", "code"}


def test_job_configs_never_enable_remote_code_or_a_reward(rserver, alphas):
    from lmtune.serve.config import ServeConfig
    from lmtune.serve.jobs import build_run_config, resolve_hyperparameters, with_hyperparameters

    serve_cfg = ServeConfig(data_dir=str(rserver.data_dir))
    job = Store(rserver.data_dir / "lmtune.db").one("SELECT * FROM jobs WHERE id=?", (alphas["job"],))
    # As the worker builds it: "auto" resolved once the files are counted (the row may not be validated yet).
    hp = resolve_hyperparameters(job["method"][job["method"]["type"]]["hyperparameters"], serve_cfg, n_examples=1)
    job = {**job, "method": with_hyperparameters(job["method"], hp)}
    cfg = build_run_config(job, serve_cfg, "train.jsonl", None)
    assert cfg.model.trust_remote_code is False and cfg.method.task in ("sft", "dpo")


class _Payload:
    """A pickle that runs code when loaded: what a malicious pytorch_model.bin holds."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_models_load_only_from_safetensors(tmp_path):
    from lmtune.config import ModelConfig
    from lmtune.model.load import load_model
    from lmtune.model.tiny import byte_tokenizer, tiny_causal_lm

    folder, marker = tmp_path / "pickled-model", tmp_path / "pwned.txt"
    tiny_causal_lm().save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    for name in folder.glob("*.safetensors"):  # the same model, as a pickle that runs code when loaded
        name.unlink()
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"state": _Payload(marker)}))
    with pytest.raises(Exception) as err:
        load_model(ModelConfig(name=str(folder)))
    assert "safetensors" in str(err.value).lower() or "model.safetensors" in str(err.value)
    assert not marker.exists()  # the pickle was never opened


def test_remote_code_is_off_unless_the_user_sets_it(tmp_path):
    from lmtune.config import ModelConfig
    from lmtune.model.load import load_model
    from lmtune.model.tiny import byte_tokenizer, tiny_causal_lm

    folder, marker = tmp_path / "custom-code", tmp_path / "ran.txt"
    tiny_causal_lm().save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                    "from transformers import LlamaConfig as EvilConfig\n")
    assert ModelConfig().trust_remote_code is False
    try:
        load_model(ModelConfig(name=str(folder)))
    except Exception:  # noqa: BLE001 - refusing is fine; running the code is not
        pass
    assert not marker.exists()
    # The user's explicit choice is honoured (which shows the folder's code would have run). In a child
    # process: transformers registers the folder's classes globally, which would leak into other tests.
    code = ("from lmtune.config import ModelConfig\nfrom lmtune.model.load import load_model\n"
            f"try:\n    load_model(ModelConfig(name={str(folder)!r}, trust_remote_code=True))\n"
            "except Exception:\n    pass\n")  # evil.py defines no model class
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    assert marker.exists()
