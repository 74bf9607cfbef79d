"""validate_file: the real data sets pass with the README's counts; each malformed input gives its
error code at its line (and field); duplicates, long examples and statistics are reported."""

from __future__ import annotations

import json

import pytest

from lmtune.data.validate import format_report, report_to_json, validate_file

GOOD_CHAT = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
HH = "\n\nHuman: {q}\n\nAssistant: {a}"


def chat(*messages):
    return {"messages": list(messages)}


def jsonl(*records):
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


@pytest.mark.parametrize(
    "data_file, split, examples, fmt",
    [
        ("gsm8k/train.jsonl", None, 7473, "prompt_completion"),
        ("gsm8k/test.jsonl", None, 1319, "prompt_completion"),
        ("hh-rlhf-harmless/harmless-base-test.jsonl.gz", None, 2312, "preference"),
        ("tweeteval/emotion/train_text.txt", {"anger", "joy", "optimism", "sadness"}, 3257, "labelled"),
        ("tweeteval/irony/train_text.txt", {"irony", "non_irony"}, 2862, "labelled"),
        ("tweeteval/hate/train_text.txt", {"hate", "not-hate"}, 9000 - 7, "labelled"),  # 7 blank tweets
        ("tweeteval/offensive/train_text.txt", {"offensive", "not-offensive"}, 11916, "labelled"),
        ("multi30k/train.en.gz", None, 29000, "text"),
    ],
)
def test_real_data_sets_are_valid(shared_data, data_file, split, examples, fmt):
    report = validate_file(shared_data / data_file, count_tokens=lambda ex: len(ex.dedup_text().encode()), epochs=2)
    assert report.ok, format_report(report)
    assert (report.format, report.n_examples) == (fmt, examples)
    assert report.n_rows == 9000 if "hate" in data_file else report.n_rows == examples
    tokens = report.stats["tokens"]
    assert tokens["min"] <= tokens["mean"] <= tokens["p95"] <= tokens["max"]
    assert tokens["estimated_training_tokens"] == 2 * tokens["total"]
    if split:
        assert set(report.stats["labels"]) == split and sum(report.stats["labels"].values()) == examples
    if fmt == "preference":
        # Four hh-rlhf pairs prefer an empty answer: kept, with a warning each.
        assert [i.line for i in report.issues if i.code == "empty_content"] == [87, 517, 926, 1104]
        assert report.stats["roles"]["user"] > examples


def test_blank_tweets_are_warnings_at_their_lines(shared_data):
    report = validate_file(shared_data / "tweeteval/hate/train_text.txt")
    blank = [i.line for i in report.warnings if i.code == "empty_content"]
    assert blank == [1468, 1983, 3844, 6644, 6792, 7115, 8219]


TWEET_OK = {"t/mapping.txt": "0\tno\n1\tyes\n", "t/train_text.txt": "a\nb\nc\n"}

