"""schemathesis against the served OpenAPI document: no generated request, valid or not, gets a 5xx, and
every error is in OpenAI's shape.

The server has no worker, so created jobs never train (a job on a file that does not exist is a 404);
max_tokens is capped at 32 so generation stays fast. Every operation gets a bounded number of positive
(schema-conforming) and negative (schema-violating) examples, authenticated as project alpha.
(schemathesis' own pytest plugin cannot load a schema from a fixture under this pytest, so Hypothesis is
driven directly with each operation's strategy.)
"""

from __future__ import annotations

import time

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

pytestmark = pytest.mark.slow
EXAMPLES = {schemathesis.GenerationMode.POSITIVE: 15, schemathesis.GenerationMode.NEGATIVE: 10}


def test_no_server_errors_for_generated_requests(rserver, capsys):
    schema = schemathesis.openapi.from_url(rserver.url + "/openapi.json")
    headers = {"Authorization": f"Bearer {rserver.keys['alpha']}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    counts: dict[str, int] = {}
    failures: list[str] = []
    started = time.perf_counter()
    for operation in operations:
        for mode, n in EXAMPLES.items():

            @settings(max_examples=n, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case):
                response = case.call(headers=headers, timeout=60)
                counts[operation.label] = counts.get(operation.label, 0) + 1
                if response.status_code >= 500:
                    failures.append(f"{case.method} {case.formatted_path} {case.body!r:.200}: "
                                    f"{response.status_code} {response.text[:300]}")
                elif response.status_code >= 400:
                    error = response.json()["error"]
                    assert set(error) == {"message", "type", "param", "code"} and error["message"]

            try:
                check()
            except Unsatisfiable:  # nothing to make invalid (e.g. GET /v1/models takes no parameters)
                assert mode == schemathesis.GenerationMode.NEGATIVE, operation.label
    total = sum(counts.values())
    with capsys.disabled():
        print(f"\nschemathesis: {total} requests over {len(operations)} operations in "
              f"{time.perf_counter() - started:.1f} s, {len(failures)} server errors")
    assert len(counts) == len(operations) and total >= 10 * len(operations)
    assert failures == []
