"""Default threads leave the cores that other processes keep busy alone."""

import os

import pytest

from lmtune.train.threads import busy_cores, pick_threads


@pytest.mark.parametrize("default, n_cpus, n_busy, expected", [
    (2, 2, 0, 2),   # an idle machine: PyTorch's default
    (2, 2, 1, 1),   # one core busy elsewhere: one thread, not two waiting on each other
    (2, 2, 2, 1),   # everything busy: still one thread
    (8, 16, 4, 8),  # enough free cores: never more than the default
    (16, 16, 5, 11),
])
def test_threads_are_the_free_cores(default, n_cpus, n_busy, expected):
    assert pick_threads(default, n_cpus, n_busy) == expected


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs Linux /proc/stat")
def test_busy_cores_samples_this_machine():
    cpus = os.sched_getaffinity(0)
    busy = busy_cores(cpus, seconds=0.05)
    assert isinstance(busy, int) and 0 <= busy <= len(cpus)
    assert busy_cores(set(), seconds=0.01) == 0
