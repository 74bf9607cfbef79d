"""Templates, the calculate_output formula, judge answer parsing and reinforcement data checks, by hand."""

from __future__ import annotations

import json
import math

import pytest
from pydantic import ValidationError

from lmtune.graders.formula import FormulaError, parse_formula
from lmtune.graders.items import check_items, item_of, to_chat_file
from lmtune.graders.judge import JudgeParseError, label_of, score_of
from lmtune.graders.spec import parse_grader
from lmtune.graders.template import TemplateError, item_paths, render, sample_namespace


def test_templates_fill_item_and_sample_paths():
    item = {"answer": "4", "meta": {"tags": ["x", "y"]}, "n": 2.5, "obj": {"k": [1]}}
    sample = sample_namespace('{"steps": ["a"], "final": 4}')
    assert render("{{item.answer}}|{{ item.meta.tags[1] }}|{{ item.meta.tags.0 }}", item, sample) == "4|y|x"
    assert render("{{ item.n }} {{ item.obj }} {{ sample.output_json.final }}", item, sample) == '2.5 {"k": [1]} 4'
    assert render("no placeholders, {single} braces", item, sample) == "no placeholders, {single} braces"
    assert sample_namespace("plain")["output_json"] is None and sample_namespace("")["output_text"] == ""
    assert item_paths("{{ item.a.b }} {{ sample.output_text }} {{item.c[0]}}") == [("a", "b"), ("c", "0")]


@pytest.mark.parametrize("template, says", [
    ("{{ item.missing }}", "item has no field 'missing'"),
    ("{{ item.meta.tags[5] }}", "item.meta.tags is a list, no '5'"),
    ("{{ sample.output_json.final }}", "sample.output_json has no field 'final'"),
    ("{{ answer }}", "must be item.<field> or sample.<field>"),
    ("{{ other.answer }}", "must be item.<field> or sample.<field>"),
])
def test_a_missing_variable_names_the_path(template, says):
    with pytest.raises(TemplateError, match=says.replace(".", r"\.").replace("[", r"\[")):
        render(template, {"meta": {"tags": ["x"]}}, sample_namespace("not json"))


@pytest.mark.parametrize("text, scores, expected", [
    ("0.5 * a + 0.5 * b", {"a": 1, "b": 0}, 0.5),
    ("a ^ 2 / 4", {"a": 2}, 1.0),                   # ^ is power and binds tighter than /
    ("-a + abs(-b)", {"a": 1, "b": 3}, 2.0),
    ("min(a, b, 0.2) + max(a, b)", {"a": 1, "b": 0}, 1.0),
    ("sqrt(a) + log(exp(b)) + floor(1.7) + ceil(0.2)", {"a": 4, "b": 1}, 5.0),
    ("round(a * 10) / 10", {"a": 0.26}, 0.3),
])
def test_formula_evaluates_by_hand(text, scores, expected):
    assert math.isclose(parse_formula(text, set(scores))(scores), expected)


@pytest.mark.parametrize("text, says", [
    ("a +", "does not parse"), ("c", "'c' is not a sub-grader"), ("__import__('os')", "not allowed"),
    ("a.__class__", "not allowed"), ("[a]", "not allowed"), ("a if a else 1", "not allowed"),
    ("'text'", "not allowed"), ("pow(a, 2)", "not allowed"), ("a < 1", "not allowed"), ("min()", "not allowed"),
    ("-" * 5000 + "a", "nested too deeply"),
])
def test_formula_refuses_what_is_not_arithmetic(text, says):
    with pytest.raises(FormulaError, match=says):
        parse_formula(text, {"a"})


def test_formula_errors_at_evaluation_are_formula_errors():
    with pytest.raises(FormulaError, match="division by zero"):
        parse_formula("a / b", {"a", "b"})({"a": 1, "b": 0})
    with pytest.raises(FormulaError):
        parse_formula("exp(a)", {"a"})({"a": 1e6})
    with pytest.raises(FormulaError):
        parse_formula("log(a)", {"a"})({"a": 0})


def test_judge_answers_parse_to_scores_and_labels():
    assert score_of('{"result": 0.7, "steps": []}', (0, 1)) == 0.7
    assert score_of("I give it 8 out of 10", (0, 10)) == 8.0
    assert score_of("Score: .5", (0, 1)) == 0.5
    for bad in ("no number", "11", '{"result": "high"} and nothing'):
        with pytest.raises(JudgeParseError):
            score_of(bad, (0, 10))
    assert label_of("Correct.", ["correct", "incorrect"]) == "correct"
    assert label_of("the answer is INCORRECT", ["correct", "incorrect"]) == "incorrect"
    assert label_of("  Good!  ", ["Good", "Bad"]) == "Good"
    with pytest.raises(JudgeParseError, match="several"):
        label_of("good or bad", ["good", "bad"])
    with pytest.raises(JudgeParseError, match="no label"):
        label_of("maybe", ["good", "bad"])


def test_grader_specs_refuse_bad_shapes():
    with pytest.raises(ValidationError, match="operation"):
        parse_grader({"type": "string_check", "name": "s", "input": "", "reference": "", "operation": "regex"})
    with pytest.raises(ValidationError, match="Extra inputs"):
        parse_grader({"type": "python", "name": "p", "source": "x", "timeout": 5})
    with pytest.raises(ValidationError, match="KiB"):
        parse_grader({"type": "python", "name": "p", "source": "#" * (256 * 1024 + 1)})
    one = parse_grader({"type": "multi", "name": "m", "calculate_output": "inner * 2",
                        "graders": {"type": "string_check", "name": "inner", "input": "", "reference": "",
                                    "operation": "eq"}})
    assert list(one.graders) == ["inner"]  # the client's single-grader form is known by its own name


def test_reinforcement_files_are_checked_line_by_line_and_converted(tmp_path):
    lines = [
        {"messages": [{"role": "user", "content": "2+2?"}], "answer": "4"},
        {"messages": [{"role": "user", "content": "3+3?"}]},                          # no answer
        "not json",
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "answer": "1"},
        {"messages": [], "answer": "1"},
    ]
    path = tmp_path / "rft.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    grader = {"type": "string_check", "name": "s", "input": "{{ sample.output_text }}",
              "reference": "{{ item.answer }}", "operation": "eq"}
    issues = [(i.line, i.code) for i in check_items(path, grader, "rft.jsonl")]
    assert issues == [(2, "missing_item_field"), (3, "invalid_json"), (4, "prompt_ends_with_answer"),
                      (5, "missing_messages_list")]
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(lines[0]) + "\n\n" + json.dumps({**lines[0], "answer": "é"}) + "\n")
    assert check_items(good, grader) == []
    out = to_chat_file(good, tmp_path / "chat" / "train.jsonl").read_text().splitlines()
    assert out[1] == "" and len(out) == 3  # line for line
    record = json.loads(out[2])
    assert record["messages"][0] == lines[0]["messages"][0]
    assert item_of(record["messages"][-1]["content"]) == {**lines[0], "answer": "é"}
    assert item_of("#### 4") == {"reference_answer": "#### 4"} and item_of(None) == {}
