"""The python grader's sandbox on this host: scores come back, and every limit stops the grader by name."""

from __future__ import annotations

import pytest

from lmtune.graders.grade import GradingContext, grade
from lmtune.graders.sandbox import Limits, run_sandboxed, sandbox_problem
from lmtune.graders.spec import parse_grader

LIMITS = Limits(cpu_seconds=2, wall_seconds=6, memory_bytes=256 << 20, output_bytes=64 << 10)
CASE = [{"sample": {"output_text": "4"}, "item": {"answer": "4"}}]


def test_the_sandbox_starts_here():
    # CI and `make setup` install bubblewrap: a host without a working sandbox must fail this test.
    assert sandbox_problem() is None


def test_grades_come_back_per_sample_with_per_sample_errors():
    source = "def grade(sample, item):\n    return 1 / float(item['d'])\n"
    cases = [{"sample": {}, "item": {"d": 2}}, {"sample": {}, "item": {"d": 0}}, {"sample": {}, "item": {"d": 4}}]
    out = run_sandboxed(source, cases, LIMITS)
    assert out["error"] is None and out["scores"][0] == 0.5 and out["scores"][2] == 0.25
    assert "ZeroDivisionError" in out["scores"][1]["error"]


@pytest.mark.parametrize("body, says", [
    ("open('/etc/passwd').read()", "not visible in the sandbox"),
    ("open('/usr/x', 'w')", "writing outside /tmp is not allowed"),
    ("socket.socket().connect(('8.8.8.8', 53))", "network access is not allowed"),
    ("[os.fork() for _ in range(64)]", "process limit"),
    ("bytearray(10 * 1024 ** 3)", "memory limit"),
    ("sys.stdout.write('x' * (1 << 20))", "output limit"),
    ("open('/tmp/big', 'w').write('x' * (1 << 20))", "output limit"),
    ("__import__('time').sleep(60)", "wall time limit"),
])
def test_each_limit_is_named(body, says):
    source = f"import os, socket, sys\n\ndef grade(sample, item):\n    {body}\n    return 1.0\n"
    out = run_sandboxed(source, CASE, LIMITS)
    message = out["error"] or out["scores"][0]["error"]
    assert says in message


def test_a_python_grader_failure_is_a_flagged_zero():
    spec = parse_grader({"type": "python", "name": "p", "source": "import sys\nsys.exit(2)\n"})
    (outcome,) = grade(spec, ["4"], [{}], GradingContext(limits=LIMITS))
    assert outcome.reward == 0.0 and outcome.flag == "python_grader_runtime_error"
    assert outcome.errors()["python_grader_runtime_error_details"] == "SystemExit: 2"
