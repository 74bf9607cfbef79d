"""Tie a child process's life to its parent's, without a race: the kernel's parent-death signal.

Usage (the very first thing a child does, before its heavy imports):
    bind_to_parent(parent_pid)      # SIGKILL when the parent dies; exits at once if it already has
    parent_alive(parent_pid)        # the polling check, for platforms without prctl
    python -m lmtune.execute.lifeline PARENT_PID MODULE ARGS...   # bind, then run `python -m MODULE ARGS`

Reading os.getppid() after slow imports cannot tell whether the parent died meanwhile (the child
is re-parented to init or a subreaper). So the parent passes its pid explicitly, the child asks the
kernel for a signal when its parent exits (Linux prctl(PR_SET_PDEATHSIG)), and only then checks
that its parent is still the expected pid: a parent that died before the prctl is caught by the
check, one that dies after it by the signal. Standard library only, so it can run before torch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import runpy
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
ORPHAN_EXIT_CODE = 3


def _set_parent_death_signal(sig: int) -> bool:
    """prctl(PR_SET_PDEATHSIG, sig) on Linux; False where it is unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    return libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0


def parent_alive(parent: int) -> bool:
    """Whether this process is still the child of `parent` (a dead parent's children are re-parented)."""
    return os.getppid() == parent


def bind_to_parent(parent: int, sig: int = signal.SIGKILL) -> bool:
    """Receive `sig` when `parent` dies; exit now if it is already gone. True when the kernel will signal."""
    armed = _set_parent_death_signal(sig)
    if not parent_alive(parent):  # it died before the prctl took effect: the signal will never come
        os._exit(ORPHAN_EXIT_CODE)
    return armed


def watch_parent(parent: int) -> None:
    """Where the kernel cannot signal a parent's death (not Linux): poll for it in a thread and exit."""
    def watch() -> None:
        while parent_alive(parent):
            time.sleep(0.5)
        os._exit(ORPHAN_EXIT_CODE)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str]) -> None:
    """`PARENT_PID MODULE ARGS...`: bind to the parent, then run MODULE as `python -m` would."""
    parent, module, *args = argv
    if not bind_to_parent(int(parent)):
        watch_parent(int(parent))
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
