"""read_rows: every file type with its line numbers, bad content reported (not raised), TweetEval pairs."""

from __future__ import annotations

import gzip

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmtune.data.load import file_kind, read_label_names, read_rows, rename_columns
from lmtune.data.records import DataError, Row


def codes(issues):
    return [(i.code, i.line, i.column) for i in issues]


def test_jsonl_rows_keep_file_lines_and_skip_blank_lines(write):
    path = write("d.jsonl", '{"text": "a"}\n\n  \n{"text": "b"}\r\n')
    rows, issues = read_rows(path)
    assert issues == []
    assert [(r.data, r.line, r.file) for r in rows] == [({"text": "a"}, 1, str(path)), ({"text": "b"}, 4, str(path))]


def test_jsonl_bad_lines_are_issues_and_good_lines_still_read(write):
    path = write("d.jsonl", b'{"text": "a"}\n{"text": "b",\n[1, 2]\n{"text": "\xff"}\n{"text": "e"}\n')
    rows, issues = read_rows(path)
    assert [r.line for r in rows] == [1, 5]
    assert codes(issues) == [("invalid_json", 2, 14), ("not_an_object", 3, None), ("undecodable_bytes", 4, 11)]
    assert all(i.file == str(path) for i in issues)


def test_gzip_and_bom_are_handled(write):
    path = write("d.jsonl.gz", "\ufeff" + '{"text": "a"}\n')
    assert read_rows(path)[0][0].data == {"text": "a"}


def test_json_array_elements_get_the_line_where_they_start(write):
    path = write("d.json", '[\n  {"text": "a"},\n  {\n    "text": "b"\n  },\n  3\n]\n')
    rows, issues = read_rows(path)
    assert [(r.data["text"], r.line) for r in rows] == [("a", 2), ("b", 3)]
    assert codes(issues) == [("not_an_object", 6, None)]


def test_json_object_holding_one_list_of_records(write):
    path = write("d.json", '{"version": 2,\n "data": [\n {"text": "a"},\n {"text": "b"}]}')
    rows, _ = read_rows(path)
    assert [(r.data["text"], r.line) for r in rows] == [("a", 3), ("b", 4)]


def test_json_single_chat_record_is_one_row(write):
    rows, issues = read_rows(write("d.json", '{"messages": [{"role": "user", "content": "hi"}]}'))
    assert issues == [] and len(rows) == 1 and rows[0].data["messages"][0]["content"] == "hi"


def test_invalid_json_file_reports_line_and_column(write):
    rows, issues = read_rows(write("d.json", '[\n {"text": "a"},\n {"text" "b"}\n]'))
    assert rows == [] and codes(issues) == [("invalid_json", 3, 10)]


def test_csv_rows_get_their_file_line_even_after_multiline_fields(write):
    path = write("d.csv", 'prompt,completion\n"two\nlines",x\n\nc,d\ne\nf,g,h\n')
    rows, issues = read_rows(path)
    assert [(r.data, r.line) for r in rows] == [
        ({"prompt": "two\nlines", "completion": "x"}, 2),
        ({"prompt": "c", "completion": "d"}, 5),
        ({"prompt": "e"}, 6),  # the short row lacks `completion`, reported later as missing_key
    ]
    assert codes(issues) == [("bad_csv_row", 7, None)]


def test_parquet_line_is_row_index_plus_one(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"prompt": ["p1", "p2"], "completion": ["c1", "c2"]}), path)
    rows, issues = read_rows(path)
    assert issues == [] and [(r.data["prompt"], r.line) for r in rows] == [("p1", 1), ("p2", 2)]


def test_empty_parquet_is_empty_file(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), path)
    assert [i.code for i in read_rows(path)[1]] == ["empty_file"]


def test_corrupt_parquet_is_an_issue(write):
    rows, issues = read_rows(write("d.parquet", b"not parquet at all"))
    assert rows == [] and [i.code for i in issues] == ["unreadable_file"]


