"""Read data files into raw `Row`s with their line numbers, reporting bad content as `Issue`s.

Usage:
    rows, issues = read_rows("data/train.jsonl")        # .jsonl .json .csv .parquet .txt, any of them .gz
    rows = rename_columns(rows, {"question": "prompt", "answer": "completion"})
    names = read_label_names("tweeteval/emotion/train_text.txt")   # from mapping.txt beside it or a folder up

Bad content never raises: every problem comes back as an Issue naming file, line and column, so
`lmtune data validate` can list all of them at once. Only a missing path raises FileNotFoundError.
A TweetEval-style `<split>_text.txt` with a sibling `<split>_labels.txt` is read as labelled pairs.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import zlib
from pathlib import Path
from typing import Any, Iterator

from lmtune.data.records import DataError, Issue, Row

# A .json object whose only list sits under one of these keys is one record, not a container of records.
RECORD_LIST_KEYS = {
    "messages", "prompt", "completion", "chosen", "rejected", "preferred_output", "non_preferred_output",
}
_INTEGER = re.compile(r"^-?[0-9]+$")
_PAIR_NAME = re.compile(r"^(?P<split>.*)_text\.txt(?P<gz>\.gz)?$")


def read_rows(path: str | Path) -> tuple[list[Row], list[Issue]]:
    """Read every record of a supported file; problems are returned as issues, never raised."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    file, kind = str(path), file_kind(path)
    if kind == "parquet":  # binary and self-describing: pyarrow reads it from the path
        rows, issues = _read_parquet(path)
        return rows, issues or ([] if rows else [Issue("empty_file", "the file holds no records", file)])
    try:
        raw = _read_bytes(path)
    except (OSError, EOFError, zlib.error) as err:
        return [], [Issue("unreadable_file", f"cannot read the file: {err}", file)]
    if not raw.strip():
        return [], [Issue("empty_file", "the file is empty", file)]
    if kind == "pair":
        rows, issues = _read_pair(path, raw)
    else:
        reader = {"jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv}.get(kind, _read_text)
        rows, issues = reader(raw, file)
    if not rows and not issues:  # e.g. `[]`, or a CSV with only its header
        issues = [Issue("empty_file", "the file holds no records", file)]
    return rows, issues


def file_kind(path: str | Path) -> str:
    """How a path is read: pair, parquet, jsonl, json, csv or text (anything else)."""
    path = Path(path)
    match = _PAIR_NAME.match(path.name)
    if match and _labels_path(path).is_file():
        return "pair"
    name = path.name.lower().removesuffix(".gz")
    suffix = Path(name).suffix
    return {".parquet": "parquet", ".jsonl": "jsonl", ".json": "json", ".csv": "csv"}.get(suffix, "text")


# How many folders above a data file mapping.txt is looked for: TweetEval's stance task keeps it one
# folder up from each target's folder (stance/mapping.txt, stance/abortion/train_text.txt).
MAPPING_LEVELS_UP = 2


def mapping_candidates(path: str | Path) -> list[Path]:
    """Where the label mapping of a data file is looked for, nearest first: its folder, then its parents."""
    folder = Path(path).expanduser().absolute().parent
    return [p / "mapping.txt" for p in [folder, *folder.parents][: MAPPING_LEVELS_UP + 1]]


def find_mapping(path: str | Path) -> Path | None:
    """The nearest mapping.txt of a data file (mapping_candidates), or None."""
    return next((m for m in mapping_candidates(path) if m.is_file()), None)


def unnamed_labels_issue(path: str | Path, labels: set) -> Issue | None:
    """A loud warning when labels are bare integer ids: it names every mapping.txt that was looked for."""
    if not labels or not all(isinstance(x, int) or str(x).isdecimal() for x in labels):
        return None
    searched = ", ".join(str(m) for m in mapping_candidates(path))
    msg = (f"the labels have no names (ids {', '.join(map(str, sorted(labels, key=int)))}): no mapping.txt in "
           f"{searched}; prompts and reports will say '0', '1', ... Add a mapping.txt (`id<TAB>name` lines) "
           "or set data.label_names")
    return Issue("unnamed_labels", msg, str(path), severity="warning", field="data.label_names")


def read_label_names(path: str | Path) -> list[str] | None:
    """Label names indexed by id from the nearest mapping.txt (`id<TAB>name` lines, see find_mapping), or None."""
    mapping = find_mapping(path)
    if mapping is None:
        return None
    names: dict[int, str] = {}
    for lineno, line in enumerate(mapping.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.strip().split("\t") if "\t" in line else line.split(None, 1)
        if len(parts) != 2 or not parts[0].strip().isdecimal() or not parts[1].strip():
            raise DataError([Issue("bad_mapping", "expected `id<TAB>name`", str(mapping), lineno)])
        names[int(parts[0])] = parts[1].strip()
    if sorted(names) != list(range(len(names))):
        raise DataError([Issue("bad_mapping", f"label ids must be 0..{len(names) - 1}", str(mapping))])
    return [names[i] for i in range(len(names))]


def rename_columns(rows: list[Row], columns: dict[str, str] | None) -> list[Row]:
    """Rename record keys old -> new (DataConfig.columns); rows that are not objects pass unchanged."""
    if not columns:
        return rows
    out = []
    for row in rows:
        if isinstance(row.data, dict):
            data = {columns.get(k, k): v for k, v in row.data.items()}
            row = Row(data, row.file, row.line)
        out.append(row)
    return out


def _read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    # Sniff the gzip magic rather than trusting the suffix, so `train.en.gz` and renamed files both work.
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 BOM (Excel, Notepad) is not content


def _split_lines(raw: bytes) -> list[bytes]:
    # Split on \n only (like `wc -l`), so a stray \r inside a line keeps line numbers aligned.
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [ln.removesuffix(b"\r") for ln in lines]


def _decode_line(line: bytes, file: str, lineno: int) -> tuple[str | None, Issue | None]:
    try:
        return line.decode("utf-8"), None
    except UnicodeDecodeError as err:
        msg = f"bytes that are not valid UTF-8 at byte {err.start + 1}: {line[err.start:err.start + 4]!r}"
        return None, Issue("undecodable_bytes", msg, file, lineno, err.start + 1)


def _decode_all(raw: bytes, file: str) -> tuple[str, list[Issue]]:
    """Decode a whole file; bad bytes are reported at their line and replaced so parsing can go on."""
    try:
        return raw.decode("utf-8"), []
    except UnicodeDecodeError as err:
        lineno = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        issue = Issue("undecodable_bytes", "bytes that are not valid UTF-8", file, lineno, column)
        return raw.decode("utf-8", errors="replace"), [issue]


def _not_an_object(value: Any, file: str, line: int) -> Issue:
    return Issue("not_an_object", f"expected a JSON object, got {type(value).__name__}", file, line)


def _decoded_lines(raw: bytes, file: str, issues: list[Issue]) -> Iterator[tuple[int, str]]:
    """(line number, text) of every non-blank line; undecodable lines become issues instead."""
    for lineno, line in enumerate(_split_lines(raw), 1):
        if not line.strip():
            continue
        text, bad = _decode_line(line, file, lineno)
        if bad:
            issues.append(bad)
        else:
            yield lineno, text


def _read_jsonl(raw: bytes, file: str) -> tuple[list[Row], list[Issue]]:
    rows: list[Row] = []
    issues: list[Issue] = []
    for lineno, text in _decoded_lines(raw, file, issues):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            issues.append(Issue("invalid_json", f"invalid JSON: {err.msg}", file, lineno, err.colno))
            continue
        if isinstance(value, dict):
            rows.append(Row(value, file, lineno))
        else:
            issues.append(_not_an_object(value, file, lineno))
    return rows, issues


def _read_json(raw: bytes, file: str) -> tuple[list[Row], list[Issue]]:
    text, issues = _decode_all(raw, file)
    try:
        top = json.loads(text)
    except json.JSONDecodeError as err:
        return [], issues + [Issue("invalid_json", f"invalid JSON: {err.msg}", file, err.lineno, err.colno)]
    scanner = _JsonScanner(text)
    if isinstance(top, list):
        spans = scanner.array(scanner.skip(0))
    elif isinstance(top, dict):
        lists = [k for k, v in top.items() if isinstance(v, list)]
        if len(lists) == 1 and lists[0] not in RECORD_LIST_KEYS:
            spans = scanner.member_array(lists[0])
        else:  # a single record such as {"messages": [...]}
            spans = [(top, 1)]
    else:
        msg = "the top level must be an array of objects or an object holding one"
        return [], issues + [Issue("not_an_object", msg, file, 1, 1)]
    rows = []
    for value, line in spans:
        if isinstance(value, dict):
            rows.append(Row(value, file, line))
        else:
            issues.append(_not_an_object(value, file, line))
    return rows, issues


class _JsonScanner:
    """Walks already-valid JSON text to find the line where each array element starts."""

    def __init__(self, text: str):
        self.text = text
        self.decoder = json.JSONDecoder()

    def skip(self, i: int) -> int:
        while i < len(self.text) and self.text[i] in " \t\r\n":
            i += 1
        return i

    def array(self, i: int) -> list[tuple[Any, int]]:
        out = []
        i = self.skip(i + 1)  # past '['
        while self.text[i] != "]":
            value, end = self.decoder.raw_decode(self.text, i)
            out.append((value, self.text.count("\n", 0, i) + 1))
            i = self.skip(end)
            if self.text[i] == ",":
                i = self.skip(i + 1)
        return out

    def member_array(self, key: str) -> list[tuple[Any, int]]:
        i = self.skip(self.skip(0) + 1)  # past '{'
        while True:
            name, i = self.decoder.raw_decode(self.text, i)
            i = self.skip(self.skip(i) + 1)  # past ':'
            if name == key:
                return self.array(i)
            _, i = self.decoder.raw_decode(self.text, i)
            i = self.skip(self.skip(i) + 1)  # past ','


def _read_csv(raw: bytes, file: str) -> tuple[list[Row], list[Issue]]:
    text, issues = _decode_all(raw, file)
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[Row] = []
    header: list[str] | None = None
    consumed = 0  # physical lines read so far; a quoted field may span several
    try:
        for record in reader:
            start, consumed = consumed + 1, reader.line_num
            if not record or all(not cell.strip() for cell in record):
                continue
            if header is None:
                header = [h.strip() for h in record]
                continue
            if len(record) > len(header):
                msg = f"{len(record)} fields but the header has {len(header)}"
                issues.append(Issue("bad_csv_row", msg, file, start))
                continue
            # A short row lacks its last columns: leave them out so the format reports missing_key.
            rows.append(Row(dict(zip(header, record)), file, start))
    except csv.Error as err:
        issues.append(Issue("bad_csv_row", f"unreadable CSV: {err}", file, reader.line_num))
    return rows, issues


def _read_parquet(path: Path) -> tuple[list[Row], list[Issue]]:
    import pyarrow.parquet as pq  # installed with `datasets`; imported here to keep startup fast

    try:
        records = pq.read_table(path).to_pylist()
    except Exception as err:  # pyarrow raises several unrelated types for corrupt files
        return [], [Issue("unreadable_file", f"not a readable parquet file: {err}", str(path))]
    return [Row(rec, str(path), i + 1) for i, rec in enumerate(records)], []


def _read_text(raw: bytes, file: str) -> tuple[list[Row], list[Issue]]:
    issues: list[Issue] = []
    rows = [Row({"text": text}, file, lineno) for lineno, text in _decoded_lines(raw, file, issues)]
    return rows, issues


def _labels_path(text_path: Path) -> Path:
    match = _PAIR_NAME.match(text_path.name)
    assert match is not None
    return text_path.with_name(f"{match['split']}_labels.txt{match['gz'] or ''}")


def _read_pair(path: Path, raw: bytes) -> tuple[list[Row], list[Issue]]:
    """TweetEval layout: line i of <split>_text.txt is labelled by line i of <split>_labels.txt."""
    file, labels_path = str(path), _labels_path(path)
    labels_file = str(labels_path)
    issues: list[Issue] = []
    try:
        names = read_label_names(path)
    except DataError as err:
        return [], err.issues
    try:
        labels = _split_lines(_read_bytes(labels_path))
    except (OSError, EOFError, zlib.error) as err:
        return [], [Issue("unreadable_file", f"cannot read the labels: {err}", labels_file)]
    texts = _split_lines(raw)
    if len(texts) != len(labels):
        msg = f"{path.name} has {len(texts)} lines but {labels_path.name} has {len(labels)}"
        shorter = labels_file if len(labels) < len(texts) else file
        issues.append(Issue("line_count_mismatch", msg, shorter, min(len(texts), len(labels)) + 1))
    rows = []
    for lineno, (text_b, label_b) in enumerate(zip(texts, labels), 1):
        text, bad = _decode_line(text_b, file, lineno)
        label_text = label_b.decode("utf-8", errors="replace").strip()
        label: Any = None
        if _INTEGER.match(label_text) and (names is None or 0 <= int(label_text) < len(names)):
            label = int(label_text) if names is None else names[int(label_text)]
        else:
            allowed = f"an integer id in 0..{len(names) - 1}" if names else "an integer"
            msg = f"label {label_text!r} is not {allowed}"
            issues.append(Issue("label_not_in_set", msg, labels_file, lineno, None, "label"))
        if bad:
            issues.append(bad)
        elif label is not None:
            # Blank tweets are kept as rows so the format can report them at their own line.
            rows.append(Row({"text": text, "label": label}, file, lineno))
    return rows, issues
