"""Near duplicates and train/eval leakage (lmtune.data.leakage)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lmtune.data.leakage import apply_leakage_policy, find_leakage, find_near_duplicates, jaccard
from lmtune.data.records import DataError, Example

TWEETEVAL = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "tweeteval"

LONG = (
    "the committee met on tuesday to review the annual budget and after a long discussion about "
    "roads schools parks and the new library they agreed to postpone the final vote until the "
    "treasurer could present revised figures for the coming year to every member of the council"
)


def ex(text: str, file: str, line: int) -> Example:
    return Example("text", text=text, file=file, line=line)


def one_word_changed(text: str) -> str:
    words = text.split()
    words[len(words) // 2] = "zebra"
    return " ".join(words)


def planted() -> tuple[list[Example], list[Example]]:
    train = [
        ex("a completely different sentence about cooking pasta with garlic and oil tonight", "train.jsonl", 1),
        ex(one_word_changed(LONG), "train.jsonl", 2),
        ex("yet another unrelated note about football scores from the weekend matches", "train.jsonl", 3),
    ]
    test = [
        ex("the weather today is sunny with a light breeze from the west coast", "test.jsonl", 1),
        ex(LONG, "test.jsonl", 2),
    ]
    return train, test


def test_jaccard():
    assert jaccard(frozenset("ab"), frozenset("bc")) == pytest.approx(1 / 3)
    assert jaccard(frozenset(), frozenset()) == 0.0


def test_planted_near_duplicate_is_found_with_both_locations():
    train, test = planted()
    leaks = find_leakage(train, {"test": test}, threshold=0.85)
    assert len(leaks) == 1
    leak = leaks[0]
    assert (leak.split, leak.eval_file, leak.eval_line) == ("test", "test.jsonl", 2)
    assert (leak.train_file, leak.train_line, leak.train_index) == ("train.jsonl", 2, 1)
    assert 0.85 <= leak.similarity < 1.0
    assert abs(leak.estimate - leak.similarity) < 0.15


def test_threshold_above_similarity_finds_nothing():
    train, test = planted()
    assert find_leakage(train, {"test": test}, threshold=0.95) == []


def test_exact_duplicates_and_short_texts_leak():
    train = [ex("Hello  there", "tr", 1), ex(LONG, "tr", 2), ex("ok", "tr", 3), ex("😂😂", "tr", 4)]
    val = [ex("hello there!", "va", 5), ex(LONG.upper(), "va", 6), ex("okay", "va", 7), ex("😂😂", "va", 8), ex("😂", "va", 9)]
    leaks = find_leakage(train, {"validation": val}, threshold=1.0)
    found = sorted((lk.eval_line, lk.train_line, lk.similarity) for lk in leaks)
    assert found == [(5, 1, 1.0), (6, 2, 1.0), (8, 4, 1.0)]


def test_find_near_duplicates_within_one_list():
    texts = [LONG, "short one", one_word_changed(LONG), "Short  ONE"]
    items = [ex(t, "f", i) for i, t in enumerate(texts, start=1)]
    pairs = find_near_duplicates(items, threshold=0.8)
    assert [(i, j) for i, j, _ in pairs] == [(0, 2), (1, 3)]
    assert pairs[1][2] == 1.0


def test_policy_error_names_both_lines():
    train, test = planted()
    leaks = find_leakage(train, {"test": test}, threshold=0.85)
    with pytest.raises(DataError) as err:
        apply_leakage_policy(train, leaks, "error")
    assert "test.jsonl:2" in str(err.value) and "train.jsonl:2" in str(err.value)
    assert err.value.issues[0].code == "leakage"


def test_policy_warn_keeps_train_and_warns():
    train, test = planted()
    leaks = find_leakage(train, {"test": test}, threshold=0.85)
    kept, issues = apply_leakage_policy(train, leaks, "warn")
    assert kept == train
    assert [(i.code, i.severity, i.line) for i in issues] == [("leakage", "warning", 2)]


def test_policy_drop_removes_exactly_the_leaked_row():
    train, test = planted()
    leaks = find_leakage(train, {"test": test}, threshold=0.85)
    kept, issues = apply_leakage_policy(train, leaks, "drop")
    assert [e.line for e in kept] == [1, 3]
    assert issues[-1].code == "leakage_dropped" and "dropped 1 " in issues[-1].message


def test_no_leaks_is_a_no_op_for_every_policy():
    train, _ = planted()
    for policy in ("error", "warn", "drop"):
        assert apply_leakage_policy(train, [], policy) == (train, [])
    with pytest.raises(ValueError):
        apply_leakage_policy(train, [], "ignore")


def read_tweets(task: str, split: str) -> list[Example]:
    lines = (TWEETEVAL / task / f"{split}_text.txt").read_text(encoding="utf-8").splitlines()
    return [ex(t, f"{task}/{split}_text.txt", i) for i, t in enumerate(lines, start=1)]


@pytest.mark.skipif(not TWEETEVAL.exists(), reason="shared TweetEval data not present")
def test_real_tweeteval_emotion_train_vs_test_is_fast():
    train, test = read_tweets("emotion", "train"), read_tweets("emotion", "test")
    train.append(ex(test[100].text, "planted.txt", 1))  # a verbatim copy of test line 101
    start = time.perf_counter()
    leaks = find_leakage(train, {"test": test}, threshold=0.85)
    elapsed = time.perf_counter() - start
    print(f"\nTweetEval emotion: {len(train)} train vs {len(test)} test, {len(leaks)} leaks, {elapsed:.2f}s")
    assert any(lk.train_file == "planted.txt" and lk.eval_line == 101 for lk in leaks)
    # Every reported pair is verified: the exact Jaccard is at or above the threshold.
    assert all(lk.similarity >= 0.85 for lk in leaks)
