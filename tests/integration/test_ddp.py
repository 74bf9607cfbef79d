"""Two processes under `accelerate launch` (CPU, gloo) give the losses of one process with the same global batch."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.mark.slow
def test_two_processes_equal_one_with_the_same_global_batch(tmp_path):
    single = tmp_path / "single" / "out.json"
    double = tmp_path / "double" / "out.json"
    single.parent.mkdir()
    double.parent.mkdir()
    # One process: micro-batches of 2, 2 accumulated -> global batch 4.
    subprocess.run([sys.executable, str(WORKER), str(single), "2", "2"], check=True, timeout=300)
    # Two processes: micro-batches of 2 each, no accumulation -> global batch 4.
    launcher = Path(sys.executable).with_name("accelerate")
    # accelerate's `--cpu` runs a single process; `--multi_gpu` starts DDP, on gloo when there is no GPU.
    subprocess.run(
        [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "--main_process_port", "29533", str(WORKER), str(double), "2", "1"],
        check=True, timeout=300,
    )
    assert (tmp_path / "double" / "run" / "metrics.jsonl").exists()
    a, b = json.loads(single.read_text()), json.loads(double.read_text())
    assert len(a["losses"]) == 4
    assert a["losses"] == pytest.approx(b["losses"], abs=1e-5)
    assert a["eval"] == pytest.approx(b["eval"], abs=1e-5)