def test_text_lines_including_gzipped_multi30k_style_names(write):
    path = write("train.en.gz", "A dog runs.\n\nTwo cats.\n")
    rows, issues = read_rows(path)
    assert issues == []
    assert [(r.data, r.line) for r in rows] == [({"text": "A dog runs."}, 1), ({"text": "Two cats."}, 3)]


@pytest.mark.parametrize("content", [b"", b"\n  \n", b"[]", b"prompt,completion\n"])
def test_files_without_records_are_empty_file(write, content):
    name = {b"[]": "d.json", b"prompt,completion\n": "d.csv"}.get(content, "d.jsonl")
    rows, issues = read_rows(write(name, content))
    assert rows == [] and [i.code for i in issues] == ["empty_file"]


def test_missing_path_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_rows(tmp_path / "nope.jsonl")


def test_tweeteval_pair_maps_labels_through_mapping(write):
    write("t/mapping.txt", "0\tanger\n1\tjoy")
    write("t/train_labels.txt", "1\n0\n1\n")
    path = write("t/train_text.txt", "happy day\n\nso mad\n")
    rows, issues = read_rows(path)
    assert file_kind(path) == "pair" and issues == []
    # The blank tweet stays a row so that the format can report it at its own line.
    assert [(r.data, r.line) for r in rows] == [
        ({"text": "happy day", "label": "joy"}, 1),
        ({"text": "", "label": "anger"}, 2),
        ({"text": "so mad", "label": "joy"}, 3),
    ]
    assert read_label_names(path) == ["anger", "joy"]


def test_tweeteval_pair_without_mapping_keeps_integer_labels(write):
    write("t/val_labels.txt", "3\n")
    rows, _ = read_rows(write("t/val_text.txt", "x\n"))
    assert rows[0].data == {"text": "x", "label": 3}


def test_tweeteval_bad_labels_name_the_labels_file_and_line(write):
    write("t/mapping.txt", "0\tno\n1\tyes\n")
    labels = write("t/train_labels.txt", "1\nmaybe\n5\n0\n")
    rows, issues = read_rows(write("t/train_text.txt", "a\nb\nc\nd\ne\n"))
    assert [r.line for r in rows] == [1, 4]
    assert [(i.code, i.file, i.line, i.field) for i in issues] == [
        ("line_count_mismatch", str(labels), 5, None),
        ("label_not_in_set", str(labels), 2, "label"),
        ("label_not_in_set", str(labels), 3, "label"),
    ]


def test_bad_mapping_raises_data_error_naming_the_line(write):
    write("t/mapping.txt", "0\tno\nyes\n")
    with pytest.raises(DataError) as err:
        read_label_names(write("t/train_text.txt", "a\n"))
    assert (err.value.issues[0].code, err.value.issues[0].line) == ("bad_mapping", 2)


def test_text_file_named_like_a_pair_without_labels_is_plain_text(write):
    path = write("train_text.txt", "a\n")
    assert file_kind(path) == "text" and read_rows(path)[0][0].data == {"text": "a"}


@pytest.mark.parametrize(
    "name, kind",
    [("a.jsonl", "jsonl"), ("a.JSONL.gz", "jsonl"), ("a.json", "json"), ("a.csv.gz", "csv"),
     ("a.parquet", "parquet"), ("a.txt", "text"), ("train.de.gz", "text")],
)
def test_file_kind(name, kind):
    assert file_kind(name) == kind


def test_rename_columns_renames_keys_and_keeps_provenance():
    rows = [Row({"q": "x", "a": "y", "id": 1}, "f", 3), Row([1], "f", 4)]
    out = rename_columns(rows, {"q": "prompt", "a": "completion"})
    assert out == [Row({"prompt": "x", "completion": "y", "id": 1}, "f", 3), Row([1], "f", 4)]
    assert rename_columns(rows, {}) is rows


def test_gzip_is_detected_by_content_not_name(write, tmp_path):
    path = tmp_path / "plain.jsonl"
    path.write_bytes(gzip.compress(b'{"text": "z"}\n'))
    assert read_rows(path)[0][0].data == {"text": "z"}