# (id, files {name: content}, file validated, format, expected (code, file with the issue, line, field))
MALFORMED = [
    ("invalid_json", {"d.jsonl": jsonl(GOOD_CHAT, '{"messages": [}')}, "d.jsonl", "auto", ("invalid_json", "d.jsonl", 2, None)),
    ("not_an_object", {"d.jsonl": jsonl(GOOD_CHAT, GOOD_CHAT, "[1, 2]")}, "d.jsonl", "auto", ("not_an_object", "d.jsonl", 3, None)),
    ("missing_messages", {"d.jsonl": jsonl(GOOD_CHAT, {"msgs": []})}, "d.jsonl", "auto",
     ("missing_messages_list", "d.jsonl", 2, "messages")),
    ("messages_not_a_list", {"d.jsonl": jsonl(GOOD_CHAT, {"messages": "Hi"})}, "d.jsonl", "auto", ("wrong_type", "d.jsonl", 2, "messages")),
    ("message_not_an_object", {"d.jsonl": jsonl(chat({"role": "user", "content": "Hi"}, "Hello"))}, "d.jsonl", "auto",
     ("wrong_type", "d.jsonl", 1, "messages[1]")),
    ("message_missing_role", {"d.jsonl": jsonl(GOOD_CHAT, chat({"role": "user", "content": "Hi"}, {"content": "Yo"}))}, "d.jsonl",
     "auto", ("message_missing_key", "d.jsonl", 2, "messages[1].role")),
    ("missing_content", {"d.jsonl": jsonl(chat({"role": "user"}, {"role": "assistant", "content": "Yo"}))}, "d.jsonl", "auto",
     ("missing_content", "d.jsonl", 1, "messages[0].content")),
    ("unknown_role", {"d.jsonl": jsonl(GOOD_CHAT, GOOD_CHAT, chat({"role": "user", "content": "Hi"}, {"role": "bot", "content": "Yo"}))},
     "d.jsonl", "auto", ("unrecognized_role", "d.jsonl", 3, "messages[1].role")),
    ("empty_content", {"d.jsonl": jsonl(chat({"role": "user", "content": "Hi"}, {"role": "assistant", "content": " \n"}))}, "d.jsonl",
     "auto", ("empty_content", "d.jsonl", 1, "messages[1].content")),
    ("no_assistant", {"d.jsonl": jsonl(GOOD_CHAT, chat({"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}))},
     "d.jsonl", "auto", ("example_missing_assistant_message", "d.jsonl", 2, "messages")),
    ("unknown_message_key", {"d.jsonl": jsonl(chat({"role": "user", "content": "Hi", "lang": "en"}, {"role": "assistant", "content": "Yo"}))},
     "d.jsonl", "auto", ("message_unrecognized_key", "d.jsonl", 1, "messages[0].lang")),
    ("bad_weight", {"d.jsonl": jsonl(GOOD_CHAT, chat({"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo", "weight": 2}))},
     "d.jsonl", "auto", ("invalid_weight", "d.jsonl", 2, "messages[1].weight")),
    ("weight_on_user", {"d.jsonl": jsonl(chat({"role": "user", "content": "Hi", "weight": 0}, {"role": "assistant", "content": "Yo"}))},
     "d.jsonl", "auto", ("invalid_weight", "d.jsonl", 1, "messages[0].weight")),
    ("content_a_number", {"d.jsonl": jsonl(GOOD_CHAT, chat({"role": "user", "content": "Hi"}, {"role": "assistant", "content": 42}))},
     "d.jsonl", "auto", ("wrong_type", "d.jsonl", 2, "messages[1].content")),
    ("label_outside_set", {"d/mapping.txt": "0\tneg\n1\tpos\n", "d/d.jsonl": jsonl({"text": "a", "label": 1}, {"text": "b", "label": 2})},
     "d/d.jsonl", "auto", ("label_not_in_set", "d/d.jsonl", 2, "label")),
    ("label_wrong_type", {"d.jsonl": jsonl({"text": "a", "label": [1]})}, "d.jsonl", "auto", ("wrong_type", "d.jsonl", 1, "label")),
    ("undecodable_bytes", {"d.jsonl": jsonl(GOOD_CHAT).encode() + b'{"messages": "\xc3\x28"}\n'}, "d.jsonl", "auto",
     ("undecodable_bytes", "d.jsonl", 2, None)),
    ("empty_file", {"d.jsonl": ""}, "d.jsonl", "auto", ("empty_file", "d.jsonl", None, None)),
    ("alpaca_missing_output", {"d.jsonl": jsonl({"instruction": "i", "output": "o"}, {"instruction": "i", "input": "x"})}, "d.jsonl",
     "auto", ("missing_key", "d.jsonl", 2, "output")),
    ("prompt_without_completion", {"d.jsonl": jsonl({"prompt": "p", "completion": "c"}, {"prompt": "p"})}, "d.jsonl", "auto",
     ("missing_key", "d.jsonl", 2, "completion")),
    ("preference_missing_rejected", {"d.jsonl": jsonl({"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p", "chosen": "a"})},
     "d.jsonl", "auto", ("missing_key", "d.jsonl", 2, "rejected")),
    ("identical_pair", {"d.jsonl": jsonl({"prompt": "p", "chosen": "a", "rejected": "a"})}, "d.jsonl", "auto",
     ("identical_pair", "d.jsonl", 1, "rejected")),
    ("identical_transcripts", {"d.jsonl": jsonl({"chosen": HH.format(q="q", a="a"), "rejected": HH.format(q="q", a="a")})}, "d.jsonl",
     "auto", ("identical_pair", "d.jsonl", 1, "rejected")),
    ("transcript_without_assistant", {"d.jsonl": jsonl({"text": HH.format(q="q", a="a")}, {"text": "\n\nHuman: only me"})}, "d.jsonl",
     "auto", ("bad_transcript", "d.jsonl", 2, "text")),
    ("transcript_not_ending_with_assistant", {"d.jsonl": jsonl({"text": HH.format(q="q", a="a") + "\n\nHuman: more?"})}, "d.jsonl",
     "transcript", ("bad_transcript", "d.jsonl", 1, "text")),
    ("transcripts_without_common_prefix", {"d.jsonl": jsonl({"chosen": HH.format(q="q1", a="a"), "rejected": HH.format(q="q2", a="b")})},
     "d.jsonl", "auto", ("no_common_prefix", "d.jsonl", 1, "rejected")),
    ("transcripts_diverging_at_a_human_turn",
     {"d.jsonl": jsonl({"chosen": HH.format(q="q", a="a") + HH.format(q="x", a="y"), "rejected": HH.format(q="q", a="a") + HH.format(q="z", a="y")})},
     "d.jsonl", "auto", ("no_common_prefix", "d.jsonl", 1, "rejected")),
    ("message_lists_without_common_prefix",
     {"d.jsonl": jsonl({"chosen": GOOD_CHAT["messages"], "rejected": [{"role": "user", "content": "Other"}, {"role": "assistant", "content": "x"}]})},
     "d.jsonl", "auto", ("no_common_prefix", "d.jsonl", 1, "rejected")),
    ("dpo_missing_input_messages", {"d.jsonl": jsonl({"input": {}, "preferred_output": [], "non_preferred_output": []})}, "d.jsonl",
     "auto", ("missing_messages_list", "d.jsonl", 1, "input.messages")),
    ("dpo_answer_not_assistant",
     {"d.jsonl": jsonl({"input": {"messages": [{"role": "user", "content": "q"}]}, "preferred_output": [{"role": "user", "content": "a"}],
                        "non_preferred_output": [{"role": "assistant", "content": "b"}]})},
     "d.jsonl", "auto", ("unrecognized_role", "d.jsonl", 1, "preferred_output[0].role")),
    ("text_not_a_string", {"d.jsonl": jsonl({"text": "a"}, {"text": 5})}, "d.jsonl", "auto", ("wrong_type", "d.jsonl", 2, "text")),
    ("csv_missing_column", {"d.csv": "prompt,completion\np,c\nonly prompt\n"}, "d.csv", "auto", ("missing_key", "d.csv", 3, "completion")),
    ("csv_extra_field", {"d.csv": "prompt,completion\np,c\np,c,x\n"}, "d.csv", "auto", ("bad_csv_row", "d.csv", 3, None)),
    ("tweeteval_non_integer_label", {**TWEET_OK, "t/train_labels.txt": "1\nyes\n0\n"}, "t/train_text.txt", "auto",
     ("label_not_in_set", "t/train_labels.txt", 2, "label")),
    ("tweeteval_line_counts_differ", {**TWEET_OK, "t/train_labels.txt": "1\n0\n"}, "t/train_text.txt", "auto",
     ("line_count_mismatch", "t/train_labels.txt", 3, None)),
    ("json_element_not_an_object", {"d.json": '[\n {"text": "a"},\n\n "b"\n]'}, "d.json", "auto", ("not_an_object", "d.json", 4, None)),
    ("json_invalid", {"d.json": '[\n {"text": "a"},\n {"text": "b"]\n'}, "d.json", "auto", ("invalid_json", "d.json", 3, None)),
    ("unknown_format", {"d.jsonl": jsonl({"foo": 1})}, "d.jsonl", "auto", ("unknown_format", "d.jsonl", 1, None)),
    ("bad_mapping", {"t/mapping.txt": "0\tno\nyes\n", "t/train_text.txt": "a\n", "t/train_labels.txt": "0\n"}, "t/train_text.txt",
     "auto", ("bad_mapping", "t/mapping.txt", 2, None)),
]


@pytest.mark.parametrize("files, target, fmt, expected", [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_malformed_input_reports_code_line_and_field(tmp_path, write, files, target, fmt, expected):
    for name, content in files.items():
        write(name, content)
    report = validate_file(tmp_path / target, fmt=fmt)
    code, file, line, fld = expected
    found = [(i.code, i.file, i.line, i.field) for i in report.errors]
    assert (code, str(tmp_path / file), line, fld) in found, found
    assert len(set(found)) == len(found)  # each problem is reported once
    assert not report.ok


def test_file_with_several_planted_errors_lists_each_at_its_line(write):
    path = write("d.jsonl", jsonl(
        GOOD_CHAT,
        "{not json",
        chat({"role": "user", "content": "Hi"}),
        GOOD_CHAT,
        chat({"role": "robot", "content": "Hi"}, {"role": "assistant", "content": ""}),
        "",
        "42",
        chat({"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo", "weight": 0.5}),
    ))
    report = validate_file(path)
    assert [(i.code, i.line, i.field) for i in report.errors] == [
        ("invalid_json", 2, None),
        ("example_missing_assistant_message", 3, "messages"),
        ("unrecognized_role", 5, "messages[0].role"),
        ("empty_content", 5, "messages[1].content"),
        ("not_an_object", 7, None),
        ("invalid_weight", 8, "messages[1].weight"),
    ]
    assert [(i.code, i.line) for i in report.warnings] == [("duplicate", 4)]
    assert (report.n_rows, report.n_examples) == (5, 2)


def test_duplicates_are_warnings_naming_both_lines(write):
    path = write("d.jsonl", jsonl({"text": "A  cat", "label": "x"}, {"text": "b", "label": "x"}, {"text": "a cat\n", "label": "y"}))
    report = validate_file(path)
    assert report.ok
    assert [(i.code, i.line) for i in report.warnings] == [("duplicate", 3), ("conflicting_labels", 3)]
    assert all(f"{path}:1" in i.message for i in report.warnings)


def test_long_examples_warning_counts_examples_and_lost_tokens(write):
    path = write("d.jsonl", jsonl({"text": "x" * 5}, {"text": "y" * 12}, {"text": "z" * 20}))
    report = validate_file(path, count_tokens=lambda ex: len(ex.text), max_seq_len=10, epochs=1.5)
    [warning] = report.warnings
    assert (warning.code, warning.line) == ("too_long", 2)
    assert "2 examples" in warning.message and "losing 12 tokens" in warning.message
    assert report.stats["tokens"] == {
        "total": 37, "min": 5, "mean": 12.33, "p95": 20, "max": 20, "estimated_training_tokens": 56,
        "max_seq_len": 10, "too_long": 2, "tokens_lost": 12,
    }


def test_chat_stats_count_roles_turns_and_untrained_turns(write):
    convo = chat({"role": "system", "content": "S"}, {"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 0},
                 {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"})
    report = validate_file(write("d.jsonl", jsonl(GOOD_CHAT, convo)))
    assert report.stats["roles"] == {"user": 3, "assistant": 3, "system": 1}
    assert report.stats["turns"] == {"min": 2, "mean": 3.5, "max": 5}
    assert report.stats["untrained_assistant_turns"] == 1
    assert "tokens" not in report.stats  # no token counter given


def test_format_report_and_json(write):
    path = write("d.jsonl", jsonl(GOOD_CHAT, chat({"role": "user", "content": "Hi"}, {"role": "bot", "content": "x"})))
    report = validate_file(path)
    text = format_report(report)
    lines = text.splitlines()
    assert lines[0] == f"{path}: FAILED - format messages, 2 rows, 1 examples, 1 errors, 0 warnings"
    assert lines[1] == f"{path}:2: error unrecognized_role [messages[1].role]: role 'bot' is not one of ['system', 'user', 'assistant', 'tool']"
    assert "statistics:" in lines and "  examples: 1" in lines
    data = json.loads(json.dumps(report_to_json(report)))
    assert (data["ok"], data["n_errors"], data["format"]) == (False, 1, "messages")
    assert data["issues"][0] == {"code": "unrecognized_role", "severity": "error", "message": report.issues[0].message,
                                 "file": str(path), "line": 2, "column": None, "field": "messages[1].role"}


def test_format_report_caps_repeated_codes(write):
    report = validate_file(write("d.jsonl", jsonl(*[{"text": "same"}] * 6)))
    text = format_report(report, max_per_code=2)
    assert text.count("warning duplicate") == 2 and "... and 3 more duplicate" in text
