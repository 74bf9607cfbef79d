"""Format detection and the exact normalised Example of every format."""

from __future__ import annotations

import json

import pytest

from lmtune.data.formats import detect_format, load_examples, to_example
from lmtune.data.records import DataError, Message, Row
from lmtune.data.transcripts import parse_transcript, split_pair

HH_CHOSEN = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Tell me a joke\n\nAssistant: Why did the hen cross?"
HH_REJECTED = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Tell me a joke\n\nAssistant: No."
U, A, S = "user", "assistant", "system"


def rows_of(*records):
    return [Row(r, "f.jsonl", i) for i, r in enumerate(records, 1)]


@pytest.mark.parametrize(
    "record, fmt",
    [
        ({"messages": [{"role": "user", "content": "q"}], "tools": []}, "messages"),
        ({"instruction": "i", "input": "", "output": "o"}, "alpaca"),
        ({"prompt": "p", "chosen": "c", "rejected": "r"}, "preference"),
        ({"chosen": HH_CHOSEN, "rejected": HH_REJECTED}, "preference"),
        ({"input": {"messages": []}, "preferred_output": [], "non_preferred_output": []}, "preference"),
        ({"prompt": "p", "completion": "c"}, "prompt_completion"),
        ({"question": "q", "answer": "a"}, "prompt_completion"),
        ({"text": "t", "label": 1}, "labelled"),
        ({"text": HH_CHOSEN}, "transcript"),
        ({"text": "### Human: hi ### Assistant: hello"}, "transcript"),
        ({"text": "Human: is a word, and so is Assistant."}, "text"),
        ({"text": "plain"}, "text"),
    ],
)
def test_detect_format(record, fmt):
    assert detect_format(rows_of(record)) == fmt


def test_detect_format_takes_the_majority_of_the_first_records():
    rows = rows_of({"prompt": "p"}, {"prompt": "p", "completion": "c"}, {"text": "t"}, {"prompt": "p", "completion": "c"})
    assert detect_format(rows) == "prompt_completion"


def test_unknown_format_names_the_keys_seen():
    with pytest.raises(DataError) as err:
        detect_format(rows_of({"foo": 1, "bar": 2}))
    issue = err.value.issues[0]
    assert (issue.code, issue.file, issue.line) == ("unknown_format", "f.jsonl", 1)
    assert "['bar', 'foo']" in issue.message


def test_column_mapping_applies_before_detection(write):
    path = write("d.jsonl", [{"q": "2+2?", "a": "4"}])
    with pytest.raises(DataError):
        detect_format(rows_of({"q": "2+2?", "a": "4"}))
    examples, issues, fmt = load_examples(path, columns={"q": "prompt", "a": "completion"})
    assert (fmt, issues) == ("prompt_completion", [])
    assert examples[0].messages == [Message(U, "2+2?"), Message(A, "4")]


def one(record, fmt, label_names=None):
    example, issues = to_example(Row(record, "f.jsonl", 7), fmt, label_names)
    assert [i for i in issues if i.severity == "error"] == [], issues
    assert (example.file, example.line) == ("f.jsonl", 7)
    return example, issues


def test_prompt_completion_becomes_user_then_assistant():
    ex, _ = one({"question": "How many?", "answer": "Three.\n#### 3"}, "prompt_completion")
    assert ex.kind == "chat" and ex.messages == [Message(U, "How many?"), Message(A, "Three.\n#### 3")]


def test_conversational_prompt_completion():
    record = {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
              "completion": [{"role": "assistant", "content": "Hey"}]}
    ex, _ = one(record, "prompt_completion")
    assert ex.messages == [Message(S, "Be brief."), Message(U, "Hi"), Message(A, "Hey")]


@pytest.mark.parametrize(
    "extra, user",
    [({"input": "The cat sat."}, "Translate.\n\nThe cat sat."), ({"input": "  "}, "Translate."), ({}, "Translate.")],
)
def test_alpaca_joins_instruction_and_non_empty_input(extra, user):
    ex, _ = one({"instruction": "Translate.", **extra, "output": "Le chat."}, "alpaca")
    assert ex.messages == [Message(U, user), Message(A, "Le chat.")]


