"""/v1/fine_tuning/alpha/graders/run and /validate with the official client: hand-checked cases per grader type."""

from __future__ import annotations

import math

import openai
import pytest

OUT = "{{ sample.output_text }}"


def check(op, ref="{{ item.answer }}", inp=OUT):
    return {"type": "string_check", "name": "check", "input": inp, "reference": ref, "operation": op}


def sim(metric, ref="{{ item.answer }}"):
    return {"type": "text_similarity", "name": "sim", "input": OUT, "reference": ref, "evaluation_metric": metric}


def python(source):
    return {"type": "python", "name": "py", "source": source}


def multi(formula, **graders):
    return {"type": "multi", "name": "multi", "calculate_output": formula, "graders": graders}


# (grader, model_sample, item, expected reward), each worked out by hand.
RUN_CASES = [
    (check("eq"), "4", {"answer": "4"}, 1.0),
    (check("eq"), "4 ", {"answer": "4"}, 0.0),                      # eq is exact: no stripping
    (check("ne"), "5", {"answer": "4"}, 1.0),
    (check("like"), "The answer is 42.", {"answer": "42"}, 1.0),
    (check("like"), "HELLO world", {"answer": "hello"}, 0.0),       # like is case-sensitive
    (check("ilike"), "HELLO world", {"answer": "hello"}, 1.0),
    (check("eq"), "", {"answer": ""}, 1.0),                          # empty output equals an empty reference
    (check("like"), "", {"answer": "x"}, 0.0),                       # empty output contains nothing
    (check("eq"), "café ☕", {"answer": "café ☕"}, 1.0),             # unicode compared as text
    (check("ilike"), "L'ÉCOLE", {"answer": "école"}, 1.0),          # case folding beyond ASCII
    (check("eq", inp="{{ sample.output_json.answer }}"), '{"answer": "7"}', {"answer": "7"}, 1.0),
    (check("eq", ref="{{ item.meta.ids[1] }}"), "b", {"meta": {"ids": ["a", "b"]}}, 1.0),
    (check("eq", ref="{{ item.n }}"), "3", {"n": 3}, 1.0),           # a number is inserted as JSON text
    (sim("fuzzy_match"), "same words", {"answer": "same words"}, 1.0),
    (sim("fuzzy_match"), "abcd", {"answer": "abce"}, 0.75),          # 2 * 3 matching / 8 characters
    (sim("fuzzy_match"), "", {"answer": "abc"}, 0.0),
    (sim("bleu"), "the quick brown fox jumps", {"answer": "the quick brown fox jumps"}, 1.0),
    (sim("gleu"), "the quick brown fox jumps", {"answer": "the quick brown fox jumps"}, 1.0),
    (sim("rouge_1"), "the cat", {"answer": "the cat sat on the mat"}, 0.5),   # P 1, R 2/6 -> F 0.5
    (sim("rouge_l"), "the cat", {"answer": "the cat sat on the mat"}, 0.5),
    (sim("rouge_2"), "the cat", {"answer": "the cat sat on the mat"}, 1 / 3),  # P 1/1, R 1/5
    (sim("meteor"), "a b c d e f", {"answer": "a b c d e f"}, 1 - 0.5 * (1 / 6) ** 3),  # one chunk of 6
    (python("def grade(sample, item):\n    return len(item['words']) / 10\n"), "x", {"words": [1, 2, 3]}, 0.3),
    (python("def grade(sample, item):\n    return float(sample['output_json']['ok'])\n"), '{"ok": true}', {}, 1.0),
    (python("def grade(sample, item):\n    return float(sample['output_text'] == 'ünï')\n"), "ünï", {}, 1.0),
    (multi("0.5 * a + 0.5 * b", a=check("eq"), b=check("ne")), "4", {"answer": "4"}, 0.5),
    (multi("sqrt(a) * max(b, 0.25)", a=check("eq"), b=check("ne")), "4", {"answer": "4"}, 0.25),
    (multi("(a + b) / 2 ^ 2", a=check("like"), b=sim("fuzzy_match")), "4", {"answer": "4"}, 0.5),
]


@pytest.mark.parametrize("grader, sample, item, expected", RUN_CASES)
def test_run_scores_as_worked_out_by_hand(alpha, grader, sample, item, expected):
    out = alpha.fine_tuning.alpha.graders.run(grader=grader, model_sample=sample, item=item)
    assert not any(v for k, v in out.metadata.errors.model_dump().items() if isinstance(v, bool)), out
    assert math.isclose(out.reward, expected, rel_tol=1e-4, abs_tol=1e-6)
    assert out.metadata.name == grader["name"] and out.metadata.type == grader["type"]
    if grader["type"] == "multi":
        assert set(out.sub_rewards) == set(grader["graders"])


