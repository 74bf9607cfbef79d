"""SIGKILL during training, at 20+ points (inside checkpoint writes too): every resumed run ends with the
uninterrupted run's weights and losses, bit for bit, and no checkpoint on disk is ever half written.

The killing is done by train_killer.py (one subprocess that forks the training processes, so lmtune is
imported once); this test reads its summary and compares the run folders.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow
KILLER = Path(__file__).with_name("train_killer.py")


def _losses(run: Path) -> list[tuple[str, int, float]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["kind"], r["step"], r["loss"] if r["kind"] == "train" else r["eval_loss"]) for r in rows]


@pytest.fixture(scope="module")
def summary(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("killed")
    done = subprocess.run([sys.executable, str(KILLER), str(work), "--max-steps", "6", "--random-kills", "8"],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((work / "summary.json").read_text())


def test_at_least_twenty_kills_including_inside_checkpoint_writes(summary, capsys):
    with capsys.disabled():
        print(f"\ntraining SIGKILL: {len(summary['scripted']['kills'])} scripted kills in "
              f"{summary['scripted']['seconds']} s, {len(summary['random']['kills'])} random kills in "
              f"{summary['random']['seconds']} s (newest checkpoint at each: "
              f"{[k[2] for k in summary['random']['kills']]})")
    scripted, random_ = summary["scripted"], summary["random"]
    assert len(scripted["kills"]) + len(random_["kills"]) >= 20
    fired = {tuple(p) for p in scripted["fired_at"]}
    assert len(scripted["fired_at"]) == len(fired)  # each kill at its own point
    for phase in ("mid-write", "before-rename", "after-step"):
        assert {s for s, p in fired if p == phase} == set(range(1, 7)), phase
    assert {s for s, p in fired if p == "after-rename"} == {1, 2, 4, 6}
    assert {s for s, p in fired if p == "best-swap"} == {4, 6}  # between moving `best` aside and replacing it
    assert {s for s, p in fired if p == "mid-prune"} == {3, 5}  # half way through deleting an old checkpoint
    assert len(random_["kills"]) >= 3


@pytest.mark.parametrize("kind", ["scripted", "random"])
def test_no_checkpoint_is_ever_half_written(summary, kind):
    assert summary[kind]["violations"] == []
    assert summary[kind]["leftovers"] == []  # interrupted temporary folders were cleaned up on resume


@pytest.mark.parametrize("kind", ["scripted", "random"])
def test_killed_and_resumed_run_equals_the_uninterrupted_one(summary, kind):
    reference = Path(summary["reference" if kind == "scripted" else "random_reference"])
    steps = 6 if kind == "scripted" else 12
    (finished,) = summary[kind]["finished"]
    finished = Path(finished)
    want = load_file(reference / "final" / "adapter_model.safetensors")
    got = load_file(finished / "final" / "adapter_model.safetensors")
    assert want.keys() == got.keys() and want
    for name in want:
        assert torch.equal(want[name], got[name]), name
    assert _losses(finished) == _losses(reference)  # every step once, same train and eval losses
    assert [s for k, s, _ in _losses(finished) if k == "train"] == list(range(1, steps + 1))
