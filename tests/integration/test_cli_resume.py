"""`--resume latest` continues a copy of the tiny run cut short and must reproduce its losses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmtune.cli import main
from lmtune.runs import read_lineage

from .cli_helpers import FAST, sets, run_cli

pytestmark = pytest.mark.usefixtures("in_project_root")


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _cut_back(run: Path) -> int:
    """Make `run` look killed during step 7: checkpoint 4 is the newest, metrics go up to step 6."""
    shutil.rmtree(run / "final")
    for later in ["step-000008", "step-000012"]:
        shutil.rmtree(run / "checkpoints" / later)
    for name in ["eval.json", "predictions.jsonl", "loss.png"]:
        (run / name).unlink()
    kept = [r for r in _records(run) if r["step"] <= 6]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    lineage = read_lineage(run)
    del lineage["result"]
    (run / "lmtune.json").write_text(json.dumps(lineage))
    return len(kept)


@pytest.fixture(scope="module")
def resumed(trained, tmp_path_factory):
    """(uninterrupted run, the same run cut back to step 4 and resumed with --resume latest, records kept)."""
    _, run, cache = trained
    root = tmp_path_factory.mktemp("resume") / "runs"
    copy = root / run.name
    shutil.copytree(run, copy)
    kept = _cut_back(copy)
    code = run_cli(["train", "configs/tiny.yaml", "--resume", "latest",
                     *sets(f"output.dir={root}", f"model.cache_dir={cache}", *FAST)])
    assert code == 0
    assert list(root.iterdir()) == [copy]  # continued in place, no new run folder
    return run, copy, kept


@pytest.mark.slow
def test_resume_latest_reproduces_the_uninterrupted_run(resumed):
    run, copy, kept = resumed
    full = {(r["kind"], r["step"]): r for r in _records(run)}
    # Resuming from the step-4 checkpoint drops the records logged after it and writes steps 5.. again.
    after = [r for r in _records(copy) if r["step"] > 4]
    train = {r["step"]: r["loss"] for r in after if r["kind"] == "train"}
    assert sorted(train) == list(range(5, 13))
    for step, loss in train.items():
        assert loss == pytest.approx(full["train", step]["loss"], abs=1e-6), step
    evals = {r["step"]: r["eval_loss"] for r in after if r["kind"] == "eval"}
    assert evals == pytest.approx({6: full["eval", 6]["eval_loss"], 12: full["eval", 12]["eval_loss"]}, abs=1e-6)

    a = load_file(run / "final" / "adapter_model.safetensors")
    b = load_file(copy / "final" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=0)
    result = read_lineage(copy)["result"]
    assert result["steps"] == 12
    assert result["validation"]["eval_loss"] == pytest.approx(read_lineage(run)["result"]["validation"]["eval_loss"],
                                                              abs=1e-6)
    assert (copy / "eval.json").is_file() and (copy / "loss.png").is_file()


@pytest.mark.slow
def test_resume_leaves_one_record_per_step(resumed):
    _, copy, _ = resumed
    keys = [(r["kind"], r["step"]) for r in _records(copy)]
    assert len(keys) == len(set(keys)) == 12 + 2


def test_resume_latest_without_a_checkpoint_fails_clearly(tmp_path, capsys):
    code = main(["train", "configs/tiny.yaml", "--resume", "latest", *sets(f"output.dir={tmp_path}")])
    assert code == 1
    assert f"no unfinished run of 'tiny' under {tmp_path} has a checkpoint to resume" in capsys.readouterr().err