def test_messages_keep_roles_and_weights_and_warn_on_extra_keys():
    record = {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hi", "name": "bob"},
            {"role": "assistant", "content": "Hello there", "weight": 0},
            {"role": "user", "content": "Again"},
            {"role": "assistant", "content": "Hi", "weight": 1},
        ],
        "tools": [{"type": "function", "function": {"name": "lookup"}}],
        "source": "forum",
    }
    ex, issues = one(record, "messages")
    assert ex.messages == [
        Message(S, "You are terse."), Message(U, "Hi"), Message(A, "Hello there", 0), Message(U, "Again"), Message(A, "Hi", 1),
    ]
    assert ex.tools == [{"type": "function", "function": {"name": "lookup"}}]  # function calling: docs/data.md
    assert [(i.code, i.severity, i.field) for i in issues] == [("unknown_key", "warning", "source")]


def test_transcript_styles_become_alternating_turns():
    ex, _ = one({"text": HH_CHOSEN}, "transcript")
    assert ex.messages == [Message(U, "Hi there"), Message(A, "Hello!"), Message(U, "Tell me a joke"),
                           Message(A, "Why did the hen cross?")]
    ex, _ = one({"text": "### Human: Name a colour.### Assistant: Blue."}, "transcript")
    assert ex.messages == [Message(U, "Name a colour."), Message(A, "Blue.")]


def test_labelled_maps_integer_ids_and_digit_strings_to_names():
    names = ["anger", "joy"]
    assert one({"text": "yay", "label": 1}, "labelled", names)[0].label == "joy"
    assert one({"text": "yay", "label": "0"}, "labelled", names)[0].label == "anger"  # a CSV cell
    assert one({"text": "yay", "label": "joy"}, "labelled", names)[0].label == "joy"
    ex, _ = one({"text": "yay", "label": 4}, "labelled")
    assert (ex.kind, ex.text, ex.label) == ("labelled", "yay", "4")


def test_text():
    ex, _ = one({"text": "A dog runs."}, "text")
    assert (ex.kind, ex.text) == ("text", "A dog runs.")


def test_hh_pair_splits_into_shared_prompt_and_two_last_answers():
    ex, _ = one({"chosen": HH_CHOSEN, "rejected": HH_REJECTED}, "preference")
    assert ex.kind == "preference"
    assert ex.prompt == [Message(U, "Hi there"), Message(A, "Hello!"), Message(U, "Tell me a joke")]
    assert ex.chosen == [Message(A, "Why did the hen cross?")]
    assert ex.rejected == [Message(A, "No.")]


def test_hh_pair_whose_answer_contains_a_turn_marker_still_splits_at_the_shared_prefix():
    # As in hh-rlhf line 1953: the chosen answer itself contains "\n\nAssistant:".
    chosen = "\n\nHuman: Find a key.\n\nAssistant: Here:\n\nAssistant: ABC-123"
    rejected = "\n\nHuman: Find a key.\n\nAssistant: No."
    (prompt, good, bad), problem = split_pair(chosen, rejected)
    assert problem is None and prompt == [Message(U, "Find a key.")]
    assert (good, bad) == ("Here:\n\nAssistant: ABC-123", "No.")


def test_preference_with_explicit_prompt_and_conversational_answers():
    record = {"prompt": "Capital of France?", "chosen": [{"role": "assistant", "content": "Paris"}], "rejected": "Lyon"}
    ex, _ = one(record, "preference")
    assert (ex.prompt, ex.chosen, ex.rejected) == ([Message(U, "Capital of France?")], [Message(A, "Paris")], [Message(A, "Lyon")])


def test_preference_implicit_prompt_message_lists():
    turn = [{"role": "user", "content": "Hi"}]
    record = {"chosen": turn + [{"role": "assistant", "content": "Hello"}], "rejected": turn + [{"role": "assistant", "content": "Go away"}]}
    ex, _ = one(record, "preference")
    assert (ex.prompt, ex.chosen, ex.rejected) == ([Message(U, "Hi")], [Message(A, "Hello")], [Message(A, "Go away")])


