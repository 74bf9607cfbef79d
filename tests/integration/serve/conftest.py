"""A real `lmtune serve` in a subprocess (tiny-llama only, one training thread), driven with the openai client.

    server = Server(tmp_path); server.start()          # python -m lmtune.serve serve --config ...
    client = server.client(server.key("alpha"))        # openai.OpenAI on http://127.0.0.1:PORT/v1
    server.kill()                                      # SIGKILL to the server, its worker and training child

The server runs in its own session so a SIGKILL of its process group also takes its worker and the
worker's training process, as a machine crash would.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
import yaml

TERMINAL = ("succeeded", "failed", "cancelled")

CHATS = [
    ("What floats?", "Apples float because a quarter of their volume is air."),
    ("Which way does the Nile go?", "The Nile flows north into the Mediterranean Sea."),
    ("Tell me about octopus hearts.", "Octopuses have three hearts and blue blood."),
    ("Does honey spoil?", "Honey found in ancient tombs is still edible."),
    ("How does Venus rotate?", "Venus spins backwards compared with most planets."),
    ("Is a banana a berry?", "Bananas are botanically berries, strawberries are not."),
    ("Name for flamingo groups?", "A group of flamingos is called a flamboyance."),
    ("How hot is lightning?", "Lightning is five times hotter than the surface of the sun."),
    ("Which is older, sharks or trees?", "Sharks existed before trees did."),
    ("Odd wombat fact?", "Wombats produce cube-shaped droppings."),
    ("Does the Eiffel Tower change size?", "The Eiffel Tower grows a little in summer heat."),
    ("Sloth breath-holding?", "Sloths can hold their breath longer than dolphins."),
    ("Which freezes faster?", "Hot water can sometimes freeze faster than cold water."),
    ("How do butterflies taste?", "Butterflies taste with their feet."),
    ("Scotland's national animal?", "Scotland's national animal is the unicorn."),
    ("Mercury's day length?", "A day on Mercury lasts two of its years."),
]


def chat_jsonl() -> bytes:
    """16 chat examples in OpenAI's fine-tuning format."""
    rows = [{"messages": [{"role": "system", "content": "Answer with one fact."}, {"role": "user", "content": q},
                          {"role": "assistant", "content": a}]} for q, a in CHATS]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def dpo_jsonl() -> bytes:
    """16 preference pairs in OpenAI's DPO format."""
    rows = [{"input": {"messages": [{"role": "user", "content": q}]},
             "preferred_output": [{"role": "assistant", "content": a}],
             "non_preferred_output": [{"role": "assistant", "content": f"I do not know anything about that ({i})."}]}
            for i, (q, a) in enumerate(CHATS)]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `lmtune serve` process with its data folder."""

    def __init__(self, root: Path, **settings):
        self.root = root
        self.data_dir = root / "data"
        self.port = free_port()
        self.settings = {"data_dir": str(self.data_dir), "host": "127.0.0.1", "port": self.port,
                         "base_models": ["tiny-llama"], "training_threads": 1, "inference_threads": 1,
                         "poll_seconds": 0.2, "checkpoint_every": 2, "default_batch_size": 4,
                         "max_upload_bytes": 200_000, **settings}
        self.proc: subprocess.Popen | None = None
        self.log = root / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> None:
        config = self.root / "serve.yaml"
        config.write_text(yaml.safe_dump(self.settings))
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "lmtune.serve", "serve", "--config", str(config)],
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server did not start: {self.log.read_text()[-3000:]}")

    def key(self, project: str) -> str:
        database = ["--database-url", self.settings["database_url"]] if self.settings.get("database_url") else []
        out = subprocess.run([sys.executable, "-m", "lmtune.serve", "keys", "create", "--project", project,
                              "--data-dir", str(self.data_dir), *database], capture_output=True, text=True, check=True)
        return out.stdout.strip()

    def client(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=120)

    def kill(self) -> None:
        """SIGKILL the whole process group: server, worker and training child at once."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # whatever is left of the group
        except (ProcessLookupError, AttributeError):
            pass


def wait_for(client: openai.OpenAI, job_id: str, statuses=TERMINAL, timeout: float = 120, check=None):
    """Poll a job until its status is in `statuses` (and `check(job)` holds); returns the job."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses and (check is None or check(job)):
            return job
        if job.status in TERMINAL and job.status not in statuses:
            raise AssertionError(f"job {job_id} ended {job.status}: {job.error}; {_events_of(client, job_id)}")
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} still {job.status} after {timeout} s; {_events_of(client, job_id)}")


def _events_of(client: openai.OpenAI, job_id: str) -> str:
    """The job's event messages, oldest first, for a failure message."""
    return f"its events: {[e.message for e in client.fine_tuning.jobs.list_events(job_id, limit=50)][::-1]}"


@pytest.fixture(scope="package")
def server(tmp_path_factory):
    """A server shared by the tests of this folder, with projects alpha and beta."""
    srv = Server(tmp_path_factory.mktemp("serve"))
    srv.start()
    srv.keys = {"alpha": srv.key("alpha"), "beta": srv.key("beta")}
    yield srv
    srv.stop()


@pytest.fixture(scope="package")
def alpha(server) -> openai.OpenAI:
    return server.client(server.keys["alpha"])


@pytest.fixture(scope="package")
def beta(server) -> openai.OpenAI:
    return server.client(server.keys["beta"])


@pytest.fixture(scope="package")
def chat_data() -> bytes:
    return chat_jsonl()


@pytest.fixture(scope="package")
def dpo_data() -> bytes:
    return dpo_jsonl()


@pytest.fixture(scope="package")
def wait():
    """wait(client, job_id, statuses=TERMINAL, timeout=120, check=None) -> the job."""
    return wait_for


@pytest.fixture
def make_server(tmp_path):
    """Server(tmp_path / name, **settings) factories whose processes are stopped after the test."""
    made: list[Server] = []

    def make(name: str = "own", **settings) -> Server:
        root = tmp_path / name
        root.mkdir()
        made.append(Server(root, **settings))
        return made[-1]

    yield make
    for srv in made:
        srv.stop()


@pytest.fixture(scope="module")
def module_server(tmp_path_factory):
    """Server(root, **settings) factories for one test module (its own server and worker), stopped after it."""
    made: list[Server] = []

    def make(name: str = "module", **settings) -> Server:
        made.append(Server(tmp_path_factory.mktemp(name), **settings))
        return made[-1]

    yield make
    for srv in made:
        srv.stop()
