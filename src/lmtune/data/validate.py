"""`lmtune data validate`: every problem in a data file, plus the statistics that size a run.

Usage:
    report = validate_file("train.jsonl", count_tokens=lambda ex: len(encode(ex)), max_seq_len=1024)
    print(format_report(report))          # header, one line per issue, statistics
    json.dumps(report_to_json(report))    # the same for the API
    report.ok                             # True when there is no error (warnings allowed)

Errors come from reading and normalising (see formats.py); validation adds warnings for examples
longer than max_seq_len and, through split.dedup, for exact duplicates (same text after NFKC,
lowercasing and collapsing whitespace) and duplicates with conflicting labels, naming both lines.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmtune.data.formats import load_rows_and_examples
from lmtune.data.load import find_mapping, unnamed_labels_issue
from lmtune.data.records import Example, Issue
from lmtune.data.split import dedup


@dataclass
class ValidationReport:
    """The outcome of validating one file."""

    path: str
    format: str
    n_rows: int
    n_examples: int
    issues: list[Issue] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no issue is an error."""
        return not self.errors

    @property
    def errors(self) -> list[Issue]:
        """The issues that make the file unusable as it is."""
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        """The issues worth a look that do not stop training."""
        return [i for i in self.issues if i.severity == "warning"]


def validate_file(
    path: str | Path,
    fmt: str = "auto",
    columns: dict[str, str] | None = None,
    label_names: list[str] | None = None,
    count_tokens: Callable[[Example], int] | None = None,
    max_seq_len: int = 1024,
    epochs: float = 1.0,
) -> ValidationReport:
    """Load, normalise and check one file; label names default to the nearest mapping.txt (its folder or
    one of the two above), and bare integer labels without one get a warning naming the paths searched."""
    rows, examples, issues, used = load_rows_and_examples(path, fmt, columns, label_names)
    if label_names is None and find_mapping(path) is None:
        unnamed = unnamed_labels_issue(path, {ex.label for ex in examples if ex.kind == "labelled"})
        issues += [unnamed] if unnamed else []
    issues.extend(dedup(examples)[1])  # the same warnings training's dedup gives, naming both lines
    stats = example_stats(examples)
    if count_tokens is not None and examples:
        lengths = [count_tokens(ex) for ex in examples]
        stats["tokens"] = token_stats(lengths, epochs)
        issues.extend(length_warnings(examples, lengths, max_seq_len, stats["tokens"]))
    issues.sort(key=lambda i: (i.file, i.line or 0))  # read top to bottom, whatever stage found it
    return ValidationReport(str(path), used, len(rows), len(examples), issues, stats)


def length_warnings(examples: list[Example], lengths: list[int], max_seq_len: int, tokens: dict) -> list[Issue]:
    """One warning summarising the examples that max_seq_len would truncate (also put in `tokens`)."""
    long = [(ex, n) for ex, n in zip(examples, lengths) if n > max_seq_len]
    lost = sum(n - max_seq_len for _, n in long)
    tokens.update(max_seq_len=max_seq_len, too_long=len(long), tokens_lost=lost)
    if not long:
        return []
    lines = ", ".join(str(ex.line) for ex, _ in long[:10]) + (", ..." if len(long) > 10 else "")
    msg = (f"{len(long)} examples are longer than max_seq_len={max_seq_len} and will be truncated, "
           f"losing {lost} tokens (lines {lines})")
    return [Issue("too_long", msg, long[0][0].file, long[0][0].line, severity="warning")]


def token_stats(lengths: list[int], epochs: float = 1.0) -> dict[str, Any]:
    """Total, min, mean, p95 and max tokens per example, and the tokens a run of `epochs` trains on."""
    ordered = sorted(lengths)
    total = sum(ordered)
    p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]  # nearest-rank percentile
    return {
        "total": total,
        "min": ordered[0],
        "mean": round(total / len(ordered), 2),
        "p95": p95,
        "max": ordered[-1],
        "estimated_training_tokens": round(total * epochs),
    }


def example_stats(examples: list[Example]) -> dict[str, Any]:
    """Counts by kind, the label distribution (labelled) and role/turn counts (chat, preference)."""
    stats: dict[str, Any] = {"examples": len(examples), "kinds": dict(Counter(ex.kind for ex in examples))}
    labelled = [ex.label for ex in examples if ex.kind == "labelled"]
    if labelled:
        stats["labels"] = dict(sorted(Counter(labelled).items()))
    convs = [ex.messages if ex.kind == "chat" else ex.prompt + ex.chosen for ex in examples
             if ex.kind in ("chat", "preference")]
    if convs:
        turns = [len(c) for c in convs]
        stats["roles"] = dict(Counter(m.role for c in convs for m in c))
        stats["turns"] = {"min": min(turns), "mean": round(sum(turns) / len(turns), 2), "max": max(turns)}
        stats["untrained_assistant_turns"] = sum(1 for c in convs for m in c if m.role == "assistant" and not m.weight)
    return stats


def format_report(report: ValidationReport, max_per_code: int = 20) -> str:
    """Human-readable report: a header, one `file:line:col: severity code [field]: message` per issue
    (at most `max_per_code` of each code, the rest counted), then the statistics."""
    verdict = "OK" if report.ok else "FAILED"
    lines = [
        f"{report.path}: {verdict} - format {report.format}, {report.n_rows} rows, {report.n_examples} examples, "
        f"{len(report.errors)} errors, {len(report.warnings)} warnings"
    ]
    shown: Counter[str] = Counter()
    for issue in report.issues:
        shown[issue.code] += 1
        if shown[issue.code] <= max_per_code:
            lines.append(str(issue))
    for code, n in shown.items():
        if n > max_per_code:
            lines.append(f"... and {n - max_per_code} more {code}")
    lines.append("statistics:")
    lines.extend(_stat_lines(report.stats, "  "))
    return "\n".join(lines)


def _stat_lines(stats: dict[str, Any], indent: str) -> list[str]:
    out = []
    for key, value in stats.items():
        if isinstance(value, dict):
            out.append(f"{indent}{key}:")
            out.extend(_stat_lines(value, indent + "  "))
        else:
            out.append(f"{indent}{key}: {value:,}" if isinstance(value, int) else f"{indent}{key}: {value}")
    return out


def report_to_json(report: ValidationReport) -> dict[str, Any]:
    """The report as a JSON-able dict (issues as objects with every field)."""
    return {
        "path": report.path,
        "format": report.format,
        "ok": report.ok,
        "n_rows": report.n_rows,
        "n_examples": report.n_examples,
        "n_errors": len(report.errors),
        "n_warnings": len(report.warnings),
        "issues": [
            {"code": i.code, "severity": i.severity, "message": i.message, "file": i.file, "line": i.line,
             "column": i.column, "field": i.field}
            for i in report.issues
        ],
        "stats": report.stats,
    }