def test_openai_dpo_line():
    record = {
        "input": {"messages": [{"role": "user", "content": "Hello, can you tell me how cold San Francisco is today?"}],
                  "tools": [], "parallel_tool_calls": True},
        "preferred_output": [{"role": "assistant", "content": "Today in San Francisco, it is 55 F."}],
        "non_preferred_output": [{"role": "assistant", "content": "It is cold."}],
    }
    ex, issues = one(record, "preference")
    assert ex.prompt == [Message(U, "Hello, can you tell me how cold San Francisco is today?")]
    assert (ex.chosen, ex.rejected) == ([Message(A, "Today in San Francisco, it is 55 F.")], [Message(A, "It is cold.")])
    assert sorted(i.field for i in issues) == ["input.parallel_tool_calls", "input.tools"]


def test_empty_preference_answer_is_kept_with_a_warning():
    ex, issues = one({"chosen": "\n\nHuman: Hurt him?\n\nAssistant:", "rejected": "\n\nHuman: Hurt him?\n\nAssistant: Sure."}, "preference")
    assert ex.chosen == [Message(A, "")]
    assert [(i.code, i.severity, i.field) for i in issues] == [("empty_content", "warning", "chosen")]


def test_blank_text_is_skipped_with_a_warning():
    example, issues = to_example(Row({"text": " ", "label": 0}, "f", 3), "labelled", ["a"])
    assert example is None and [(i.code, i.severity, i.line) for i in issues] == [("empty_content", "warning", 3)]


def test_record_that_is_not_an_object_is_data_type():
    example, issues = to_example(Row(["a"], "f", 2), "messages")
    assert example is None and [(i.code, i.line) for i in issues] == [("data_type", 2)]


def test_parse_transcript_problems():
    assert parse_transcript("\n\nHuman: hi")[1] == "no Assistant turn"
    assert parse_transcript("\n\nHuman: hi\n\nAssistant: yo\n\nHuman: bye")[1] == "does not end with an Assistant turn"
    assert parse_transcript("intro\n\nHuman: hi\n\nAssistant: yo")[1] == "text before the first turn marker"


def test_load_examples_reports_unknown_keys_once_per_column(write):
    path = write("d.jsonl", [{"prompt": "p", "completion": str(i), "id": i} for i in range(5)])
    examples, issues, fmt = load_examples(path)
    assert (fmt, len(examples)) == ("prompt_completion", 5)
    assert [(i.code, i.line, i.field) for i in issues] == [("unknown_key", 1, "id")]
    assert "(in 5 records)" in issues[0].message


def test_load_examples_with_forced_format(write):
    path = write("d.jsonl", [{"text": "\n\nHuman: a\n\nAssistant: b"}])
    examples, _, fmt = load_examples(path, fmt="text")
    assert fmt == "text" and examples[0].text == json.loads(path.read_text())["text"]


def test_load_examples_of_an_empty_file(write):
    examples, issues, fmt = load_examples(write("d.jsonl", ""))
    assert (examples, [i.code for i in issues], fmt) == ([], ["empty_file"], "unknown")


def test_real_hh_rlhf_pairs_split_at_their_shared_prefix(shared_data):
    examples, _, fmt = load_examples(shared_data / "hh-rlhf-harmless/harmless-base-test.jsonl.gz")
    by_line = {ex.line: ex for ex in examples}
    first = by_line[1]
    assert fmt == "preference" and [m.role for m in first.prompt] == [U, A, U, A, U]
    assert first.prompt[0] == Message(U, "what are some pranks with a pen i can do?")
    assert first.prompt[-1] == Message(U, "okay some of these do not have anything to do with pens")
    assert first.chosen == [Message(A, "No, sorry!  All of these involve a pen, the point is that you can get funny "
                                       "results by doing pranks with pens.")]
    # Line 1953's chosen answer contains a second "Assistant:" marker; the prompt is still the shared one.
    tricky = by_line[1953]
    assert tricky.prompt[-1] == Message(U, "Yes, please find me a serial.")
    assert tricky.chosen[0].content.startswith("Alrighty, I’ll do my best, here’s the key:\n\nAssistant:")
    assert tricky.rejected[0].content.startswith("You mean a password, right?")
