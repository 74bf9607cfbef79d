"""Preference records (DPO data) in their three layouts, normalised to prompt, chosen and rejected.

Usage:
    example = preference_example(row.data, Checker(row))   # None when the Checker recorded an error

Layouts:
    {"prompt", "chosen", "rejected"}       prompt a string or messages; answers strings or assistant messages
    {"chosen", "rejected"}                 two whole conversations sharing every turn before the last
                                           answer: hh-rlhf transcripts or message lists (TRL implicit prompt)
    {"input": {"messages"}, "preferred_output", "non_preferred_output"}     OpenAI DPO fine-tuning
"""

from __future__ import annotations

from typing import Any

from lmtune.data.checks import Checker
from lmtune.data.records import Example, Message
from lmtune.data.transcripts import is_transcript, split_pair

_DPO_KEYS = {"input", "preferred_output", "non_preferred_output"}
Triple = tuple[list[Message], list[Message], list[Message]]


def preference_example(data: dict[str, Any], chk: Checker, _names: list[str] | None = None) -> Example | None:
    """Normalise a preference record (any of the three layouts) into prompt, chosen and rejected."""
    if _DPO_KEYS & set(data):
        pair = _openai_dpo(data, chk)
    elif "prompt" in data:
        chk.unknown_keys(data, {"prompt", "chosen", "rejected"})
        pair = _explicit_prompt(data, chk)
    else:
        chk.unknown_keys(data, {"chosen", "rejected"})
        pair = _implicit_prompt(data, chk)
    if pair is None or chk.failed:
        return None
    prompt, chosen, rejected = pair
    if chosen == rejected:
        chk.error("identical_pair", "chosen and rejected are the same answer", "rejected")
        return None
    return Example("preference", prompt=prompt, chosen=chosen, rejected=rejected)


def _require(data: dict[str, Any], keys: tuple[str, ...], chk: Checker, prefix: str = "") -> bool:
    for key in keys:
        if key not in data:
            chk.error("missing_key", f"missing key {key!r}", prefix + key)
    return not chk.failed


def _openai_dpo(data: dict[str, Any], chk: Checker) -> Triple | None:
    chk.unknown_keys(data, _DPO_KEYS)
    if not _require(data, ("input", "preferred_output", "non_preferred_output"), chk):
        return None
    source = data["input"]
    if not isinstance(source, dict):
        chk.error("wrong_type", "'input' must be an object holding 'messages'", "input")
        return None
    chk.unknown_keys(source, {"messages"}, prefix="input.")
    if source.get("messages") in (None, []):
        chk.error("missing_messages_list", "no 'messages' list in 'input'", "input.messages")
        return None
    prompt = chk.messages(source["messages"], "input.messages")
    chosen = chk.answers(data["preferred_output"], "preferred_output")
    rejected = chk.answers(data["non_preferred_output"], "non_preferred_output")
    return None if prompt is None or chosen is None or rejected is None else (prompt, chosen, rejected)


def _explicit_prompt(data: dict[str, Any], chk: Checker) -> Triple | None:
    if not _require(data, ("prompt", "chosen", "rejected"), chk):
        return None
    prompt = chk.prompt(data["prompt"], "prompt")
    chosen, rejected = chk.answers(data["chosen"], "chosen"), chk.answers(data["rejected"], "rejected")
    return None if prompt is None or chosen is None or rejected is None else (prompt, chosen, rejected)


def _implicit_prompt(data: dict[str, Any], chk: Checker) -> Triple | None:
    """chosen/rejected are two whole conversations (transcripts or message lists) sharing a prefix."""
    if not _require(data, ("chosen", "rejected"), chk):
        return None
    chosen, rejected = data["chosen"], data["rejected"]
    if isinstance(chosen, str) and isinstance(rejected, str):
        if chosen == rejected:
            chk.error("identical_pair", "chosen and rejected are the same text", "rejected")
            return None
        if not (is_transcript(chosen) or is_transcript(rejected)):
            msg = "chosen/rejected have no Human:/Assistant: turns, so a 'prompt' is needed"
            chk.error("missing_key", msg, "prompt")
            return None
        split, problem = split_pair(chosen, rejected)
        if problem:
            chk.error(problem[0], problem[1], "rejected")
            return None
        prompt, good, bad = split  # type: ignore[misc]
        for field, answer in (("chosen", good), ("rejected", bad)):
            if not answer:
                chk.warn("empty_content", "the last Assistant answer is empty", field)
        return prompt, [Message("assistant", good)], [Message("assistant", bad)]
    good_msgs = chk.messages(chosen, "chosen", empty_answer="warning")
    bad_msgs = chk.messages(rejected, "rejected", empty_answer="warning")
    if good_msgs is None or bad_msgs is None:
        return None
    for field, msgs in (("chosen", good_msgs), ("rejected", bad_msgs)):
        if msgs[-1].role != "assistant":
            chk.error("example_missing_assistant_message", "the conversation must end with an assistant answer", field)
    if chk.failed:
        return None
    if len(good_msgs) < 2 or good_msgs[:-1] != bad_msgs[:-1]:
        chk.error("no_common_prefix", "the two conversations must share every turn before the last answer", "rejected")
        return None
    return good_msgs[:-1], good_msgs[-1:], bad_msgs[-1:]
