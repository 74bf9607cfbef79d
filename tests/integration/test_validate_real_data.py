"""`lmtune data validate` on the real data sets in ../shared/data and on a file with planted errors.

The example counts are the ones /work/shared/data/README.md gives for each data set.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lmtune.cli import main

# The real data sets live next to the project (../shared/data), never inside it.
SHARED_DATA = Path(os.environ.get("LMTUNE_SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))

# file -> (format detected, records), from the README's table.
REAL = {
    "gsm8k/train.jsonl": ("prompt_completion", 7473),
    "gsm8k/test.jsonl": ("prompt_completion", 1319),
    "hh-rlhf-harmless/harmless-base-test.jsonl.gz": ("preference", 2312),
    "tweeteval/emotion/train_text.txt": ("labelled", 3257),
    "tweeteval/irony/train_text.txt": ("labelled", 2862),
    "tweeteval/hate/train_text.txt": ("labelled", 9000),
    "tweeteval/offensive/train_text.txt": ("labelled", 11916),
    "multi30k/train.en.gz": ("text", 29000),
}

# Records warned about and left out of the examples: hate has 7 empty tweets (lines 1468, 1983, ...).
BLANK = {"tweeteval/hate/train_text.txt": 7}


@pytest.fixture
def shared_data() -> Path:
    """The folder of real data sets; tests that need it are skipped where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


def validate(capsys, *argv: str) -> tuple[int, str]:
    code = main(["data", "validate", *argv])
    out, err = capsys.readouterr()
    assert err == ""
    return code, out


@pytest.mark.parametrize("name", REAL)
def test_real_data_validates_with_statistics(shared_data, capsys, name):
    fmt, n = REAL[name]
    path = shared_data / name
    code, out = validate(capsys, str(path))
    assert code == 0, out[:2000]
    lines = out.splitlines()
    kept = n - BLANK.get(name, 0)
    assert sum(" warning empty_content [text]" in ln for ln in lines) == BLANK.get(name, 0)
    assert lines[0].startswith(f"{path}: OK - format {fmt}, {n} rows, {kept} examples, 0 errors, ")
    stats = lines[lines.index("statistics:"):]
    assert f"  examples: {kept:,}" in stats
    assert "  tokens:" not in stats  # only with --model
    # Every problem line names the file and a line number.
    for issue in lines[1:lines.index("statistics:")]:
        assert issue.startswith(f"{path}:") and issue.split(":")[1].isdecimal() or issue.startswith("... and "), issue


def test_label_distribution_adds_up(shared_data, capsys):
    code, out = validate(capsys, str(shared_data / "tweeteval/emotion/train_text.txt"), "--json")
    assert code == 0
    stats = json.loads(out)["stats"]
    assert set(stats["labels"]) == {"anger", "joy", "optimism", "sadness"}
    labels_file = (shared_data / "tweeteval/emotion/train_labels.txt").read_text().split()
    assert stats["labels"]["anger"] == labels_file.count("0")  # mapping.txt: 0 anger
    assert sum(stats["labels"].values()) == 3257


@pytest.mark.parametrize(
    "name",
    [
        "gsm8k/test.jsonl",
        "tweeteval/irony/train_text.txt",
        pytest.param("hh-rlhf-harmless/harmless-base-test.jsonl.gz", marks=pytest.mark.slow),
        pytest.param("multi30k/train.en.gz", marks=pytest.mark.slow),
    ],
)
def test_token_statistics_with_a_model(shared_data, capsys, name):
    n = REAL[name][1]
    code, out = validate(capsys, str(shared_data / name), "--model", "tiny-llama", "--max-seq-len", "256", "--json")
    assert code == 0
    report = json.loads(out)
    tokens = report["stats"]["tokens"]
    assert tokens["min"] <= tokens["mean"] <= tokens["p95"] <= tokens["max"]
    assert tokens["total"] == pytest.approx(tokens["mean"] * n, abs=n * 0.005 + 1)  # mean is rounded to 2 places
    assert tokens["estimated_training_tokens"] == tokens["total"] and tokens["max_seq_len"] == 256
    too_long = [i for i in report["issues"] if i["code"] == "too_long"]
    assert (tokens["too_long"] > 0) == bool(too_long) == (tokens["max"] > 256)


