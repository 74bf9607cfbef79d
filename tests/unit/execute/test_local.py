"""The local executor runs `python -m module args` as a child bound to its parent, and stops it on cancel."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmtune.execute.base import Resources, make_executor
from lmtune.execute.local import LocalExecutor

SLEEP = ["-n", "1", "-r", "1", "import time; time.sleep(60)"]  # `python -m timeit` running one long statement


def test_output_goes_to_the_log_and_the_exit_code_comes_back(tmp_path: Path):
    log = tmp_path / "logs" / "run.log"
    handle = make_executor("local").submit("timeit", ["-n", "1", "-r", "1", "print('hello from the child')"],
                                           log_path=log, resources=Resources())
    assert handle.wait(60) == 0
    assert "hello from the child" in log.read_text()
    failing = LocalExecutor().submit("timeit", ["-n", "1", "-r", "1", "import os; os._exit(7)"],
                                     log_path=log, resources=Resources())
    assert failing.wait(60) == 7
    assert "hello from the child" in log.read_text()  # appended, not truncated


def test_wait_with_a_timeout_and_cancel(tmp_path: Path):
    handle = LocalExecutor().submit("timeit", SLEEP, log_path=tmp_path / "log", resources=Resources())
    assert handle.wait(0.5) is None and handle.poll() is None
    started = time.monotonic()
    handle.cancel()
    assert handle.poll() == -signal.SIGTERM
    assert time.monotonic() - started < 5  # SIGTERM was enough; no wait for the SIGKILL grace


def test_env_reaches_the_child(tmp_path: Path):
    log = tmp_path / "log"
    handle = LocalExecutor().submit("timeit", ["-n", "1", "-r", "1", "import os; print(os.environ['LMTUNE_T'])"],
                                    log_path=log, resources=Resources(), env={"LMTUNE_T": "xyz"})
    assert handle.wait(60) == 0 and "xyz" in log.read_text()


def test_an_unknown_executor_is_an_error_that_names_the_choices():
    with pytest.raises(ValueError, match="'slurm'.*local, ray"):
        make_executor("slurm")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_the_child_dies_with_the_process_that_submitted_it(tmp_path: Path):
    code = ("import sys, time; from pathlib import Path; from lmtune.execute.local import LocalExecutor; "
            f"h = LocalExecutor().submit('timeit', {SLEEP!r}, log_path=Path(sys.argv[1])); "
            "print(h.pid, flush=True); time.sleep(60)")
    middle = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "log")], stdout=subprocess.PIPE, text=True)
    child = int(middle.stdout.readline())
    os.kill(child, 0)  # running
    middle.send_signal(signal.SIGKILL)
    middle.wait()
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    pytest.fail("the child outlived the process that submitted it")
