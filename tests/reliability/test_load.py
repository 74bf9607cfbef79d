"""Load on one server: 50 concurrent chat completions and 20 concurrent job submissions, zero errors, every
job queued and accounted for; latency percentiles are printed for docs/reliability.md.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from lmtune.serve.config import ServeConfig
from lmtune.serve.worker_loop import Worker

pytestmark = pytest.mark.slow


def _percentiles(seconds: list[float]) -> str:
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")
    return f"p50 {cuts[49] * 1000:.0f} ms, p90 {cuts[89] * 1000:.0f} ms, p99 {cuts[98] * 1000:.0f} ms"


def _timed(call):
    started = time.perf_counter()
    resp = call()
    return resp, time.perf_counter() - started


@pytest.fixture(scope="module")
def api(rserver):
    headers = {"Authorization": f"Bearer {rserver.keys['alpha']}"}
    with httpx.Client(base_url=rserver.url + "/v1", headers=headers, timeout=120,
                      limits=httpx.Limits(max_connections=64)) as client:
        yield client


def test_fifty_concurrent_chat_completions(api, capsys):
    api.post("/chat/completions", json={"model": "tiny-llama", "messages": [{"role": "user", "content": "warm"}],
                                        "max_tokens": 2})  # load the model once, outside the timing

    def one(i: int):
        body = {"model": "tiny-llama", "max_tokens": 8, "temperature": 0,
                "messages": [{"role": "user", "content": f"Question number {i}?"}]}
        return _timed(lambda: api.post("/chat/completions", json=body))

    started = time.perf_counter()
    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(one, range(50)))
    wall = time.perf_counter() - started
    errors = [r.text for r, _ in results if r.status_code != 200]
    assert errors == []
    assert all(r.json()["choices"][0]["message"]["role"] == "assistant" for r, _ in results)
    assert all(r.json()["usage"]["completion_tokens"] <= 8 for r, _ in results)
    with capsys.disabled():
        print(f"\n50 concurrent chat completions (8 tokens, tiny-llama): 0 errors in {wall:.1f} s; "
              f"{_percentiles([s for _, s in results])}")


def test_twenty_concurrent_job_submissions_all_queued(api, rserver, chat_data, capsys):
    file_id = api.post("/files", data={"purpose": "fine-tune"}, files={"file": ("load.jsonl", chat_data)}).json()["id"]

    def submit(i: int):
        body = {"model": "tiny-llama", "training_file": file_id, "seed": i, "suffix": f"load{i}"}
        return _timed(lambda: api.post("/fine_tuning/jobs", json=body))

    started = time.perf_counter()
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(submit, range(20)))
    wall = time.perf_counter() - started
    assert [r.text for r, _ in results if r.status_code != 200] == []
    ids = {r.json()["id"] for r, _ in results}
    assert len(ids) == 20
    listed = {j["id"]: j for j in api.get("/fine_tuning/jobs", params={"limit": 100}).json()["data"]}
    assert ids <= listed.keys() and {listed[i]["status"] for i in ids} == {"validating_files"}
    # This server runs no worker (nothing trains in this suite); its validation step runs here instead.
    worker = Worker(ServeConfig.model_validate_json((rserver.data_dir / "serve.json").read_text()))
    for job in worker.store.all("SELECT * FROM jobs WHERE status='validating_files' ORDER BY seq"):
        worker.validate(job)
    queued = [j for j in api.get("/fine_tuning/jobs", params={"limit": 100}).json()["data"] if j["id"] in ids]
    assert len(queued) == 20 and {j["status"] for j in queued} == {"queued"}
    assert sorted(j["seed"] for j in queued) == list(range(20))  # each job is the one its request asked for
    metrics = httpx.get(rserver.url + "/metrics").text
    assert 'lmtune_jobs{status="queued"}' in metrics
    with ThreadPoolExecutor(20) as pool:  # and 20 concurrent cancels
        cancels = list(pool.map(lambda i: api.post(f"/fine_tuning/jobs/{i}/cancel"), ids))
    assert {r.status_code for r in cancels} == {200} and {r.json()["status"] for r in cancels} == {"cancelled"}
    with capsys.disabled():
        print(f"\n20 concurrent job submissions: 0 errors in {wall:.2f} s, 20 queued; "
              f"{_percentiles([s for _, s in results])}")
