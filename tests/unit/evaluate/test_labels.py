"""Label parsing from generated answers: normalisation, sentences, overlapping labels, failures."""

import pytest

from lmtune.evaluate.labels import normalize, parse_label

EMOTION = ["anger", "joy", "optimism", "sadness"]
OFFENSIVE = ["not-offensive", "offensive"]
IRONY = ["non_irony", "irony"]


@pytest.mark.parametrize(
    "output, expected",
    [
        ("joy", "joy"),
        ("JOY", "joy"),
        ("  Joy.\n", "joy"),
        ('"sadness"', "sadness"),
        ("**Anger**", "anger"),
        ("`optimism`!", "optimism"),
        ("« joy »", "joy"),
    ],
)
def test_exact_match_ignores_case_quotes_punctuation_and_markdown(output, expected):
    assert parse_label(output, EMOTION) == expected


def test_label_inside_a_sentence_is_a_whole_word_match():
    assert parse_label("The emotion here is clearly sadness, I think.", EMOTION) == "sadness"
    assert parse_label("Label: joy", EMOTION) == "joy"
    # "joyful" and "overjoyed" contain "joy" but are other words.
    assert parse_label("A joyful and overjoyed tweet", EMOTION) is None


def test_first_occurring_label_wins():
    assert parse_label("anger, or maybe sadness", EMOTION) == "anger"
    assert parse_label("sadness rather than anger", EMOTION) == "sadness"


def test_overlapping_labels_prefer_the_longest_match():
    assert parse_label("Not offensive.", OFFENSIVE) == "not-offensive"
    assert parse_label("This tweet is not offensive at all", OFFENSIVE) == "not-offensive"
    assert parse_label("This tweet is offensive", OFFENSIVE) == "offensive"
    assert parse_label("offensive", OFFENSIVE) == "offensive"
    # Same result when the shorter label is listed first.
    assert parse_label("not offensive", list(reversed(OFFENSIVE))) == "not-offensive"


def test_separators_in_label_names_match_spaces_and_hyphens():
    assert parse_label("Non-irony", IRONY) == "non_irony"
    assert parse_label("non irony", IRONY) == "non_irony"
    assert parse_label("It is irony.", IRONY) == "irony"


@pytest.mark.parametrize("output", ["", "   ", "?!", "I am not sure.", "neutral"])
def test_unparseable_or_empty_gives_none(output):
    assert parse_label(output, EMOTION) is None


def test_normalize():
    assert normalize("  **Not_Offensive!!** ") == "not offensive"
    assert normalize("Ça VA") == "ça va"
