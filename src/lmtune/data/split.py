"""Exact deduplication, deterministic train/validation/test splits and seeded subsamples.

Usage:
    kept, issues = dedup(examples)                       # warnings name both lines
    splits = split_examples(kept, validation=0.1, test=0.1, seed=42, stratify=True)
    small = sample(splits["train"], 1000, seed=42)      # stratified when labelled

Everything here is a pure function of its inputs and the seed: randomness comes from
`random.Random(seed)` (and sha256 for per-class seeds), never from Python's salted `hash()`, so the
same data and seed give the same split on every machine and run. Each split keeps the input order.
"""

from __future__ import annotations

import hashlib
import random
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence

from lmtune.data.records import Example, Issue

SPLITS = ("train", "validation", "test")


def normalise_text(s: str) -> str:
    """Unicode NFKC, lowercase, whitespace runs collapsed to one space, stripped."""
    return " ".join(unicodedata.normalize("NFKC", s).lower().split())


def example_hash(example: Example) -> str:
    """sha256 of the normalised dedup text; the label is left out on purpose (see `dedup`)."""
    return hashlib.sha256(normalise_text(example.dedup_text()).encode("utf-8")).hexdigest()


def _where(example: Example) -> str:
    return f"{example.file}:{example.line}"


def dedup(examples: Sequence[Example]) -> tuple[list[Example], list[Issue]]:
    """Drop exact (normalised) duplicates, keeping the first; one warning per dropped example."""
    first: dict[str, Example] = {}
    kept: list[Example] = []
    issues: list[Issue] = []
    for ex in examples:
        key = example_hash(ex)
        original = first.get(key)
        if original is None:
            first[key] = ex
            kept.append(ex)
            continue
        issues.append(
            Issue("duplicate", f"duplicate of {_where(original)}; dropped", ex.file, ex.line, severity="warning")
        )
        # The same text with two labels teaches the model nothing but noise; the user should decide.
        if ex.kind == "labelled" and ex.label != original.label:
            issues.append(
                Issue(
                    "conflicting_labels",
                    f"same text as {_where(original)} but label {ex.label!r} instead of {original.label!r}",
                    ex.file,
                    ex.line,
                    field="label",
                    severity="warning",
                )
            )
    return kept, issues


def _quota(sizes: dict[str, int], total: int, cap: dict[str, int]) -> dict[str, int]:
    """Share `total` among groups in proportion to their sizes (largest remainder), each <= its cap."""
    n = sum(sizes.values())
    exact = {k: total * s / n if n else 0.0 for k, s in sizes.items()}
    quota = {k: min(int(exact[k]), cap[k]) for k in sizes}
    # Ties broken by group name so the result never depends on dict or hash order.
    order = sorted(sizes, key=lambda k: (-(exact[k] - int(exact[k])), k))
    left = total - sum(quota.values())
    while left > 0:
        grew = False
        for k in order:
            if left and quota[k] < cap[k]:
                quota[k] += 1
                left -= 1
                grew = True
        if not grew:
            break
    return quota


def _count(n: int, fraction: float) -> int:
    """Examples held out for `fraction` of n: rounded half up, at least one when fraction > 0."""
    if fraction <= 0 or n < 2:
        return 0
    return max(1, int(n * fraction + 0.5))


def _seeded(seed: int, group: str) -> random.Random:
    # A per-class stream, so adding examples of one class does not reshuffle every other class.
    digest = hashlib.sha256(f"{seed}\0{group}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _is_labelled(examples: Sequence[Example]) -> bool:
    return bool(examples) and all(ex.kind == "labelled" for ex in examples)


def _groups(examples: Sequence[Example], stratify: bool) -> dict[str, list[int]]:
    """Indices per label (one group of everything when not stratifying)."""
    groups: dict[str, list[int]] = defaultdict(list)
    by_label = stratify and _is_labelled(examples)
    for i, ex in enumerate(examples):
        groups[str(ex.label) if by_label else ""].append(i)
    return dict(groups)


def split_examples(
    examples: Sequence[Example],
    validation: float,
    test: float,
    seed: int,
    stratify: bool = True,
    keep_together: Iterable[tuple[int, int]] = (),
) -> dict[str, list[Example]]:
    """Deterministic train/validation/test split, stratified by label for labelled examples.

    Every class keeps at least one example in train. `keep_together` lists index pairs (near
    duplicates) that must not straddle train and an eval split: the eval member moves to train.
    """
    if validation < 0 or test < 0 or validation + test >= 1:
        raise ValueError(f"split fractions must be >= 0 and sum below 1 (got {validation}, {test})")
    n = len(examples)
    groups = _groups(examples, stratify)
    sizes = {k: len(v) for k, v in groups.items()}
    n_val, n_test = _count(n, validation), _count(n, test)
    # Cap so that one example of every group stays in train.
    val_q = _quota(sizes, n_val, {k: max(0, s - 1) for k, s in sizes.items()})
    test_q = _quota(sizes, n_test, {k: max(0, s - 1 - val_q[k]) for k, s in sizes.items()})
    where = ["train"] * n
    for key, idx in groups.items():
        shuffled = list(idx)
        _seeded(seed, key).shuffle(shuffled)
        for i in shuffled[: val_q[key]]:
            where[i] = "validation"
        for i in shuffled[val_q[key] : val_q[key] + test_q[key]]:
            where[i] = "test"
    # Union-find over the pairs so that chains of near duplicates move as one block.
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in keep_together:
        parent[root(a)] = root(b)
    block_splits: dict[int, set[str]] = defaultdict(set)
    for i in range(n):
        block_splits[root(i)].add(where[i])
    for i in range(n):
        if len(block_splits[root(i)]) > 1:
            where[i] = "train"
    return {name: [ex for ex, w in zip(examples, where) if w == name] for name in SPLITS}


def sample(examples: Sequence[Example], n: int, seed: int) -> list[Example]:
    """A deterministic subsample of n examples in input order, stratified by label when labelled."""
    if n >= len(examples):
        return list(examples)
    groups = _groups(examples, stratify=True)
    sizes = {k: len(v) for k, v in groups.items()}
    quota = _quota(sizes, n, sizes)
    chosen: list[int] = []
    for key, idx in groups.items():
        chosen.extend(_seeded(seed, key).sample(idx, quota[key]))
    return [examples[i] for i in sorted(chosen)]
