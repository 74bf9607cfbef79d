"""Near-duplicate detection within a split and leakage from evaluation splits into train.

Usage:
    pairs = find_near_duplicates(train, threshold=0.85)          # [(i, j, jaccard), ...], i < j
    leaks = find_leakage(train, {"validation": val, "test": test}, threshold=0.85)
    train, issues = apply_leakage_policy(train, leaks, "drop")  # or "warn"; "error" raises DataError

Similarity is the Jaccard index of word 3-shingle sets. MinHash + LSH (datasketch, 128 permutations)
proposes candidate pairs quickly; each candidate is then checked with the exact Jaccard, so reported
pairs have no false positives. Texts under three words have no shingles and match only when their
normalised words are equal. An exact duplicate has Jaccard 1 and so counts as leakage too.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from datasketch import MinHash, MinHashLSH

from lmtune.data.records import DataError, Example, Issue
from lmtune.data.split import normalise_text

NUM_PERM = 128
SHINGLE = 3
# LSH recall is only about 50 % for pairs right at its threshold, so candidates are gathered at a
# lower one (0.68 for 0.85: ~99 % recall at 0.85) and the exact Jaccard then applies the real cut-off.
_LSH_SLACK = 0.8
_WORD = re.compile(r"\w+")

Policy = Literal["error", "warn", "drop"]


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
    """Exact Jaccard of the word 3-shingle sets (1.0 for equal short texts)."""
    estimate: float
    """The MinHash estimate that proposed the pair."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form for the manifest."""
        return asdict(self)

    def describe(self) -> str:
        """One line naming both examples."""
        return (
            f"{self.split} example {self.eval_file}:{self.eval_line} near-duplicates train example "
            f"{self.train_file}:{self.train_line} (Jaccard {self.similarity:.2f})"
        )


def short_key(norm: str) -> str:
    """How texts under three words are compared: their words, or the whole text when it has none (emoji)."""
    return " ".join(_WORD.findall(norm)) or norm


class _Signatures:
    """Shingle sets and MinHashes of a list of examples; texts under three words keyed by short_key."""

    def __init__(self, examples: Sequence[Example]):
        self.shingles: list[frozenset[str]] = []
        self.short: dict[str, list[int]] = defaultdict(list)
        for i, ex in enumerate(examples):
            norm = normalise_text(ex.dedup_text())
            words = _WORD.findall(norm)
            if len(words) < SHINGLE:
                if norm:  # empty texts are a validation problem, not a duplicate
                    self.short[short_key(norm)].append(i)
                self.shingles.append(frozenset())
            else:
                grams = (" ".join(words[k : k + SHINGLE]) for k in range(len(words) - SHINGLE + 1))
                self.shingles.append(frozenset(grams))
        # bulk() shares one set of permutations across all hashes, which is most of the cost.
        encoded = [[s.encode("utf-8") for s in sh] for sh in self.shingles]
        self.minhashes: list[MinHash] = MinHash.bulk(encoded, num_perm=NUM_PERM)

    def index(self, threshold: float) -> MinHashLSH:
        """An LSH index over the examples that have shingles."""
        lsh = MinHashLSH(threshold=min(max(threshold * _LSH_SLACK, 0.05), 0.9), num_perm=NUM_PERM)
        with lsh.insertion_session() as session:
            for i, (sh, mh) in enumerate(zip(self.shingles, self.minhashes)):
                if sh:
                    session.insert(i, mh, check_duplication=False)
        return lsh


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """Exact Jaccard index of two sets (0 when both are empty)."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def find_near_duplicates(examples: Sequence[Example], threshold: float) -> list[tuple[int, int, float]]:
    """Pairs (i, j, jaccard) with i < j whose word 3-shingle Jaccard is at least `threshold`."""
    sig = _Signatures(examples)
    lsh = sig.index(threshold)
    pairs: set[tuple[int, int, float]] = set()
    for i, (sh, mh) in enumerate(zip(sig.shingles, sig.minhashes)):
        if not sh:
            continue
        for j in lsh.query(mh):
            if j > i:
                sim = jaccard(sh, sig.shingles[j])
                if sim >= threshold:
                    pairs.add((i, j, sim))
    for idx in sig.short.values():
        pairs.update((a, b, 1.0) for k, a in enumerate(idx) for b in idx[k + 1 :])
    return sorted(pairs)


def find_leakage(
    train: Sequence[Example], others: dict[str, Sequence[Example]], threshold: float
) -> list[Leak]:
    """Every (eval example, train example) pair at or above `threshold`, eval splits in given order."""
    sig = _Signatures(train)
    lsh = sig.index(threshold)
    leaks: list[Leak] = []
    for split, examples in others.items():
        other = _Signatures(examples)
        for e, ex in enumerate(examples):
            sh, mh = other.shingles[e], other.minhashes[e]
            found: list[tuple[int, float, float]] = []
            if sh:
                for t in lsh.query(mh):
                    sim = jaccard(sh, sig.shingles[t])
                    if sim >= threshold:
                        found.append((t, sim, mh.jaccard(sig.minhashes[t])))
            else:
                key = short_key(normalise_text(ex.dedup_text()))
                found.extend((t, 1.0, 1.0) for t in sig.short.get(key, []))
            for t, sim, est in sorted(found):
                tr = train[t]
                leaks.append(Leak(split, ex.file, ex.line, e, tr.file, tr.line, t, sim, est))
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
