"""What the `lmtune` command tests share: paths, quick settings for the tiny model, and running `main`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmtune.cli import main

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
SYSTEM = "Answer with one word."
# Small and quick on a busy 2-core CPU: one thread avoids oversubscription (10x slower otherwise);
# checkpoints every 4 steps, all kept, so a copy can be cut back to step 4 and resumed.
FAST = ["training.num_threads=1", "data.max_validation_examples=8", "data.max_test_examples=8", "training.save_every=4",
        "training.keep_checkpoints=3", f"data.system_prompt={SYSTEM}"]

needs_data = pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared data not found at {SHARED}")


def sets(*overrides: str) -> list[str]:
    """`--set` arguments for each override."""
    return [arg for o in overrides for arg in ("--set", o)]


def run_cli(argv: list[str]) -> int:
    """main(argv) from the project root, restoring PyTorch's thread count (training.num_threads is process-wide)."""
    threads = torch.get_num_threads()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(ROOT)
            return main(argv)
    finally:
        torch.set_num_threads(threads)
