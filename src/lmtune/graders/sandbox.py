"""Run untrusted Python (a python grader's source) in a bubblewrap sandbox with hard limits.

Usage:
    problem = sandbox_problem()              # None, or why no sandbox can start on this host
    out = run_sandboxed(source, cases, Limits())   # {"scores": [float | {"error"}], "error": None | str}

The sandbox is a separate process tree started through Debian's `bwrap` in new user, PID, network,
IPC, UTS and cgroup namespaces, as the unprivileged user `nobody` when the server runs as root: it
sees only /usr read-only (the system Python, no site-packages of the service) and an empty /tmp of
limited size; the root is read-only; no network device but loopback; a clean environment. `prlimit`
caps address space, CPU seconds, processes, open files and the size of any file written (stdout and
stderr included: they are files here), and the caller kills the process group at the wall-time limit.
A limit that stops the grader becomes an error naming it. If bwrap is missing or cannot create the
namespaces, python graders are refused (GraderUnavailable): they never run unsandboxed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

NOBODY = 65534
RUNNER = Path(__file__).with_name("sandbox_runner.py")


class GraderUnavailable(RuntimeError):
    """Python graders cannot run on this host (no working sandbox)."""


@dataclass(frozen=True)
class Limits:
    """Per-call limits of one sandboxed grading run (all samples of one call share them)."""

    cpu_seconds: int = 30
    wall_seconds: float = 60.0
    memory_bytes: int = 1 << 30
    processes: int = 16
    output_bytes: int = 1 << 20
    tmp_bytes: int = 16 << 20
    open_files: int = 64


def _python() -> str:
    found = shutil.which("python3", path="/usr/bin:/bin")
    if found is None or not found.startswith("/usr/"):
        raise GraderUnavailable("python graders need a system Python 3 under /usr (apt-get install python3)")
    return found


def _root_links() -> list[str]:
    """/bin, /lib, ... as the host has them (merged-/usr symlinks or read-only directories)."""
    args: list[str] = []
    for name in ("/bin", "/lib", "/lib64", "/lib32", "/sbin"):
        if os.path.islink(name):
            args += ["--symlink", os.readlink(name), name]
        elif os.path.isdir(name):
            args += ["--ro-bind", name, name]
    return args


def _command(limits: Limits) -> list[str]:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise GraderUnavailable("python graders run in a bubblewrap sandbox and `bwrap` is not installed "
                                "(apt-get install bubblewrap); they are never run unsandboxed")
    prlimit = shutil.which("prlimit") or "/usr/bin/prlimit"
    cpu = limits.cpu_seconds
    return [prlimit, f"--as={limits.memory_bytes}", f"--cpu={cpu}:{cpu + 1}", f"--nproc={limits.processes}",
            f"--fsize={limits.output_bytes}", f"--nofile={limits.open_files}", "--core=0", "--",
            bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--clearenv",
            "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp", "--setenv", "LANG", "C.UTF-8",
            "--ro-bind", "/usr", "/usr", *_root_links(), "--proc", "/proc", "--dev", "/dev",
            "--size", str(limits.tmp_bytes), "--tmpfs", "/tmp",
            "--ro-bind", str(RUNNER), "/sandbox/runner.py", "--remount-ro", "/",
            "--chdir", "/tmp", "--", _python(), "-I", "-S", "/sandbox/runner.py"]


def _user() -> dict[str, Any]:
    # As root, drop to nobody: the process limit then counts only the sandbox's own processes.
    return {"user": NOBODY, "group": NOBODY, "extra_groups": []} if os.geteuid() == 0 else {}


@lru_cache(maxsize=1)
def sandbox_problem() -> str | None:
    """None when the sandbox starts on this host, else the reason it does not (checked once per process)."""
    try:
        out = run_sandboxed("def grade(sample, item):\n    return 1.0\n", [{"sample": {}, "item": {}}], Limits())
    except GraderUnavailable as err:
        return str(err)
    if out["error"] is not None or out["scores"] != [1.0]:
        return f"the bubblewrap sandbox does not start on this host: {out['error'] or out['scores']}"
    return None


def _limit_hit(code: int | None, limits: Limits, log: Path) -> str | None:
    if log.stat().st_size >= limits.output_bytes:
        return f"output limit exceeded: more than {limits.output_bytes} bytes written"
    # bwrap reports a child killed by signal N as exit code 128 + N; SIGKILL follows at the hard CPU limit.
    if code in (-signal.SIGXCPU, 128 + signal.SIGXCPU, -signal.SIGKILL, 128 + signal.SIGKILL):
        return f"CPU time limit exceeded: {limits.cpu_seconds} s"
    return None


def run_sandboxed(source: str, cases: list[dict[str, Any]], limits: Limits) -> dict[str, Any]:
    """Run `grade(sample, item)` of `source` on every case in one sandbox; scores, or the error that stopped it."""
    command = _command(limits)
    payload = json.dumps({"source": source, "cases": cases}, ensure_ascii=False)
    with tempfile.TemporaryDirectory(prefix="lmtune-grader-") as tmp:
        result, log = Path(tmp, "result.json"), Path(tmp, "output.log")
        with open(result, "wb") as out, open(log, "wb") as err:
            try:
                proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=out, stderr=err,
                                        start_new_session=True, close_fds=True, env={"PATH": "/usr/bin:/bin"},
                                        **_user())
            except OSError as error:
                raise GraderUnavailable(f"the sandbox cannot start: {error}") from error
            started = time.monotonic()
            timed_out = False
            try:
                proc.communicate(payload.encode(), timeout=limits.wall_seconds)
            except subprocess.TimeoutExpired:
                timed_out = True
            except BrokenPipeError:
                pass  # the grader exited before reading its input: its result says why
            finally:
                if proc.poll() is None or timed_out:
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    proc.wait()
        if timed_out:
            return {"scores": [], "error": f"wall time limit exceeded: {limits.wall_seconds:g} s "
                                          f"(stopped after {time.monotonic() - started:.1f} s)"}
        hit = _limit_hit(proc.returncode, limits, log)
        if hit:
            return {"scores": [], "error": hit}
        try:
            return json.loads(result.read_text())
        except (ValueError, UnicodeDecodeError):
            tail = log.read_bytes()[-400:].decode(errors="replace").strip()
            if "bwrap:" in tail and proc.returncode in (1, 2):
                raise GraderUnavailable(f"the bubblewrap sandbox does not start on this host: {tail}") from None
            return {"scores": [], "error": f"grader process exited with code {proc.returncode}: {tail}"}
