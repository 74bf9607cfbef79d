"""Near duplicates and train/eval leakage (lmtune.data.leakage)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lmtune.config import DataConfig
from lmtune.data.leakage import (
    NUM_PERM,
    apply_leakage_policy,
    canonical,
    find_leakage,
    find_near_duplicates,
    jaccard,
    lsh_bands,
    one_word_apart,
    shingles,
)
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


def test_canonical_text_and_its_character_5_grams():
    assert canonical("  I'm SO   angry!!! #mad ") == "im so angry mad"
    assert canonical("Don\u2019t") == "dont" and canonical("😂 😂") == "😂 😂"
    assert shingles("hello there") == frozenset(["hello", "ello ", "llo t", "lo th", "o the", " ther", "there"])
    assert shingles("ok") == frozenset(["ok"]) and shingles("") == frozenset()


def test_lsh_bands_find_pairs_at_the_threshold():
    for threshold in (0.3, 0.5, 0.6, 0.85, 1.0):
        bands, rows = lsh_bands(threshold)
        assert bands >= 2 and bands * rows <= NUM_PERM
        assert 1 - (1 - threshold**rows) ** bands >= 0.995
    # Longer bands for higher thresholds: fewer pairs become candidates by chance.
    assert lsh_bands(0.85)[1] > lsh_bands(0.6)[1]


def test_one_word_apart():
    base = "the cat sat on the mat today".split()
    assert one_word_apart(base, "the dog sat on the mat today".split())  # changed
    assert one_word_apart(base, "the cat sat on the red mat today".split())  # added
    assert one_word_apart(base, "the cat sat on mat today".split())  # removed
    assert one_word_apart(base, "cat sat on the the mat today".split())  # moved
    assert not one_word_apart(base, "the dog sat on the rug today".split())  # two changes
    assert not one_word_apart("i am so happy now".split(), "i am so sad now".split())  # 5 words: too short
    long = [f"w{k}" for k in range(31)]
    assert not one_word_apart(long, long[:15] + ["x"] + long[16:])  # left to the Jaccard rule


def test_one_word_changed_in_a_short_text_leaks_by_the_one_word_rule():
    # Changing one word of a 7-word tweet leaves a 5-gram Jaccard of only 0.51.
    text = "My cat knocked my coffee over again"
    changed = text.replace("coffee", "laptop")
    train = [ex("Cooking pasta with garlic tonight, wish me luck", "tr", 1), ex(changed, "tr", 2)]
    leaks = find_leakage(train, {"test": [ex(text, "te", 7)]}, threshold=0.6)
    assert [(lk.eval_line, lk.train_line, lk.rule) for lk in leaks] == [(7, 2, "one_word")]
    assert leaks[0].similarity < 0.6 and "one word apart" in leaks[0].describe()
    assert find_near_duplicates(train + [ex(text, "te", 7)], threshold=0.6) == [(1, 2, leaks[0].similarity)]


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
    val = [ex("hello there!", "va", 5), ex(LONG.upper(), "va", 6), ex("okay", "va", 7), ex("😂😂", "va", 8),
           ex("😂", "va", 9)]
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


REPLACEMENTS = ["zebra", "unbelievably", "ok", "#blessed", "tomorrow"]


def change_one_word(text: str, n: int) -> str:
    """Replace one whitespace-separated word, at a position and with a word that vary with n."""
    words = text.split()
    k = (n * 5) % len(words)
    new = REPLACEMENTS[n % len(REPLACEMENTS)]
    words[k] = new if words[k].lower() != new else "giraffe"
    return " ".join(words)


@pytest.mark.skipif(not TWEETEVAL.exists(), reason="shared TweetEval data not present")
def test_real_tweets_with_one_word_changed_are_reported_with_file_and_line():
    threshold = DataConfig().near_duplicate_threshold
    train, test = read_tweets("emotion", "train"), read_tweets("emotion", "test")
    # 20 test tweets of 6+ words spread over the file, each planted in train with one word changed.
    eligible = [e for e in test if len(canonical(e.text).split()) >= 6]
    chosen = eligible[:: len(eligible) // 20][:20]
    planted = [ex(change_one_word(e.text, n), "planted.txt", n + 1) for n, e in enumerate(chosen)]
    start = time.perf_counter()
    leaks = find_leakage(train + planted, {"test": test}, threshold)
    elapsed = time.perf_counter() - start
    found = {(lk.train_line, lk.eval_file, lk.eval_line) for lk in leaks if lk.train_file == "planted.txt"}
    assert found == {(n + 1, "emotion/test_text.txt", e.line) for n, e in enumerate(chosen)}
    # The real train/test overlap: one exact copy and three rewrites ("Im so angry 😂🙃" for
    # "I'm so angry", "I genuinely think I have anger issues", "Depression sucks!"), checked by eye;
    # no distinct tweet pair among the 4.6 million is reported.
    real = sorted((lk.eval_line, lk.train_line) for lk in leaks if lk.train_file != "planted.txt")
    print(f"\nTweetEval emotion: {len(train)}+20 train vs {len(test)} test: {len(real)} real leaks, {elapsed:.2f}s")
    assert len(real) == 4
    assert all(lk.similarity >= threshold or lk.rule == "one_word" for lk in leaks)
