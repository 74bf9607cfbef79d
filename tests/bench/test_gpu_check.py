"""bench/gpu_check.sh in its dry mode (--device cpu): the prepared GPU check runs end to end without a GPU."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # two to seven minutes on the 2-core machine, most of it starting processes
def test_the_dry_mode_writes_the_results_of_lmtune_and_the_peers_installed_here(tmp_path):
    out = tmp_path / "check"
    proc = subprocess.run(["bash", "bench/gpu_check.sh", "--device", "cpu", "--out", str(out), "--python",
                           sys.executable], cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu-check-levers.json", "gpu-check-levers.md",
                                                    "gpu-check.json", "gpu-check.log", "gpu-check.md"]
    main = json.loads((out / "gpu-check.json").read_text())
    expected = ["lmtune"] + (["trl-best"] if importlib.util.find_spec("trl") else [])
    assert sorted(s["system"] for s in main["systems"]) == sorted(expected)
    for system in main["systems"]:
        assert system["supervised_tokens_per_s"] > 0
        assert system["precision"] in ("fp32", "bf16")
        assert system["fraction_of_peak"] > 0
        assert system["eval_loss"] > 0
    lmtune = next(s for s in main["systems"] if s["system"] == "lmtune")
    # The CPU keeps the plain path: no Liger, the model's own attention with a block-diagonal mask.
    assert lmtune["settings"]["kernels"] == "none" and lmtune["settings"]["packed_attention"] == "mask"
    assert main["targets"]["lmtune"]["fraction_of_peak"]["target"].endswith(f"of the {lmtune['precision']} peak")
    levers = json.loads((out / "gpu-check-levers.json").read_text())
    assert [s["system"] for s in levers["systems"]] == ["lmtune-no-kernels"]
    assert "| precision | of its peak |" in (out / "gpu-check.md").read_text()
    assert "trl-liger left out: Liger's kernels need CUDA" in (out / "gpu-check.log").read_text()