def test_token_statistics_are_printed(shared_data, capsys):
    code, out = validate(capsys, str(shared_data / "gsm8k/test.jsonl"), "--model", "tiny-llama")
    assert code == 0
    stats = out.splitlines()[out.splitlines().index("statistics:"):]
    tokens = stats[stats.index("  tokens:"):]
    assert [ln.split(":")[0].strip() for ln in tokens[1:]] == [
        "total", "min", "mean", "p95", "max", "estimated_training_tokens", "max_seq_len", "too_long", "tokens_lost"]
    assert "    max_seq_len: 1,024" in tokens


@pytest.mark.parametrize("name", ["gsm8k/test.jsonl", "hh-rlhf-harmless/harmless-base-test.jsonl.gz"])
def test_json_report(shared_data, capsys, name):
    fmt, n = REAL[name]
    code, out = validate(capsys, str(shared_data / name), "--json")
    assert code == 0
    report = json.loads(out)
    assert (report["ok"], report["format"], report["n_rows"], report["n_examples"], report["n_errors"]) == (
        True, fmt, n, n, 0)
    assert report["stats"]["examples"] == n
    assert report["n_warnings"] == len(report["issues"])


def test_column_renames_apply(shared_data, capsys):
    code, out = validate(capsys, str(shared_data / "gsm8k/test.jsonl"), "--column", "question=prompt",
                         "--column", "answer=completion", "--json")
    assert code == 0 and json.loads(out)["n_examples"] == 1319


PLANTED = [
    '{"prompt": "2 + 2?", "completion": "4"}',                     # 1 fine
    '{"prompt": "3 + 3?", "completion": ',                         # 2 invalid JSON
    '{"prompt": "", "completion": "nothing asked"}',               # 3 empty prompt
    '["not", "an", "object"]',                                     # 4 not an object
    '{"prompt": "5 + 5?", "completion": 10}',                      # 5 completion is a number
    '{"prompt": "6 + 6?", "completion": "12"}',                    # 6 fine
    '{"prmpt": "7 + 7?", "completion": "14"}',                     # 7 misspelt key
]


def test_planted_errors_are_each_listed_with_their_line(tmp_path, capsys):
    path = tmp_path / "planted.jsonl"
    path.write_text("\n".join(PLANTED) + "\n", encoding="utf-8")
    code, out = validate(capsys, str(path))
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith(f"{path}: FAILED - format prompt_completion, ")
    assert "2 examples, 5 errors" in lines[0]
    expected = {
        2: "error invalid_json",
        3: "error empty_content [prompt]",
        4: "error not_an_object",
        5: "error wrong_type [completion]",
        7: "error missing_key [prompt]",
    }
    for line, what in expected.items():
        assert any(ln.startswith(f"{path}:{line}") and what in ln for ln in lines), (line, what)
    assert not any(ln.startswith((f"{path}:1:", f"{path}:6:")) for ln in lines)

    code, out = validate(capsys, str(path), "--json")
    assert code == 1
    report = json.loads(out)
    errors = {(i["line"], i["code"], i["field"]) for i in report["issues"] if i["severity"] == "error"}
    assert errors == {(2, "invalid_json", None), (3, "empty_content", "prompt"), (4, "not_an_object", None),
                      (5, "wrong_type", "completion"), (7, "missing_key", "prompt")}
    assert all(i["file"] == str(path) for i in report["issues"])


def test_a_missing_file_exits_1(tmp_path, capsys):
    assert main(["data", "validate", str(tmp_path / "nope.jsonl")]) == 1
    assert "data file not found" in capsys.readouterr().err
