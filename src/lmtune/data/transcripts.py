"""Human/Assistant transcripts: split them into chat turns, and split preference pairs of them.

Usage:
    turns, problem = parse_transcript("\\n\\nHuman: Hi\\n\\nAssistant: Hello")
    # turns == [Message("user", "Hi"), Message("assistant", "Hello")], problem is None
    pair, problem = split_pair(chosen_text, rejected_text)   # hh-rlhf: shared prefix, two answers
    prompt, chosen_answer, rejected_answer = pair             # or problem == (issue code, message)

Two styles are understood: Anthropic's `\\n\\nHuman: ... \\n\\nAssistant: ...` (hh-rlhf) and the
`### Human: ... ### Assistant: ...` style of OpenAssistant-Guanaco.
"""

from __future__ import annotations

import os
import re

from lmtune.data.records import Message

_HH = re.compile(r"(?:^|\n\n)(Human|Assistant):")
_HASH = re.compile(r"###\s*(Human|Assistant):")
_ROLES = {"Human": "user", "Assistant": "assistant"}
# A new Human turn inside an answer; `Human:` at the very start of an answer is quoted text, not a turn.
_NEW_HUMAN = {_HH: re.compile(r"\n\nHuman:"), _HASH: re.compile(r"###\s*Human:")}


def _style(text: str) -> re.Pattern[str]:
    return _HASH if _HASH.search(text) else _HH


def is_transcript(text: object) -> bool:
    """True when a string holds both a Human and an Assistant turn marker of one style."""
    if not isinstance(text, str):
        return False
    found = {m.group(1) for m in _style(text).finditer(text)}
    return found == {"Human", "Assistant"}


def parse_turns(text: str) -> tuple[list[Message], str | None]:
    """Split a transcript into messages; the problem (if any) says why it is not a usable dialogue."""
    pattern = _style(text)
    marks = list(pattern.finditer(text))
    if not marks:
        return [], "no `Human:` or `Assistant:` turn markers"
    if text[: marks[0].start()].strip():
        return [], "text before the first turn marker"
    turns = []
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        content = text[mark.end() : end].strip()
        if not content:
            return [], f"turn {i + 1} ({mark.group(1)}) is empty"
        turns.append(Message(_ROLES[mark.group(1)], content))  # type: ignore[arg-type]
    if not any(t.role == "user" for t in turns):
        return [], "no Human turn"
    return turns, None


def parse_transcript(text: str) -> tuple[list[Message], str | None]:
    """Parse a whole dialogue for training: it needs a Human turn and must end with an Assistant turn."""
    turns, problem = parse_turns(text)
    if problem:
        return [], problem
    if not any(t.role == "assistant" for t in turns):
        return [], "no Assistant turn"
    if turns[-1].role != "assistant":
        return [], "does not end with an Assistant turn"
    return turns, None


Pair = tuple[list[Message], str, str]


def split_pair(chosen: str, rejected: str) -> tuple[Pair | None, tuple[str, str] | None]:
    """Split two full transcripts into (shared prompt turns, chosen answer, rejected answer).

    An answer may be empty (hh-rlhf has a few pairs where saying nothing was preferred).

    The split point is the last Assistant marker inside the longest common prefix rather than the
    last marker of each text: some hh-rlhf answers themselves contain `Assistant:` or `Human:`, and
    cutting each text at its own last marker would then give two different prompts.
    """
    pattern = _style(chosen)
    common = os.path.commonprefix([chosen, rejected])
    answer_marks = [m for m in pattern.finditer(common) if m.group(1) == "Assistant"]
    if not answer_marks:
        return None, ("no_common_prefix", "the transcripts differ before their first Assistant turn")
    cut = answer_marks[-1]
    answers = chosen[cut.end() :].strip(), rejected[cut.end() :].strip()
    for name, answer in zip(("chosen", "rejected"), answers):
        if _NEW_HUMAN[pattern].search(answer):
            return None, ("no_common_prefix", f"{name} goes on with a new Human turn after the shared prefix")
    prompt, problem = parse_turns(chosen[: cut.start()])
    if problem:
        return None, ("bad_transcript", f"shared prompt: {problem}")
    return (prompt, answers[0], answers[1]), None
