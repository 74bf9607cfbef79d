"""Near-duplicate detection within a split and leakage from evaluation splits into train.

Usage:
    pairs = find_near_duplicates(train, threshold=0.6)           # [(i, j, jaccard), ...], i < j
    leaks = find_leakage(train, {"validation": val, "test": test}, threshold=0.6)
    train, issues = apply_leakage_policy(train, leaks, "drop")  # or "warn"; "error" raises DataError

Two examples are near duplicates when either rule holds:
- `jaccard`: the Jaccard index of their character 5-gram sets is at least `threshold`. The grams are
  taken over the canonical text (NFKC, lowercase, words joined by one space, punctuation dropped), so
  the score means about the same for a tweet and for a page: 0.6 is roughly "15 % of the words differ".
- `one_word`: both have 6 to 30 words and their word sequences become equal after removing at most one
  word from each (one word changed, added, removed or moved). Short texts need this rule: one word
  changed in a 7-word tweet can leave a 5-gram Jaccard near 0.5, where distinct but formulaic texts
  (captions, hashtag chains) already score. In longer texts one word is a small share of the grams.

MinHash + LSH (datasketch, 128 permutations) proposes `jaccard` candidates quickly and a hash index of
"one word removed" keys proposes `one_word` candidates; every candidate is then verified exactly, so
every reported pair really meets a rule. An exact duplicate has Jaccard 1; texts under five characters
(emoji, "ok") are their own single gram and so match only when equal.

Measured on TweetEval at the default threshold 0.6 (2 cores): a random one-word substitution is caught
in 1,317 of the 1,318 emotion test tweets with >= 6 words (95.2 % by the Jaccard rule alone; the miss
rewrote "zayuuum...bey's", two words); emotion train vs test flags 4 of its 4.6 million pairs (one
copy, three rewrites such as "I'm so angry" / "Im so angry 😂🙃") in ~1.3 s; hate (9,000 train vs
2,970 test) takes ~3.5 s and flags 316 test tweets, 246 of them verbatim copies.
"""

from __future__ import annotations

import re
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from datasketch import MinHash, MinHashLSH

from lmtune.data.records import DataError, Example, Issue
from lmtune.data.split import normalise_text

NUM_PERM = 128
NGRAM = 5
# Texts outside this word range are left to the Jaccard rule: in shorter ones one word is much of the
# meaning ("i am so tired now" / "i am so happy now"), and in longer ones it moves the Jaccard little.
ONE_WORD_RANGE = (6, 30)
# LSH bands are chosen so that a pair right at the threshold becomes a candidate with this probability
# (datasketch's own choice for a threshold has only ~50 % there); the exact Jaccard then decides.
_LSH_RECALL = 0.995
_WORD = re.compile(r"\w+")
_APOSTROPHES = re.compile(r"['\u2019]")

Policy = Literal["error", "warn", "drop"]
Rule = Literal["jaccard", "one_word"]


@dataclass(frozen=True)
class Leak:
    """An evaluation example that (nearly) duplicates a training example."""

    split: str
    eval_file: str
    eval_line: int
    eval_index: int
    train_file: str
    train_line: int
    train_index: int
    similarity: float
    """Exact Jaccard of the character 5-gram sets (1.0 for equal texts)."""
    estimate: float
    """The MinHash estimate of that Jaccard."""
    rule: Rule = "jaccard"
    """Which rule matched: `jaccard` (similarity >= threshold) or `one_word` (below it, one word apart)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form for the manifest."""
        return asdict(self)

    def describe(self) -> str:
        """One line naming both examples."""
        how = f"Jaccard {self.similarity:.2f}" + (", one word apart" if self.rule == "one_word" else "")
        return (
            f"{self.split} example {self.eval_file}:{self.eval_line} near-duplicates train example "
            f"{self.train_file}:{self.train_line} ({how})"
        )


