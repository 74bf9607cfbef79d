"""Property-based tests: arbitrary bytes and structurally random JSON never crash the data validator, the
format detection or the config loader. They answer with issues / DataError / ConfigError whose messages
name the file and line (the config: the key path), never with another exception.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmtune.config_file import ConfigError, load_config
from lmtune.data.formats import FORMATS, detect_format, load_examples, row_format, to_example
from lmtune.data.records import DataError, Row
from lmtune.data.validate import format_report, validate_file

FILE_LEVEL = {"empty_file", "unreadable_file"}  # about the whole file: no line to name
SETTINGS = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

keys = st.sampled_from(["messages", "role", "content", "weight", "prompt", "completion", "chosen", "rejected",
                        "instruction", "input", "output", "text", "label", "question", "answer", "name",
                        "preferred_output", "non_preferred_output", "tool_calls"]) | st.text(max_size=6)
scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(keys, inner, max_size=5), max_leaves=20)
records = st.dictionaries(keys, json_values, max_size=6)
roles = st.sampled_from(["system", "user", "assistant", "tool", "wizard", "", 3])
messages = st.lists(st.fixed_dictionaries({"role": roles, "content": json_values},
                                          optional={"weight": json_values}), max_size=4)
chat_records = st.fixed_dictionaries({"messages": messages | json_values})


def _check(report, path: Path) -> None:
    """Every error is an Issue naming this file and (unless it is about the whole file) its line."""
    for issue in report.errors:
        assert issue.file == str(path), issue
        assert issue.line is not None or issue.code in FILE_LEVEL | {"unknown_format"}, issue
        assert issue.message and str(issue).startswith(str(path)), issue
    assert format_report(report)  # rendering never fails either


def _validate(tmp_path: Path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    report = validate_file(path, count_tokens=lambda ex: 3, max_seq_len=2)
    _check(report, path)
    return report, path


@SETTINGS
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".jsonl", ".json", ".csv", ".txt", ".jsonl.gz"]))
def test_arbitrary_bytes_give_issues_not_crashes(tmp_path, data, suffix):
    _validate(tmp_path, "fuzz" + suffix, data)


@SETTINGS
@given(lines=st.lists(records | chat_records | json_values, min_size=1, max_size=6))
def test_random_json_lines_are_rejected_line_by_line(tmp_path, lines):
    body = "".join(json.dumps(v) + "\n" for v in lines).encode()
    report, path = _validate(tmp_path, "random.jsonl", body)
    for issue in report.errors:
        if issue.line is not None:
            assert 1 <= issue.line <= len(lines)


@SETTINGS
@given(value=st.lists(records | chat_records, max_size=5) | json_values)
def test_random_json_document(tmp_path, value):
    _validate(tmp_path, "doc.json", json.dumps(value).encode())


@SETTINGS
@given(lines=st.lists(records | chat_records, min_size=1, max_size=5),
       fmt=st.sampled_from(("auto", *FORMATS)))
def test_every_format_normaliser_survives_random_records(lines, fmt):
    rows = [Row(data=v, file="x.jsonl", line=i + 1) for i, v in enumerate(lines)]
    for row in rows:
        row_format(row.data)
        example, issues = to_example(row, fmt)
        for issue in issues:
            assert issue.file == "x.jsonl" and issue.line == row.line, issue
        assert example is not None or issues or fmt in ("text", "transcript", "auto")
    try:
        assert detect_format(rows) in FORMATS
    except DataError as err:
        assert all(i.line == 1 and i.code == "unknown_format" for i in err.issues)


@SETTINGS
@given(lines=st.lists(chat_records, min_size=1, max_size=5))
def test_load_examples_reports_every_bad_chat_line(tmp_path, lines):
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(v) + "\n" for v in lines))
    examples, issues, fmt = load_examples(path)
    bad_lines = {i.line for i in issues if i.severity == "error"}
    good_lines = {e.line for e in examples}
    assert not bad_lines & good_lines  # a record with an error is never trained on
    assert bad_lines | good_lines <= set(range(1, len(lines) + 1))


section_names = st.sampled_from(["model", "data", "method", "lora", "training", "eval", "output"]) | st.text(max_size=8)
config_trees = st.dictionaries(section_names, json_values | st.dictionaries(keys, json_values, max_size=4), max_size=5)
override_text = st.text(alphabet=string.printable, max_size=40)


@SETTINGS
@given(tree=config_trees | json_values)
def test_config_loader_random_yaml_trees(tmp_path, tree):
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(tree))
    try:
        load_config(path)
    except ConfigError as err:
        assert str(err)


@SETTINGS
@given(data=st.binary(max_size=300))
def test_config_loader_random_bytes(tmp_path, data):
    path = tmp_path / "bytes.yaml"
    path.write_bytes(data)
    try:
        load_config(path)
    except ConfigError as err:
        assert str(err)


@SETTINGS
@given(overrides=st.lists(override_text, max_size=3))
def test_config_overrides_random_text(overrides):
    try:
        load_config(None, overrides)
    except ConfigError as err:
        assert str(err)


@pytest.mark.parametrize("value", ["-1", "1e400", "-0.5", "nan", "[1, 2]", "{a: 1}", "''"])
def test_absurd_hyperparameters_name_the_key(value):
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"training.learning_rate={value}", f"training.batch_size={value}"])
    assert "training." in str(err.value)
