"""CPU threads from the cores actually free: a shared machine must not be oversubscribed.

    threads, note = default_threads()        # e.g. (1, "1 of 2 cores are busy ...") on a shared box

PyTorch starts one thread per physical core whatever else runs. When another process keeps a core
busy, every PyTorch thread waits at each operation's barrier for the one that shares the busy core:
measured on the 2-core EPYC, a run beside another process fell from ~140 to 34-46 tokens/s with 2
threads and ran at 73-78 with 1 (issue 23). So a run whose training.num_threads is null samples each
core's use for a moment at start-up and leaves the busy ones alone, saying so.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

SAMPLE_SECONDS = 0.2
BUSY_FRACTION = 0.5  # a core busier than this with other work is left out


def _cpu_times() -> dict[int, tuple[int, int]]:
    """(busy, total) jiffies of every CPU from /proc/stat (empty where there is none)."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            values = [int(x) for x in fields[:8]]
            idle = values[3] + values[4]  # idle + iowait
            out[int(name[3:])] = (sum(values) - idle, sum(values))
    return out


def busy_cores(cpus: set[int], seconds: float = SAMPLE_SECONDS) -> int | None:
    """How many of `cpus` were busier than BUSY_FRACTION over `seconds` (None without /proc/stat)."""
    before = _cpu_times()
    if not before:
        return None
    time.sleep(seconds)
    after = _cpu_times()
    busy = 0
    for cpu in cpus:
        if cpu in before and cpu in after:
            d_busy, d_total = after[cpu][0] - before[cpu][0], after[cpu][1] - before[cpu][1]
            busy += d_total > 0 and d_busy / d_total > BUSY_FRACTION
    return busy


def pick_threads(default: int, n_cpus: int, n_busy: int) -> int:
    """Threads for a run: PyTorch's default, less the cores other work keeps busy, at least 1."""
    return max(1, min(default, n_cpus - n_busy))


def default_threads() -> tuple[int, str | None]:
    """(threads to use, a warning when busy cores made it fewer than PyTorch's default, else None)."""
    default = torch.get_num_threads()
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    n_busy = busy_cores(cpus)
    if n_busy is None:
        return default, None
    threads = pick_threads(default, len(cpus), n_busy)
    if threads >= default:
        return default, None
    return threads, (f"{n_busy} of {len(cpus)} CPU cores are busy with other processes: training with {threads} "
                     f"thread(s) instead of {default}, or every step would wait for the busy core. Set "
                     "training.num_threads to choose (docs/training.md, 'Threads on a shared machine').")
