"""Two processes under `accelerate launch` (CPU, gloo) give the losses of one process with the same global batch.

Both through the loop directly (ddp_worker.py) and through `lmtune train` with training.num_processes=2.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lmtune.train.launch import free_port, launch_args

WORKER = Path(__file__).with_name("ddp_worker.py")
ROOT = Path(__file__).resolve().parents[2]


def _run(command: list[str], **kwargs) -> None:
    """Run to the end; on a failure or a hang, the command's own output goes into the assertion message."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)
    except subprocess.TimeoutExpired as hung:
        raise AssertionError(f"{command} hung for 300 s; its output:\n{(hung.stdout or b'')[-4000:]!r}\n"
                             f"{(hung.stderr or b'')[-4000:]!r}") from None
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"


@pytest.mark.slow
def test_two_processes_equal_one_with_the_same_global_batch(tmp_path):
    single = tmp_path / "single" / "out.json"
    double = tmp_path / "double" / "out.json"
    single.parent.mkdir()
    double.parent.mkdir()
    # One process: micro-batches of 2, 2 accumulated -> global batch 4.
    _run([sys.executable, str(WORKER), str(single), "2", "2"])
    # Two processes: micro-batches of 2 each, no accumulation -> global batch 4. The launch arguments are
    # lmtune's own, with a port free now: a fixed one can be held by another process and hang the rendezvous.
    _run([sys.executable, "-m", "accelerate.commands.launch",
          *launch_args(2, "ddp_worker", [str(double), "2", "1"], free_port())], cwd=WORKER.parent)
    assert (tmp_path / "double" / "run" / "metrics.jsonl").exists()
    a, b = json.loads(single.read_text()), json.loads(double.read_text())
    assert len(a["losses"]) == 4
    assert a["losses"] == pytest.approx(b["losses"], abs=1e-5)
    assert a["eval"] == pytest.approx(b["eval"], abs=1e-5)


def _cli_losses(tmp_path: Path, name: str, *overrides: str) -> list[float]:
    runs = tmp_path / name
    sets = [a for o in ("training.max_steps=4", "training.precision=fp32", "training.warmup_ratio=0",
                        "training.lr_scheduler=constant", "training.eval_every=4", "eval.at_end=false",
                        "lora.dropout=0",  # each rank draws its own dropout masks: equal only without dropout
                        "data.max_validation_examples=8", f"output.dir={runs}", *overrides) for a in ("--set", o)]
    _run([sys.executable, "-m", "lmtune.cli", "train", "configs/tiny.yaml", *sets], cwd=ROOT)
    (run,) = runs.iterdir()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT.parent / "shared" / "data").is_dir(), reason="shared data not found")
def test_lmtune_train_with_num_processes_2_equals_one_process_with_the_same_global_batch(tmp_path):
    one = _cli_losses(tmp_path, "one", "training.batch_size=4", "training.grad_accum=2")
    two = _cli_losses(tmp_path, "two", "training.batch_size=4", "training.num_processes=2")
    assert len(one) == 4
    assert one == pytest.approx(two, abs=1e-5)
