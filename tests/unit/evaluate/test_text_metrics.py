"""Generation metrics against real data (GSM8K answers, Multi30k) and the sacrebleu command line."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lmtune.graders.text_metrics import (
    bleu,
    bleu_ci,
    chrf,
    exact_match,
    generation_metrics,
    gsm8k_answer,
    normalize_answer,
    numeric_match,
    per_example_scores,
    rouge,
)

DATA = Path("/work/shared/data")


def _gsm8k_answers(n: int = 50) -> list[str]:
    with open(DATA / "gsm8k" / "test.jsonl", encoding="utf-8") as f:
        return [json.loads(next(f))["answer"] for _ in range(n)]


def _multi30k_refs(n: int = 100) -> list[str]:
    with gzip.open(DATA / "multi30k" / "val.de.gz", "rt", encoding="utf-8") as f:
        return [next(f).rstrip("\n") for _ in range(n)]


def _drop_every_fourth_word(line: str) -> str:
    return " ".join(w for i, w in enumerate(line.split()) if i % 4 != 3)


# --- GSM8K numeric answers -------------------------------------------------------------------

def test_gsm8k_answer_reads_number_after_hashes_on_real_answers():
    answers = _gsm8k_answers()
    for answer in answers:
        after = answer.rsplit("####", 1)[1].strip().replace(",", "")
        assert gsm8k_answer(answer) == str(int(after)), answer
    assert gsm8k_answer(answers[0]) == "18"  # Janet's ducks
    assert numeric_match(answers, answers) == 1.0


def test_gsm8k_answer_prefers_hashes_over_later_or_earlier_numbers():
    # The chain of thought has many numbers; only the one after "####" counts.
    assert gsm8k_answer("16 - 3 - 4 = 9 eggs, 9 * 2 = 18\n#### 20") == "20"
    assert gsm8k_answer("#### 5\nthen #### 7 and 9 more") == "7"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("#### 1,000", "1000"),
        ("#### $1,234,567.", "1234567"),
        ("The answer is $18.", "18"),
        ("#### 18.0", "18"),
        ("#### 18.50", "18.5"),
        ("#### -5", "-5"),
        ("The temperature fell to -12 degrees.", "-12"),
        ("It is 10-4 = 6", "6"),
        ("16-3-4", "4"),  # a hyphen between digits is subtraction, not a sign
        ("#### 0.0", "0"),
        ("#### 100", "100"),
        ("First 3 apples, then 7 pears, so 10 fruits in total.", "10"),
        ("no number here", None),
        ("", None),
        ("#### nothing", None),
    ],
)
def test_gsm8k_answer_edge_cases(text, expected):
    assert gsm8k_answer(text) == expected


def test_numeric_match_normalises_and_counts():
    refs = ["... #### 18", "#### 1,000", "#### -3", "#### 7"]
    hyps = ["So she makes $18.00 per day.", "The total is 1000.", "#### -3", "I think 8"]
    assert numeric_match(hyps, refs) == 0.75
    assert per_example_scores(hyps, refs, "numeric_match") == [1.0, 1.0, 1.0, 0.0]
    # A reference with no number cannot be matched, even by a hypothesis with no number.
    assert numeric_match(["none"], ["none"]) == 0.0


# --- BLEU / chrF against the sacrebleu command line ------------------------------------------

def test_bleu_and_chrf_equal_sacrebleu_cli_on_multi30k(tmp_path):
    refs = _multi30k_refs()
    hyps = [_drop_every_fourth_word(r) for r in refs]
    ref_file, hyp_file = tmp_path / "refs.de", tmp_path / "hyps.de"
    ref_file.write_text("\n".join(refs) + "\n", encoding="utf-8")
    hyp_file.write_text("\n".join(hyps) + "\n", encoding="utf-8")
    cli = subprocess.run(
        [sys.executable, "-m", "sacrebleu", str(ref_file), "-i", str(hyp_file), "-m", "bleu", "chrf", "-b", "-w", "4"],
        capture_output=True, text=True, check=True,
    )
    cli_bleu, cli_chrf = json.loads(cli.stdout)  # with two metrics, -b prints a JSON list of scores
    ours_bleu, ours_chrf = bleu(hyps, refs), chrf(hyps, refs)
    assert 20 < ours_bleu < 95  # the hypotheses are damaged but close: a score away from both ends
    assert ours_bleu == pytest.approx(cli_bleu, abs=0.01)
    assert ours_chrf == pytest.approx(cli_chrf, abs=0.01)


def test_bleu_perfect_and_disjoint():
    refs = _multi30k_refs(20)
    assert bleu(refs, refs) == pytest.approx(100.0)
    assert chrf(refs, refs) == pytest.approx(100.0)
    assert bleu(["xyz qqq"] * 20, refs) == 0.0


def test_bleu_ci_is_seeded_and_contains_the_point_estimate():
    refs = _multi30k_refs()
    hyps = [_drop_every_fourth_word(r) if i % 3 else r for i, r in enumerate(refs)]
    point = bleu(hyps, refs)
    low, high = bleu_ci(hyps, refs, n_boot=100, seed=0)
    assert low < point < high
    assert bleu_ci(hyps, refs, n_boot=100, seed=0) == (low, high)
    assert bleu_ci(hyps, refs, n_boot=100, seed=1) != (low, high)


# --- ROUGE and exact match -------------------------------------------------------------------

def test_rouge_identical_disjoint_and_hand_computed():
    assert rouge(["the cat sat on the mat"], ["the cat sat on the mat"]) == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}
    assert rouge(["dogs bark loudly"], ["a cat sat"]) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    # 2 shared unigrams (the, cat): P = 2/3, R = 2/4, F = 2PR/(P+R) = 4/7; 1 shared bigram: P = 1/2, R = 1/3, F = 2/5.
    r = rouge(["the cat sat"], ["the cat ran away"])
    assert r["rouge1"] == pytest.approx(4 / 7)
    assert r["rouge2"] == pytest.approx(2 / 5)
    assert r["rougeL"] == pytest.approx(4 / 7)


def test_rouge_averages_over_examples_and_stems():
    r = rouge(["the cat sat", "dogs bark"], ["the cat ran away", "dogs bark"])
    assert r["rouge1"] == pytest.approx((4 / 7 + 1.0) / 2)
    assert per_example_scores(["the cat sat", "dogs bark"], ["the cat ran away", "dogs bark"], "rougeL") == pytest.approx([4 / 7, 1.0])
    assert rouge(["running dogs"], ["run dog"])["rouge1"] == 1.0  # Porter stemmer


def test_exact_match_normalisation():
    assert normalize_answer("  The  Eiffel   Tower! ") == "eiffel tower"
    assert normalize_answer("ＡＢＣ") == "abc"  # NFKC folds full-width letters
    assert normalize_answer("3.5") == "3.5"  # inner punctuation stays
    hyps = ["The Eiffel Tower.", "an apple", "Paris", "3.5"]
    refs = ["eiffel tower", "Apple!", "London", "35"]
    assert exact_match(hyps, refs) == 0.5
    assert per_example_scores(hyps, refs, "exact_match") == [1.0, 1.0, 0.0, 0.0]


def test_generation_metrics_bundle():
    refs = _gsm8k_answers(5)
    m = generation_metrics(refs, refs, numeric=True)
    assert set(m) == {"bleu", "chrf", "rouge1", "rouge2", "rougeL", "exact_match", "numeric_match", "n"}
    assert m["n"] == 5 and m["exact_match"] == 1.0 and m["numeric_match"] == 1.0
    assert m["bleu"] == pytest.approx(100.0) and m["rougeL"] == pytest.approx(1.0)
    assert "numeric_match" not in generation_metrics(refs, refs)


def test_mismatched_or_empty_inputs_are_errors():
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        bleu(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no examples"):
        rouge([], [])
    with pytest.raises(ValueError, match="metric must be"):
        per_example_scores(["a"], ["a"], "bleu")
