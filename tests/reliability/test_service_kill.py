"""SIGKILL of the whole service (server, worker, training child) while an upload is streaming, a job's
files are being validated, another job is training and clients are listing its checkpoints. After the
restart every acknowledged file and job is there and consistent, the database passes
`PRAGMA integrity_check`, the validating job goes on to the queue and the running job resumes from its
last checkpoint and finishes.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import httpx
import pytest

pytestmark = pytest.mark.slow
METHOD = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 4, "batch_size": 4}}}


def _integrity(server) -> str:
    with sqlite3.connect(server.data_dir / "lmtune.db") as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


def _big_chat_file(n: int) -> bytes:
    """n distinct chat examples: large enough that validating them takes the worker a while."""
    rows = ({"messages": [{"role": "user", "content": f"Tell me fact number {i}."},
                          {"role": "assistant", "content": f"Fact {i}: octopuses have three hearts."}]} for i in range(n))
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _slow_upload(url: str, headers: dict, outcome: dict) -> None:
    """A 1 MB multipart upload sent in small chunks over ~10 s: the kill lands in the middle."""
    boundary = "slowly"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n--{boundary}\r\n"
            "Content-Disposition: form-data; name=\"file\"; filename=\"slow.jsonl\"\r\n\r\n").encode()

    def body():
        yield head
        for _ in range(200):
            outcome["sent"] = outcome.get("sent", 0) + 5000
            yield b'{"text": "' + b"y" * 4985 + b'"}\n'
            time.sleep(0.05)
        yield f"\r\n--{boundary}--\r\n".encode()

    try:
        resp = httpx.post(url + "/v1/files", headers={**headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
                          content=body(), timeout=60)
        outcome["status"] = resp.status_code
    except httpx.HTTPError as err:
        outcome["error"] = repr(err)


def _keep_listing(api: httpx.Client, job_id: str, stop: threading.Event, seen: dict) -> None:
    while not stop.is_set():
        try:
            resp = api.get(f"/fine_tuning/jobs/{job_id}/checkpoints", params={"limit": 100})
            events = api.get(f"/fine_tuning/jobs/{job_id}/events", params={"limit": 1000})
        except httpx.HTTPError:
            seen["after_kill_errors"] = seen.get("after_kill_errors", 0) + 1
            time.sleep(0.05)
            continue
        assert resp.status_code == 200 and events.status_code == 200
        seen["checkpoints"] = {c["id"] for c in resp.json()["data"]} | seen.get("checkpoints", set())
        seen["listings"] = seen.get("listings", 0) + 1


def test_sigkill_mid_upload_validation_training_and_listing(make_server, chat_data, capsys):
    server = make_server("crash", checkpoint_every=2, max_upload_bytes=5_000_000)
    server.start()
    key = server.key("alpha")
    headers = {"Authorization": f"Bearer {key}"}
    api = httpx.Client(base_url=server.url + "/v1", headers=headers, timeout=60)
    acknowledged = {}
    for name, data in (("facts.jsonl", chat_data), ("many.jsonl", _big_chat_file(20_000))):
        acknowledged[api.post("/files", data={"purpose": "fine-tune"}, files={"file": (name, data)}).json()["id"]] = data
    small, big = list(acknowledged)
    training = api.post("/fine_tuning/jobs", json={"model": "tiny-llama", "training_file": small, "method": METHOD,
                                                   "seed": 5}).json()["id"]
    deadline = time.time() + 120
    while not api.get(f"/fine_tuning/jobs/{training}/checkpoints").json()["data"]:
        assert time.time() < deadline, "no checkpoint after 120 s"
        time.sleep(0.2)

    stop, seen, upload = threading.Event(), {}, {}
    listers = [threading.Thread(target=_keep_listing, args=(api, training, stop, seen)) for _ in range(3)]
    uploader = threading.Thread(target=_slow_upload, args=(server.url, headers, upload))
    for t in listers + [uploader]:
        t.start()
    validating = api.post("/fine_tuning/jobs", json={"model": "tiny-llama", "training_file": big,
                                                     "method": METHOD}).json()["id"]
    time.sleep(0.15)  # the worker is on to the 20,000-line file; the upload is streaming
    status_at_kill = {r["id"]: r["status"] for r in api.get("/fine_tuning/jobs").json()["data"]}
    listings_before = seen.get("listings", 0)
    server.kill()
    uploader.join(30)
    stop.set()
    for t in listers:
        t.join(30)
    assert status_at_kill[training] == "running" and status_at_kill[validating] == "validating_files"
    assert listings_before > 0 and 0 < upload["sent"] < 1_000_000 and "status" not in upload
    assert _integrity(server) == "ok"

    server.start()
    api = httpx.Client(base_url=server.url + "/v1", headers=headers, timeout=60)
    files = {f["id"]: f for f in api.get("/files").json()["data"]}
    assert set(files) == set(acknowledged)  # the unacknowledged upload left no file behind
    for file_id, data in acknowledged.items():
        assert files[file_id]["bytes"] == len(data) and api.get(f"/files/{file_id}/content").content == data
    blobs = {p.name.split(".")[0] for p in (server.data_dir / "blobs").iterdir() if not p.name.startswith(".")}
    assert blobs == set(acknowledged)  # no blob without its row
    checkpoints = {c["id"] for c in api.get(f"/fine_tuning/jobs/{training}/checkpoints", params={"limit": 100}).json()["data"]}
    assert seen["checkpoints"] <= checkpoints  # every checkpoint a client was shown is still listed

    deadline = time.time() + 150
    while (job := api.get(f"/fine_tuning/jobs/{training}").json())["status"] != "succeeded":
        assert job["status"] in ("queued", "running") and time.time() < deadline, job
        time.sleep(0.5)
    events = [e["message"] for e in api.get(f"/fine_tuning/jobs/{training}/events", params={"limit": 1000}).json()["data"]]
    assert "The server restarted; the job continues from its last checkpoint" in events
    assert any(m.startswith("Resuming training from the checkpoint at step") for m in events)
    steps = [e["data"]["step"] for e in api.get(f"/fine_tuning/jobs/{training}/events", params={"limit": 1000}).json()["data"]
             if e["type"] == "metrics"]
    assert sorted(steps) == list(range(1, len(steps) + 1)) and len(steps) >= 12
    other = api.get(f"/fine_tuning/jobs/{validating}").json()
    assert other["status"] in ("queued", "running"), other  # validated after the restart, then queued
    api.post(f"/fine_tuning/jobs/{validating}/cancel")
    assert _integrity(server) == "ok"
    for path in (p for p in server.root.rglob("*") if p.is_file()):  # logs, train.log, database, runs
        assert key.encode() not in path.read_bytes(), path
    with capsys.disabled():
        print(f"\nservice SIGKILL: {listings_before} checkpoint listings before the kill, upload cut at "
              f"{upload['sent']} bytes, jobs {status_at_kill[training]}/{status_at_kill[validating]} at the kill; "
              f"resumed job finished {len(steps)} steps")
