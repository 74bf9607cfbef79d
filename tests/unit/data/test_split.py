"""Dedup, deterministic splits and seeded samples (lmtune.data.split)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmtune.data.records import Example, Message
from lmtune.data.split import dedup, example_hash, normalise_text, sample, split_examples


def labelled(n_per_class: dict[str, int]) -> list[Example]:
    out = []
    for label, n in n_per_class.items():
        for i in range(n):
            out.append(Example("labelled", text=f"{label} example number {i}", label=label, file="d.jsonl"))
    for line, ex in enumerate(out, start=1):
        ex.line = line
    return out


def texts(n: int) -> list[Example]:
    return [Example("text", text=f"document {i}", file="t.jsonl", line=i + 1) for i in range(n)]


def test_normalise_text_folds_case_width_and_whitespace():
    assert normalise_text("  Hello\t\tＷＯＲＬＤ \n again ") == "hello world again"


def test_example_hash_ignores_label_and_formatting_but_not_words():
    a = Example("labelled", text="Good  Movie", label="pos")
    b = Example("labelled", text="good movie", label="neg")
    c = Example("labelled", text="good film", label="pos")
    assert example_hash(a) == example_hash(b)
    assert example_hash(a) != example_hash(c)


def test_dedup_keeps_first_and_names_both_lines():
    exs = [
        Example("chat", messages=[Message("user", "hi"), Message("assistant", "Hello!")], file="c.jsonl", line=1),
        Example("chat", messages=[Message("user", "other"), Message("assistant", "x")], file="c.jsonl", line=2),
        Example("chat", messages=[Message("user", "HI"), Message("assistant", "hello!")], file="c.jsonl", line=3),
    ]
    kept, issues = dedup(exs)
    assert [e.line for e in kept] == [1, 2]
    assert len(issues) == 1
    issue = issues[0]
    assert (issue.code, issue.severity, issue.file, issue.line) == ("duplicate", "warning", "c.jsonl", 3)
    assert "c.jsonl:1" in issue.message


def test_dedup_flags_conflicting_labels():
    exs = [
        Example("labelled", text="great", label="pos", file="l.csv", line=2),
        Example("labelled", text="Great", label="neg", file="l.csv", line=5),
        Example("labelled", text="great ", label="pos", file="l.csv", line=7),
    ]
    kept, issues = dedup(exs)
    assert [e.line for e in kept] == [2]
    codes = [(i.code, i.line) for i in issues]
    assert codes == [("duplicate", 5), ("conflicting_labels", 5), ("duplicate", 7)]
    assert "l.csv:2" in issues[1].message and issues[1].field == "label"


def test_split_fractions_disjoint_and_complete():
    exs = texts(200)
    parts = split_examples(exs, validation=0.1, test=0.2, seed=1, stratify=True)
    assert [len(parts[k]) for k in ("train", "validation", "test")] == [140, 20, 40]
    ids = [id(e) for part in parts.values() for e in part]
    assert len(ids) == len(set(ids)) == 200
    # Each split keeps the input order.
    for part in parts.values():
        assert [e.line for e in part] == sorted(e.line for e in part)


def test_split_is_deterministic_and_seed_dependent():
    exs = texts(100)
    a = split_examples(exs, 0.1, 0.1, seed=7, stratify=False)
    b = split_examples(list(exs), 0.1, 0.1, seed=7, stratify=False)
    c = split_examples(exs, 0.1, 0.1, seed=8, stratify=False)
    lines = lambda parts: {k: [e.line for e in v] for k, v in parts.items()}  # noqa: E731
    assert lines(a) == lines(b)
    assert lines(a)["test"] != lines(c)["test"]


def test_split_independent_of_python_hash_seed():
    code = (
        "from lmtune.data.records import Example\n"
        "from lmtune.data.split import split_examples\n"
        "exs=[Example('labelled', text=f't{i}', label='abc'[i % 3], line=i) for i in range(60)]\n"
        "print([e.line for e in split_examples(exs, 0.2, 0.2, seed=3, stratify=True)['test']])\n"
    )
    outs = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        outs.add(run.stdout)
    assert len(outs) == 1


def test_stratified_split_keeps_class_proportions_and_rare_classes_in_train():
    exs = labelled({"a": 60, "b": 30, "c": 7, "d": 3, "e": 1})
    parts = split_examples(exs, validation=0.1, test=0.1, seed=0, stratify=True)
    train = Counter(e.label for e in parts["train"])
    val = Counter(e.label for e in parts["validation"])
    test = Counter(e.label for e in parts["test"])
    assert len(parts["validation"]) == len(parts["test"]) == 10
    assert set(train) == {"a", "b", "c", "d", "e"}
    assert val["a"] == 6 and test["a"] == 6 and val["b"] == 3 and test["b"] == 3


def test_unstratified_split_ignores_labels():
    exs = labelled({"a": 50, "b": 50})
    strat = split_examples(exs, 0.2, 0.0, seed=0, stratify=True)
    assert Counter(e.label for e in strat["validation"]) == {"a": 10, "b": 10}
    assert split_examples(exs, 0.2, 0.0, seed=0, stratify=False)["test"] == []


def test_keep_together_moves_eval_member_to_train():
    exs = texts(50)
    base = split_examples(exs, 0.2, 0.2, seed=0, stratify=False)
    held = base["test"][0].line - 1
    partner = base["train"][0].line - 1
    moved = split_examples(exs, 0.2, 0.2, seed=0, stratify=False, keep_together=[(held, partner)])
    assert exs[held] in moved["train"] and exs[held] not in moved["test"]
    assert len(moved["test"]) == len(base["test"]) - 1


def test_split_rejects_bad_fractions():
    with pytest.raises(ValueError):
        split_examples(texts(10), 0.6, 0.4, seed=0)


def test_sample_is_deterministic_stratified_and_ordered():
    exs = labelled({"a": 80, "b": 20})
    s1 = sample(exs, 10, seed=5)
    assert [e.line for e in s1] == [e.line for e in sample(exs, 10, seed=5)]
    assert [e.line for e in s1] != [e.line for e in sample(exs, 10, seed=6)]
    assert Counter(e.label for e in s1) == {"a": 8, "b": 2}
    assert [e.line for e in s1] == sorted(e.line for e in s1)
    assert sample(exs, 500, seed=0) == exs


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 12), min_size=1, max_size=5),
    validation=st.floats(0.0, 0.45),
    test=st.floats(0.0, 0.45),
    seed=st.integers(0, 2**32),
)
def test_split_partitions_the_input_and_keeps_every_class_in_train(sizes, validation, test, seed):
    exs = labelled({f"c{i}": n for i, n in enumerate(sizes)})
    parts = split_examples(exs, validation, test, seed=seed, stratify=True)
    lines = sorted(e.line for part in parts.values() for e in part)
    assert lines == list(range(1, len(exs) + 1))
    assert {e.label for e in parts["train"]} == {e.label for e in exs}
    assert parts == split_examples(exs, validation, test, seed=seed, stratify=True)
