"""Reward functions on hand-written and real GSM8K completions, and loading rewards from a spec."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lmtune.graders.rewards import (
    answer_format,
    call_reward,
    final_answer,
    gsm8k_closeness,
    gsm8k_numeric,
    load_reward_function,
)

GSM8K = Path("/work/shared/data/gsm8k/test.jsonl")
REF_18 = "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18"


def gsm8k_answers(n: int = 40) -> list[str]:
    with open(GSM8K, encoding="utf-8") as f:
        return [json.loads(line)["answer"] for line, _ in zip(f, range(n))]


def score(completions: list[str], references: list[str | None]) -> list[float]:
    return gsm8k_numeric([""] * len(completions), completions, references)


@pytest.mark.parametrize("completion, want", [
    ("She makes 9 * 2 = 18 dollars.\n#### 18", 1.0),
    ("9 * 2 = 18.\nThe answer is 18.", 1.0),
    ("The answer is 18, since she sells 9 eggs at $2 each.", 1.0),  # the marked number, not the last one
    ("So the total is $\\boxed{18}$ for 2 days of work? No, per day.", 1.0),
    ("#### 18.0", 1.0),
    ("She earns 9 * 2 = $18", 1.0),  # no marker: the last number
    ("#### 18\n\nQuestion: Tom has 5 apples.", 1.0),
    ("#### 17", 0.0),
    ("She sells 9 eggs, so 9 * 2 = 18 and then 2 more", 0.0),
    ("I do not know.", 0.0),
    ("", 0.0),
])
def test_gsm8k_numeric_hand_written(completion, want):
    assert score([completion], [REF_18]) == [want]


def test_gsm8k_numeric_commas_and_missing_reference():
    assert score(["\\boxed{1,234}", "#### 1,234", "#### 1234", "#### 1234"], ["#### 1234"] * 3 + [None]) == [
        1.0, 1.0, 1.0, 0.0,
    ]
    assert final_answer("The answer is -5.") == "-5"


def test_gsm8k_numeric_on_real_answers():
    refs = gsm8k_answers()
    finals = [ref.rpartition("####")[2].strip() for ref in refs]
    assert score(refs, refs) == [1.0] * len(refs)  # the worked solution itself
    rephrased = [f"Working...\nThe answer is {int(x):,}." for x in finals]  # with thousands commas
    assert score(rephrased, refs) == [1.0] * len(refs)
    boxed = [f"\\boxed{{{x}.0}}" for x in finals]
    assert score(boxed, refs) == [1.0] * len(refs)
    wrong = [f"#### {int(x) + 1}" for x in finals]
    assert score(wrong, refs) == [0.0] * len(refs)


def test_gsm8k_numeric_requires_one_reference_per_completion():
    with pytest.raises(ValueError):
        gsm8k_numeric(["p", "q"], ["#### 1", "#### 2"], ["#### 1"])


@pytest.mark.parametrize("completion, reference, want", [
    ("#### 18", REF_18, 1.0),
    ("The answer is 18.0", REF_18, 1.0),
    ("#### 9", REF_18, 0.5 * math.exp(-9 / 18)),
    ("#### 27", REF_18, 0.5 * math.exp(-9 / 18)),  # as far above as below
    ("#### 1,018", REF_18, 0.5 * math.exp(-1000 / 18)),
    ("#### 0.5", "#### 0", 0.5 * math.exp(-0.5)),  # a reference of 0 scales by 1
    ("#### -2", "#### 3", 0.5 * math.exp(-5 / 3)),
    ("no number", REF_18, 0.0),
    ("#### 18", None, 0.0),
])
def test_gsm8k_closeness_gives_partial_credit_by_relative_error(completion, reference, want):
    assert gsm8k_closeness([""], [completion], [reference]) == [pytest.approx(want, rel=1e-12)]


def test_gsm8k_closeness_agrees_with_the_numeric_reward_on_real_answers():
    refs = gsm8k_answers()
    finals = [ref.rpartition("####")[2].strip() for ref in refs]
    assert gsm8k_closeness([""] * len(refs), refs, refs) == [1.0] * len(refs)
    near = gsm8k_closeness([""] * len(refs), [f"#### {int(x) + 1}" for x in finals], refs)
    assert all(0 < r < 0.5 for r in near)  # every miss scores below any exact answer


@pytest.mark.parametrize("completion, want", [
    ("9 * 2 = 18\n#### 18", 1.0),
    ("#### 1,234.5  \n\n", 1.0),
    ("#### -3", 1.0),
    ("#### 18\nmore text", 0.5),
    ("#### 18 dollars", 0.5),
    ("The answer is 18", 0.5),
    ("no idea", 0.0),
    ("####", 0.0),
    ("", 0.0),
])
def test_answer_format(completion, want):
    assert answer_format([""], [completion], [None]) == [want]


def test_answer_format_on_real_answers():
    refs = gsm8k_answers()
    assert answer_format([""] * len(refs), refs, refs) == [1.0] * len(refs)


REWARD_FILE = """
from dataclasses import dataclass

