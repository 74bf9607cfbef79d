"""Hostile python graders through /graders/run: each is stopped with an error naming the limit, while the
server keeps answering and a training job beside them succeeds."""

from __future__ import annotations

import io

import httpx
import pytest

pytestmark = pytest.mark.slow


def grader(body: str) -> dict:
    return {"type": "python", "name": "hostile", "source": "import os, socket, sys\n\ndef grade(sample, item):\n"
            + "".join(f"    {line}\n" for line in body.splitlines())}


@pytest.fixture(scope="module")
def sandboxed(module_server):
    srv = module_server("sandbox", grader_cpu_seconds=2, grader_wall_seconds=8, grader_memory_mb=512)
    srv.start()
    srv.keys = {"alpha": srv.key("alpha")}
    return srv


def hostile_cases(data_dir: str) -> list[tuple[str, str, str | tuple[str, ...] | None]]:
    """(what it tries, the grader's body, words the error must name: one of them when a tuple)."""
    return [
        ("read the data folder", f"return len(open({data_dir + '/lmtune.db'!r}, 'rb').read())", "not visible in the sandbox"),
        ("open a socket", "socket.create_connection(('1.1.1.1', 80), timeout=2)\nreturn 1", "network access is not allowed"),
        ("reach the server", "socket.create_connection(('127.0.0.1', 8000), timeout=2)\nreturn 1", "network access is not allowed"),
        ("fork repeatedly", "while True:\n    if os.fork() == 0:\n        __import__('time').sleep(60)", "process limit"),
        # On a loaded machine 2 CPU seconds can take longer than the 8 s wall limit: either limit may stop it.
        ("loop forever", "while True:\n    pass", ("CPU time limit", "wall time limit")),
        ("sleep forever", "__import__('time').sleep(3600)", "wall time limit"),
        ("allocate 10 GB", "x = bytearray(10 * 1024 ** 3)\nreturn 1", "memory limit"),
        ("write 1 GB of output", "block = 'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.write(block)\nreturn 1",
         "output limit"),
        ("write outside its temp folder", "open('/usr/evil.txt', 'w').write('x')\nreturn 1", "writing outside /tmp is not allowed"),
        ("write in the root", "open('/evil.txt', 'w').write('x')\nreturn 1", "writing outside /tmp is not allowed"),
        ("read the environment", "return float(len([k for k in os.environ if k not in ('PATH', 'HOME', 'LANG', 'PWD')]))", None),
    ]


def test_hostile_graders_are_stopped_and_nothing_else_is_hurt(sandboxed, wait, chat_data):
    client = sandboxed.client(sandboxed.keys["alpha"])
    upload = client.files.create(file=("chat.jsonl", io.BytesIO(chat_data)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="tiny-llama", training_file=upload.id,
                                         hyperparameters={"n_epochs": 1})
    for what, body, names in hostile_cases(str(sandboxed.data_dir.resolve())):
        out = client.fine_tuning.alpha.graders.run(grader=grader(body), model_sample="x", item={})
        if names is None:  # a clean environment: nothing but PATH, HOME, LANG and PWD
            assert out.reward == 0.0 and not out.metadata.errors.python_grader_runtime_error, what
            continue
        details = out.metadata.errors.python_grader_runtime_error_details or ""
        assert out.reward == 0.0 and out.metadata.errors.python_grader_runtime_error, what
        assert any(name in details for name in ((names,) if isinstance(names, str) else names)), f"{what}: {details}"
        assert httpx.get(sandboxed.url + "/health", timeout=5).status_code == 200, what
    ok = client.fine_tuning.alpha.graders.run(grader=grader("return 1.0"), model_sample="x", item={})
    assert ok.reward == 1.0
    assert not (sandboxed.root / "data" / "evil.txt").exists()
    assert wait(client, job.id, timeout=300).status == "succeeded"
