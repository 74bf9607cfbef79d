"""Disk full (ENOSPC) and an unwritable folder (EACCES) during training: a clear error naming the folder and
the last complete checkpoint, which stays intact, and resuming from it ends exactly like an undisturbed run.
Tests run as root, so the failures are injected where lmtune writes (safetensors' save_file, mkdtemp).
"""

from __future__ import annotations

import errno
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmtune.config_file import load_config
from lmtune.train import checkpoint as ckpt

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _cfg(out: Path):
    return load_config(ROOT / "configs" / "tiny.yaml", [
        "training.num_threads=1", "eval.at_end=false", "training.max_steps=4", "training.save_every=1",
        "training.eval_every=2", "data.max_train_examples=32", "data.max_validation_examples=8",
        f"output.dir={out}"])


def _train(out: Path, resume: str | None = None) -> Path:
    from lmtune.pipeline.training import run_training

    return run_training(_cfg(out), resume=resume, echo=lambda s: None)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, torch.Tensor]:
    run = _train(tmp_path_factory.mktemp("undisturbed"))
    return load_file(run / "final" / "adapter_model.safetensors")


def _assert_intact_then_resume(out: Path, failed_step: int, reference: dict[str, torch.Tensor]) -> None:
    (run,) = out.glob("tiny-*")
    ckpts = run / "checkpoints"
    assert [p.name for p in ckpt.list_checkpoints(ckpts)][-1] == f"step-{failed_step - 1:06d}"
    assert not (ckpts / f"step-{failed_step:06d}").exists()
    assert not list(ckpts.glob(".*")), "the failed write left a temporary folder"
    last = ckpt.latest_checkpoint(ckpts)
    load_file(last / "trainable.safetensors")
    torch.load(last / "optimizer.pt", weights_only=True)
    final = _train(out, resume=str(run))  # space is back: nothing was lost
    got = load_file(final / "final" / "adapter_model.safetensors")
    assert all(torch.equal(got[k], reference[k]) for k in reference)


def test_disk_full_during_a_checkpoint(tmp_path, monkeypatch, reference):
    real = ckpt.save_file

    def full_disk(tensors, path, *args, **kwargs):
        if ".step-000003-" in str(path):
            Path(path).write_bytes(b"\0" * 100)  # part of the file made it before the disk filled up
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(tensors, path, *args, **kwargs)

    monkeypatch.setattr(ckpt, "save_file", full_disk)
    with pytest.raises(OSError) as err:
        _train(tmp_path)
    assert err.value.errno == errno.ENOSPC
    message = str(err.value)
    assert "No space left on device" in message and "step-000003" in message
    assert "step-000002, is intact" in message
    monkeypatch.setattr(ckpt, "save_file", real)
    _assert_intact_then_resume(tmp_path, 3, reference)


def test_checkpoint_folder_becomes_unwritable(tmp_path, monkeypatch, reference):
    real = tempfile.mkdtemp

    def no_access(*args, **kwargs):
        if str(kwargs.get("prefix", "")).startswith(".step-000004"):
            raise PermissionError(errno.EACCES, "Permission denied", str(kwargs.get("dir")))
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkdtemp", no_access)
    with pytest.raises(PermissionError) as err:
        _train(tmp_path)
    assert err.value.errno == errno.EACCES
    assert "Permission denied" in str(err.value) and "step-000003, is intact" in str(err.value)
    monkeypatch.setattr(tempfile, "mkdtemp", real)
    _assert_intact_then_resume(tmp_path, 4, reference)


def test_output_folder_that_cannot_be_created_fails_before_training(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the output folder should be")
    with pytest.raises(NotADirectoryError) as err:
        _train(blocker / "runs")
    assert str(blocker) in str(err.value)


def test_upload_on_a_full_disk_is_a_clear_507_and_stores_nothing(tmp_path, monkeypatch, chat_data):
    from fastapi.testclient import TestClient

    from lmtune.serve import blobs
    from lmtune.serve.app import create_app
    from lmtune.serve.auth import create_key
    from lmtune.serve.config import ServeConfig

    cfg = ServeConfig(data_dir=str(tmp_path / "data"), start_workers=False)
    app = create_app(cfg)
    key = create_key(app.state.store, "alpha")
    real_fsync = blobs.os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as client:
        ok = client.post("/v1/files", data={"purpose": "fine-tune"}, files={"file": ("a.jsonl", chat_data)})
        assert ok.status_code == 200
        monkeypatch.setattr(blobs.os, "fsync", full)
        resp = client.post("/v1/files", data={"purpose": "fine-tune"}, files={"file": ("b.jsonl", chat_data)})
        monkeypatch.setattr(blobs.os, "fsync", real_fsync)
        assert resp.status_code == 507
        assert resp.json()["error"] == {"message": "The server cannot store the file: No space left on device",
                                        "type": "server_error", "param": "file", "code": "insufficient_storage"}
        assert [f["id"] for f in client.get("/v1/files").json()["data"]] == [ok.json()["id"]]
        assert [p.name for p in cfg.blob_dir.iterdir()] == [Path(app.state.store.one("SELECT path FROM files")["path"]).name]
        assert client.get(f"/v1/files/{ok.json()['id']}/content").content == chat_data
