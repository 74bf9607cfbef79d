"""Read a class label out of a generated answer (classification by generation).

Usage:
    parse_label("**Not offensive.**", ["not-offensive", "offensive"])   # "not-offensive"
    parse_label("The tweet expresses joy!", ["anger", "joy"])           # "joy"
    parse_label("I cannot tell", ["anger", "joy"])                      # None

Both the answer and the label names are normalised the same way (case-folded, punctuation, quotes,
markdown and separators such as "-" and "_" turned into spaces), so "non_irony", "Non-irony" and
"**non irony**" all match. An exact match wins; otherwise the label whose words occur first in the
answer (as whole words), the longest one when several start at the same place ("not offensive"
before "offensive").
"""

from __future__ import annotations

import re
import unicodedata


def normalize(text: str) -> str:
    """Case-fold and turn every run of non-alphanumeric characters into one space."""
    text = unicodedata.normalize("NFKC", text).casefold()
    # \W keeps letters and digits of every script; "_" is a word character for \W, so drop it too.
    return " ".join(re.sub(r"[\W_]+", " ", text).split())


def parse_label(output: str, label_names: list[str]) -> str | None:
    """The label named in a generated answer, or None when none can be found."""
    answer = normalize(output)
    if not answer:
        return None
    forms = {name: normalize(name) for name in label_names}
    for name, form in forms.items():
        if form and answer == form:
            return name
    best: tuple[int, int, str] | None = None  # (start, -length, name): earliest, then longest
    padded = f" {answer} "
    for name, form in forms.items():
        if not form:
            continue
        # Spaces around both sides make this a whole-word match on the normalised text.
        start = padded.find(f" {form} ")
        if start >= 0 and (best is None or (start, -len(form)) < best[:2]):
            best = (start, -len(form), name)
    return None if best is None else best[2]