@dataclass
class Weights:
    hit: float = 2.0

def score(prompts, completions, references):
    return [Weights().hit * len(c) for c in completions]

NOT_A_FUNCTION = 3
"""


def test_load_reward_function_from_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "my_rewards.py").write_text(REWARD_FILE)
    fn = load_reward_function("sub/my_rewards.py:score", base_dir=tmp_path)
    assert fn(["p"], ["abc"], [None]) == [6.0]
    absolute = load_reward_function(f"{tmp_path / 'sub' / 'my_rewards.py'}:score")
    assert absolute(["p"], ["ab"], [None]) == [4.0]


def test_reward_files_with_the_same_name_do_not_collide(tmp_path):
    for name, value in [("a", 1.0), ("b", 2.0)]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "rewards.py").write_text(f"def score(p, c, r):\n    return [{value}] * len(c)\n")
    first = load_reward_function("a/rewards.py:score", base_dir=tmp_path)
    second = load_reward_function("b/rewards.py:score", base_dir=tmp_path)
    assert first([""], ["x"], [None]) == [1.0] and second([""], ["x"], [None]) == [2.0]


def test_load_reward_function_from_module():
    assert load_reward_function("lmtune.graders.rewards:gsm8k_numeric") is gsm8k_numeric


@pytest.mark.parametrize("spec, error, fragment", [
    ("missing.py:score", FileNotFoundError, "does not exist"),
    ("my_rewards.py:nothing", AttributeError, "no attribute 'nothing'"),
    ("my_rewards.py:NOT_A_FUNCTION", TypeError, "not a function"),
    ("my_rewards.py", ValueError, "module:function"),
    ("lmtune.no_such_module:score", ImportError, "cannot import"),
    ("lmtune.graders.rewards:no_such_reward", AttributeError, "no attribute"),
])
def test_load_reward_function_errors_name_the_spec(tmp_path, spec, error, fragment):
    (tmp_path / "my_rewards.py").write_text(REWARD_FILE)
    with pytest.raises(error) as info:
        load_reward_function(spec, base_dir=tmp_path)
    assert spec in str(info.value) and fragment in str(info.value)


def test_call_reward_checks_the_scores():
    assert call_reward(lambda p, c, r: [1, 0.5], "s", ["", ""], ["a", "b"], [None, None]) == [1.0, 0.5]
    with pytest.raises(ValueError, match="returned 1 scores for 2 completions"):
        call_reward(lambda p, c, r: [1.0], "s", ["", ""], ["a", "b"], [None, None])
    with pytest.raises(ValueError, match="non-finite score for completion 1"):
        call_reward(lambda p, c, r: [1.0, float("nan")], "s", ["", ""], ["a", "b"], [None, None])
    with pytest.raises(TypeError, match="list of numbers"):
        call_reward(lambda p, c, r: None, "s", ["", ""], ["a", "b"], [None, None])


@pytest.mark.parametrize("completion, want", [
    ("3 + 4 = 7\n#### 7", 2.0),        # right and in format
    ("3 + 4 = 8\n#### 8", 1.0),        # in format only
    ("The answer is 7.", 1.5),          # right, a number but not the final line
    ("I am not sure.", 0.0),
])
def test_the_shipped_config_reward_file_adds_numeric_and_format(completion, want):
    root = Path(__file__).resolve().parents[2]
    fn = load_reward_function("configs/preference/gsm8k_rewards.py:numeric_and_format", base_dir=root)
    assert fn([""], [completion], ["3 + 4 = <<3+4=7>>7\n#### 7"]) == [want]
