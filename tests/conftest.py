"""Fixtures for every test."""

from __future__ import annotations

import getpass
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def seeded_torch():
    """Every test starts from the same global generator state, whatever ran before it (peft's LoRA
    initialisation, dropout and sampling draw from it), so a test's outcome cannot depend on order or luck."""
    torch.manual_seed(0)
    yield


def _postgres_bin() -> Path | None:
    """Debian's PostgreSQL server binaries (the newest installed version), or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else None


class PostgresServer:
    """A throwaway PostgreSQL cluster on a loopback port (initdb + pg_ctl), run as a non-root user when we are root."""

    def __init__(self, bindir: Path, root: Path):
        self.bindir, self.root = bindir, root
        self.data, self.log = root / "data", root / "server.log"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        # postgres refuses to run as root: use Debian's `postgres` user (or nobody) for its processes.
        self.user = None
        if os.geteuid() == 0:
            self.user = "postgres" if _user_exists("postgres") else "nobody"
            shutil.chown(root, self.user)

    @property
    def url(self) -> str:
        return f"postgresql://{self.user or getpass.getuser()}@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        """Start (or restart) the server and wait until it accepts connections."""
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories='' -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: `fast` disconnects clients and shuts down cleanly, `immediate` as a crash would."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for the session (Debian's `postgresql` package; `make test` installs it)."""
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not installed (make postgresql installs Debian's package)")
    pytest.importorskip("psycopg", reason="the cluster extra (psycopg) is not installed")
    root = Path(tempfile.mkdtemp(prefix="lmtune-pg-"))  # not under pytest's 0700 root: the server user must enter it
    server = PostgresServer(bindir, root)
    server.init()
    server.start()
    yield server
    try:
        server.stop("immediate")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url(postgres_server) -> str:
    """postgresql://... of the session's server (each test that needs a clean database makes its own)."""
    return postgres_server.url


@pytest.fixture
def fresh_postgres(postgres_server) -> str:
    """The URL of a new, empty database on the session's server."""
    import psycopg

    name = f"t{secrets.token_hex(6)}"
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres_server.url.rsplit("/", 1)[0] + "/" + name
