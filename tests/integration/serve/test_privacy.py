"""What the service keeps of a user's data: every file and folder it writes is private (0600/0700), and
deleting a file, then the model trained on it, leaves no byte of the file's examples anywhere under the
data directory or the user's lmtune cache. Also the worker gauges of /metrics while a job trains."""

from __future__ import annotations

import json
import re
import stat
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow
MARKER = b"quokka-zebra-7731"  # in every example; found nowhere once the file and the model are deleted
SHORT = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 4}}}
LONG = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 200, "batch_size": 4}}}


def _marked_file() -> bytes:
    rows = [{"messages": [{"role": "user", "content": f"Question {i}?"},
                          {"role": "assistant", "content": f"Answer {i}: {MARKER.decode()} number {i}."}]}
            for i in range(16)]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _holding(folder: Path, needle: bytes, max_bytes: int = 50_000_000) -> list[Path]:
    """Files under `folder` whose bytes contain `needle` (model weights over max_bytes are skipped)."""
    if not folder.exists():
        return []
    return [p for p in folder.rglob("*") if p.is_file() and p.stat().st_size <= max_bytes and needle in p.read_bytes()]


def _modes(folder: Path) -> list[str]:
    """Every path under `folder` (and itself) whose mode is not 0700 for a folder or 0600 for a file."""
    wrong = []
    for path in [folder, *folder.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode != (0o700 if path.is_dir() else 0o600):
            wrong.append(f"{oct(mode)} {path.relative_to(folder)}")
    return wrong


def _gauge(text: str, name: str) -> float | None:
    found = re.search(rf'^{name}{{worker="0"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else None


def test_private_modes_and_deletion_leaves_no_copy(make_server, wait):
    server = make_server("private", checkpoint_every=2)
    server.start()
    client = server.client(server.key("alpha"))
    f = client.files.create(file=("marked.jsonl", _marked_file()), purpose="fine-tune")
    doomed = client.fine_tuning.jobs.create(model="tiny-llama", training_file=f.id, method=LONG)
    # While it trains, the worker reports itself alive with the job's step rate.
    deadline, text = time.time() + 120, ""
    while time.time() < deadline and not (_gauge(text, "lmtune_training_steps_per_second") or 0) > 0:
        time.sleep(1)
        text = httpx.get(server.url + "/metrics").text
    assert _gauge(text, "lmtune_training_steps_per_second") > 0 and _gauge(text, "lmtune_worker_up") == 1
    assert time.time() - _gauge(text, "lmtune_worker_heartbeat_timestamp_seconds") < 30
    client.fine_tuning.jobs.cancel(doomed.id)
    job = wait(client, client.fine_tuning.jobs.create(model="tiny-llama", training_file=f.id, method=SHORT).id,
               ("succeeded",), timeout=300)
    data, cache = server.data_dir, Path("~/.cache/lmtune").expanduser()
    assert not _modes(data), _modes(data)
    assert any("cache/alpha/data" in str(p) for p in _holding(data, MARKER))  # the prepared copy is per project
    assert not _holding(cache / "data", MARKER) and not _holding(cache / "baselines", MARKER)
    assert any(data.glob(f"runs/{doomed.id}-*/checkpoints"))

    client.files.delete(f.id)
    assert not _holding(data, MARKER) and not _holding(cache / "data", MARKER)
    assert not any(data.glob(f"runs/{doomed.id}-*")) and not (data / "jobs" / doomed.id).exists()  # no model: gone
    model_run = next(data.glob(f"runs/{job.id}-*"))  # the model is kept, as OpenAI keeps it
    reply = client.chat.completions.create(model=job.fine_tuned_model, messages=[{"role": "user", "content": "Hi"}],
                                           max_tokens=2)
    assert reply.choices[0].message.role == "assistant"

    client.models.delete(job.fine_tuned_model)
    assert not model_run.exists() and not (data / "jobs" / job.id).exists()
    assert not _holding(data, MARKER) and not _modes(data)
