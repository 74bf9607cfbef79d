"""A child bound with bind_to_parent dies with its parent, also when the parent died before the binding."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from lmtune.execute.lifeline import ORPHAN_EXIT_CODE

BIND = "import sys, time; from lmtune.execute.lifeline import bind_to_parent; bind_to_parent(int(sys.argv[1])); "


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_a_parent_that_died_before_the_binding_makes_the_child_exit():
    # The pid given is not this child's parent, as when the parent died during the child's imports.
    out = subprocess.run([sys.executable, "-c", BIND + "print('still here')", "1"], capture_output=True, text=True)
    assert out.returncode == ORPHAN_EXIT_CODE and "still here" not in out.stdout


def test_the_right_parent_lets_the_child_run():
    out = subprocess.run([sys.executable, "-c", BIND + "print('running')", str(os.getpid())], capture_output=True,
                         text=True)
    assert out.returncode == 0 and out.stdout.strip() == "running"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_sigkill_of_the_parent_kills_the_bound_child():
    # middle starts a bound grandchild, prints its pid, then waits; SIGKILL of middle must take the grandchild.
    middle_code = ("import os, subprocess, sys, time; "
                   f"child = subprocess.Popen([sys.executable, '-c', {BIND + 'time.sleep(60)'!r}, str(os.getpid())]); "
                   "print(child.pid, flush=True); time.sleep(60)")
    middle = subprocess.Popen([sys.executable, "-c", middle_code], stdout=subprocess.PIPE, text=True)
    grandchild = int(middle.stdout.readline())
    time.sleep(1.0)  # let the grandchild finish its binding
    assert not _gone(grandchild, 0.1)
    middle.send_signal(signal.SIGKILL)
    middle.wait()
    assert _gone(grandchild, 5)