def _hash32(gram: str) -> int:
    # crc32 rather than datasketch's default sha1, which took most of the time; MinHash's random
    # permutations are applied on top, and distinct 5-grams rarely share a 32-bit checksum.
    return zlib.crc32(gram.encode("utf-8"))


def canonical(text: str) -> str:
    """Normalised words joined by one space; the normalised text itself when it has no words (emoji)."""
    norm = normalise_text(text)
    # Apostrophes go first so that "should've" is one word and "I'm" equals "Im".
    return " ".join(_WORD.findall(_APOSTROPHES.sub("", norm))) or norm


def shingles(canon: str) -> frozenset[str]:
    """Character 5-grams of a canonical text; one shorter than five characters is its own single gram."""
    if len(canon) <= NGRAM:
        return frozenset([canon]) if canon else frozenset()
    return frozenset(canon[k : k + NGRAM] for k in range(len(canon) - NGRAM + 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """Exact Jaccard index of two sets (0 when both are empty)."""
    shared = len(a & b)
    union = len(a) + len(b) - shared
    return shared / union if union else 0.0


def lsh_bands(threshold: float) -> tuple[int, int]:
    """(bands, rows): the longest bands (fewest chance candidates) still finding pairs at `threshold`."""
    for rows in range(NUM_PERM // 2, 0, -1):  # datasketch wants at least two bands
        bands = NUM_PERM // rows
        if 1 - (1 - threshold**rows) ** bands >= _LSH_RECALL:
            return bands, rows
    return NUM_PERM, 1


def _removal_keys(words: tuple[str, ...]) -> set[tuple[str, ...]]:
    """The word sequence itself and every sequence with one word removed."""
    return {words} | {words[:k] + words[k + 1 :] for k in range(len(words))}


def one_word_apart(a: Sequence[str], b: Sequence[str]) -> bool:
    """True when both have 6-30 words and removing at most one word from each makes them equal."""
    lo, hi = ONE_WORD_RANGE
    if not (lo <= len(a) <= hi and lo <= len(b) <= hi) or abs(len(a) - len(b)) > 1:
        return False
    return not _removal_keys(tuple(a)).isdisjoint(_removal_keys(tuple(b)))


@dataclass
class _Signatures:
    """Word sequences, 5-gram sets and MinHashes of a list of examples."""

    words: list[tuple[str, ...]]
    shingles: list[frozenset[str]]
    minhashes: list[MinHash]

    @classmethod
    def of(cls, examples: Iterable[Example]) -> _Signatures:
        """Signatures of every example, in order."""
        canons = [canonical(ex.dedup_text()) for ex in examples]
        grams = [shingles(c) for c in canons]
        # bulk() shares one set of permutations across all hashes, which is most of the cost.
        hashes = MinHash.bulk(grams, num_perm=NUM_PERM, hashfunc=_hash32)
        return cls([tuple(c.split(" ")) for c in canons], grams, hashes)


class _Index:
    """Finds, for a query signature, every indexed example that is a near duplicate of it."""

    def __init__(self, sig: _Signatures, threshold: float):
        self.sig, self.threshold = sig, threshold
        self.lsh = MinHashLSH(num_perm=NUM_PERM, params=lsh_bands(threshold))
        # Keys are hash() of the removal tuples (not the tuples) to keep memory small; a collision
        # only adds a candidate, and one_word_apart checks every candidate exactly.
        self.removed: dict[int, list[int]] = defaultdict(list)
        lo, hi = ONE_WORD_RANGE
        with self.lsh.insertion_session() as session:
            for i, (words, sh, mh) in enumerate(zip(sig.words, sig.shingles, sig.minhashes)):
                if not sh:  # empty texts are a validation problem, not a duplicate
                    continue
                session.insert(i, mh, check_duplication=False)
                if lo <= len(words) <= hi:
                    for key in _removal_keys(words):
                        self.removed[hash(key)].append(i)

    def matches(
        self, words: tuple[str, ...], sh: frozenset[str], mh: MinHash
    ) -> list[tuple[int, float, float, Rule]]:
        """(index, jaccard, minhash estimate, rule) for every near duplicate, by index."""
        if not sh:
            return []
        found: dict[int, tuple[float, Rule]] = {}
        for i in self.lsh.query(mh):
            other = self.sig.shingles[i]
            # |A & B| <= the smaller size, so sizes this far apart cannot reach the threshold.
            if min(len(sh), len(other)) < self.threshold * max(len(sh), len(other)) - 1e-9:
                continue
            sim = jaccard(sh, other)
            if sim >= self.threshold:
                found[i] = (sim, "jaccard")
        lo, hi = ONE_WORD_RANGE
        if lo <= len(words) <= hi:
            keyed = {i for key in _removal_keys(words) for i in self.removed.get(hash(key), ())}
            for i in keyed - found.keys():
                if one_word_apart(words, self.sig.words[i]):
                    found[i] = (jaccard(sh, self.sig.shingles[i]), "one_word")
        return [(i, sim, mh.jaccard(self.sig.minhashes[i]), rule) for i, (sim, rule) in sorted(found.items())]


def find_near_duplicates(examples: Sequence[Example], threshold: float) -> list[tuple[int, int, float]]:
    """Pairs (i, j, jaccard) with i < j that are near duplicates (Jaccard >= threshold or one word apart)."""
    sig = _Signatures.of(examples)
    index = _Index(sig, threshold)
    pairs: list[tuple[int, int, float]] = []
    for i, (words, sh, mh) in enumerate(zip(sig.words, sig.shingles, sig.minhashes)):
        pairs.extend((i, j, sim) for j, sim, _, _ in index.matches(words, sh, mh) if j > i)
    return sorted(pairs)


def find_leakage(
    train: Sequence[Example], others: dict[str, Sequence[Example]], threshold: float
) -> list[Leak]:
    """Every (eval example, train example) near-duplicate pair, eval splits in the given order."""
    index = _Index(_Signatures.of(train), threshold)
    leaks: list[Leak] = []
    for split, examples in others.items():
        sig = _Signatures.of(examples)
        for e, ex in enumerate(examples):
            for t, sim, est, rule in index.matches(sig.words[e], sig.shingles[e], sig.minhashes[e]):
                tr = train[t]
                leaks.append(Leak(split, ex.file, ex.line, e, tr.file, tr.line, t, sim, est, rule))
    return leaks


def apply_leakage_policy(
    train: Sequence[Example], leaks: Sequence[Leak], policy: Policy
) -> tuple[list[Example], list[Issue]]:
    """`error` raises DataError naming both lines of each leak; `warn` warns; `drop` removes train rows."""
    if policy not in ("error", "warn", "drop"):
        raise ValueError(f"unknown leakage policy {policy!r} (expected error, warn or drop)")
    if not leaks:
        return list(train), []
    severity = "error" if policy == "error" else "warning"
    suffix = "; the train example was dropped" if policy == "drop" else ""
    issues = [
        Issue("leakage", leak.describe() + suffix, leak.eval_file, leak.eval_line, severity=severity)
        for leak in leaks
    ]
    if policy == "error":
        hint = "set data.leakage to drop (remove the train copies) or warn, or fix the files"
        raise DataError(issues + [Issue("leakage", hint, "<config>", field="data.leakage")])
    if policy == "warn":
        return list(train), issues
    dropped = {leak.train_index for leak in leaks}
    kept = [ex for i, ex in enumerate(train) if i not in dropped]
    files = sorted({train[i].file for i in dropped})
    issues.append(
        Issue(
            "leakage_dropped",
            f"dropped {len(dropped)} training example(s) that leak into evaluation splits",
            ", ".join(files),
            severity="warning",
        )
    )
    return kept, issues
