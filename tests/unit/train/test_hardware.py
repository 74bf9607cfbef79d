"""CPU memory release: glibc keeps freed activations resident unless lmtune fixes its mapping threshold."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from lmtune.config import TrainingConfig
from lmtune.train import hardware

# Frees an 8 MB tensor that has a live 1 MB tensor above it, after an earlier 8 MB free has raised glibc's
# dynamic mapping threshold (as the first layers of a training step do); prints how much RSS dropped.
PROBE = """
import sys, torch
from pathlib import Path
from lmtune.train.hardware import release_freed_memory
rss = lambda: int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20
if sys.argv[1] == "on":
    assert release_freed_memory()
warm = torch.ones(2 * 2**20); del warm
a = torch.ones(2 * 2**20); b = torch.ones(2**18)
before = rss(); del a
print(before - rss())
"""


def rss_drop_mb(setting: str) -> float:
    out = subprocess.run([sys.executable, "-c", PROBE, setting], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")
def test_freed_tensor_memory_returns_to_the_system_only_with_the_setting():
    assert rss_drop_mb("off") < 1.0  # glibc's default: the freed 8 MB stay in the heap
    assert rss_drop_mb("on") >= 7.5


def test_the_accelerator_applies_the_setting_only_when_configured(monkeypatch):
    calls = []
    monkeypatch.setattr(hardware, "release_freed_memory", lambda: calls.append(1) or True)
    hardware.make_accelerator(TrainingConfig())
    assert calls == []  # off by default: it costs speed
    hardware.make_accelerator(TrainingConfig(release_freed_memory=True))
    assert calls == [1]