def test_cosine_uses_minilm(alpha):
    same = alpha.fine_tuning.alpha.graders.run(grader=sim("cosine"), model_sample="A dog runs.", item={"answer": "A dog runs."})
    near = alpha.fine_tuning.alpha.graders.run(grader=sim("cosine"), model_sample="A puppy is running.",
                                               item={"answer": "A dog runs."})
    far = alpha.fine_tuning.alpha.graders.run(grader=sim("cosine"), model_sample="Tax law changed in 1998.",
                                              item={"answer": "A dog runs."})
    assert same.reward == pytest.approx(1.0, abs=1e-4) and 1.0 > near.reward > far.reward >= 0.0


def test_missing_template_field_is_a_clear_400(alpha):
    with pytest.raises(openai.BadRequestError) as err:
        alpha.fine_tuning.alpha.graders.run(grader=check("eq"), model_sample="4", item={"answr": "4"})
    assert "item has no field 'answer'" in err.value.message and err.value.body["param"] == "item"
    with pytest.raises(openai.BadRequestError) as err:
        alpha.fine_tuning.alpha.graders.run(grader=check("eq", inp="{{ sample.output_json.answer }}"),
                                            model_sample="not json", item={"answer": "4"})
    assert "sample.output_json" in err.value.message


def test_python_errors_are_a_graded_failure_not_a_server_error(alpha):
    out = alpha.fine_tuning.alpha.graders.run(grader=python("def grade(sample, item):\n    return 1 / 0\n"),
                                              model_sample="x", item={})
    errors = out.metadata.errors
    assert out.reward == 0.0 and errors.python_grader_runtime_error
    assert "ZeroDivisionError" in errors.python_grader_runtime_error_details
    out = alpha.fine_tuning.alpha.graders.run(grader=python("def grade(sample, item):\n    return 'high'\n"),
                                              model_sample="x", item={})
    assert out.metadata.errors.python_grader_runtime_error and "finite number" in out.metadata.errors.python_grader_runtime_error_details


def test_judges_run_on_a_served_model(alpha):
    judge = {"type": "score_model", "name": "judge", "model": "tiny-llama", "range": [0, 10],
             "sampling_params": {"max_completions_tokens": 8, "seed": 1},
             "input": [{"role": "user", "content": "Rate {{ sample.output_text }} against {{ item.answer }}."}]}
    out = alpha.fine_tuning.alpha.graders.run(grader=judge, model_sample="4", item={"answer": "4"})
    assert out.metadata.sampled_model_name == "tiny-llama"
    # A random tiny model rarely writes a score: either one in range, or a parse error with reward 0.
    assert (0 <= out.reward <= 10 and not out.metadata.errors.model_grader_parse_error) or \
        (out.reward == 0 and out.metadata.errors.model_grader_parse_error)
    label = {"type": "label_model", "name": "label", "model": "tiny-llama", "labels": ["yes", "no"],
             "passing_labels": ["yes"], "input": [{"role": "user", "content": "Is {{ sample.output_text }} right?"}]}
    out = alpha.fine_tuning.alpha.graders.run(grader=label, model_sample="4", item={})
    assert out.reward in (0.0, 1.0) and out.metadata.type == "label_model"


INVALID = [
    (check("eq") | {"operation": "regex"}, "operation"),
    (multi("a + b", a=check("eq")), "'b' is not a sub-grader"),
    (multi("__import__('os').system('true')", a=check("eq")), "not allowed"),
    (multi("a.real", a=check("eq")), "not allowed"),
    (python("def grade(sample, item):\n    return 1 +\n"), "does not parse"),
    (python("def score(sample, item):\n    return 1\n"), "grade(sample, item)"),
    ({"type": "label_model", "name": "l", "model": "tiny-llama", "labels": ["a"], "passing_labels": ["b"],
      "input": [{"role": "user", "content": "x"}]}, "passing_labels"),
    ({"type": "score_model", "name": "s", "model": "gpt-5", "input": [{"role": "user", "content": "x"}]}, "gpt-5"),
    ({"type": "score_model", "name": "s", "model": "tiny-llama", "range": [1, 0],
      "input": [{"role": "user", "content": "x"}]}, "range"),
]


@pytest.mark.parametrize("grader, says", INVALID)
def test_validate_and_run_refuse_bad_graders_with_a_400(alpha, grader, says):
    for call in (lambda: alpha.fine_tuning.alpha.graders.validate(grader=grader),
                 lambda: alpha.fine_tuning.alpha.graders.run(grader=grader, model_sample="x", item={})):
        with pytest.raises(openai.BadRequestError) as err:
            call()
        assert says in err.value.message


def test_validate_returns_the_grader(alpha):
    grader = multi("0.8 * a + 0.2 * b", a=python("def grade(sample, item):\n    return 1.0\n"), b=sim("rouge_l"))
    out = alpha.fine_tuning.alpha.graders.validate(grader=grader)
    assert out.grader.type == "multi" and out.grader.calculate_output == "0.8 * a + 0.2 * b"
