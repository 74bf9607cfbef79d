"""Reward functions for online RL (GRPO), and loading a user's own from `module:function`.

A reward function scores a batch of sampled completions:
    fn(prompts: list[str], completions: list[str], references: list[str | None]) -> list[float]
`references` holds each example's reference answer (None when the data has none).

Usage:
    fn = load_reward_function("lmtune.graders.rewards:gsm8k_numeric")
    fn = load_reward_function("my_rewards.py:score", base_dir=config_path.parent)
    rewards = call_reward(fn, "my_rewards.py:score", prompts, completions, references)

Only a local config file may name a reward by import path; the HTTP API takes names from a fixed
enum, so a submitted job cannot make the server import arbitrary code.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import re
import sys
from pathlib import Path
from typing import Callable

from lmtune.graders.text_metrics import gsm8k_answer

RewardFn = Callable[[list[str], list[str], list["str | None"]], list[float]]

_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_ANSWER_IS = re.compile(r"answer is", re.IGNORECASE)
# The last non-blank line is exactly "#### N": an optional minus, digits with thousands commas, decimals.
_FINAL_LINE = re.compile(r"####[ \t]*[-\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


def _first_number(text: str) -> str | None:
    """First number in `text`, canonical ('1,234.0' -> '1234'); gsm8k_answer reads the one after '####'."""
    return gsm8k_answer("####" + text)


def final_answer(completion: str) -> str | None:
    """The completion's answer: after the last '####', else in the last \\boxed{}, else after the
    last 'answer is', else the last number; canonical as in gsm8k_answer, None when there is none."""
    if "####" in completion:
        return gsm8k_answer(completion)
    boxed = _BOXED.findall(completion)
    if boxed:
        return _first_number(boxed[-1])
    marks = list(_ANSWER_IS.finditer(completion))
    if marks:
        found = _first_number(completion[marks[-1].end():])
        if found is not None:
            return found
    return gsm8k_answer(completion)  # falls back to the last number in the text


def gsm8k_numeric(prompts: list[str], completions: list[str], references: list[str | None]) -> list[float]:
    """1.0 when the completion's final answer equals the number after the reference's '####', else 0.0."""
    out = []
    for completion, reference in zip(completions, references, strict=True):
        want = gsm8k_answer(reference)
        out.append(float(want is not None and final_answer(completion) == want))
    return out


def gsm8k_closeness(prompts: list[str], completions: list[str], references: list[str | None]) -> list[float]:
    """1.0 for the reference's number, else 0.5 * exp(-|answer - reference| / max(|reference|, 1)), 0.0 with no number.

    gsm8k_numeric with partial credit for near misses: a model that is almost never exactly right
    still gets groups of samples that score apart, so GRPO has advantages to learn from.
    """
    out = []
    for completion, reference in zip(completions, references, strict=True):
        want, got = gsm8k_answer(reference), final_answer(completion)
        if want is None or got is None:
            out.append(0.0)
        elif got == want:
            out.append(1.0)
        else:
            gap = abs(float(got) - float(want)) / max(abs(float(want)), 1.0)
            out.append(0.5 * math.exp(-gap))
    return out


def answer_format(prompts: list[str], completions: list[str], references: list[str | None]) -> list[float]:
    """1.0 when the last non-blank line is '#### <number>', 0.5 when there is a number elsewhere, else 0.0.

    A shaping reward that teaches the GSM8K answer format whatever the answer's value; add it to
    gsm8k_numeric in your own reward function rather than using it alone.
    """
    out = []
    for completion in completions:
        lines = completion.strip().splitlines()
        if lines and _FINAL_LINE.fullmatch(lines[-1].strip()):
            out.append(1.0)
        else:
            out.append(0.5 if gsm8k_answer(completion) is not None else 0.0)
    return out


def _load_file_module(path: Path, spec_text: str):
    """Import a .py file as a module (registered in sys.modules so dataclasses and pickling work)."""
    if not path.is_file():
        raise FileNotFoundError(f"reward {spec_text!r}: file {path} does not exist")
    # A name unique to the resolved path, so two reward files called rewards.py do not collide.
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    name = f"lmtune_reward_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"reward {spec_text!r}: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_reward_function(spec: str, base_dir: Path | None = None) -> RewardFn:
    """The callable named by 'module:function'; module is a .py path (relative to base_dir) or a dotted name."""
    module_part, sep, attr = spec.rpartition(":")
    if not sep or not module_part or not attr:
        raise ValueError(f"reward {spec!r} must look like 'module:function' or 'path/to/file.py:function'")
    if module_part.endswith(".py") or "/" in module_part or "\\" in module_part:
        path = Path(module_part).expanduser()
        if not path.is_absolute():
            path = (base_dir or Path.cwd()) / path
        module = _load_file_module(path.resolve(), spec)
    else:
        try:
            module = importlib.import_module(module_part)
        except ModuleNotFoundError as err:
            raise ImportError(f"reward {spec!r}: cannot import module {module_part!r} ({err})") from err
    if not hasattr(module, attr):
        raise AttributeError(f"reward {spec!r}: module {module_part!r} has no attribute {attr!r}")
    fn = getattr(module, attr)
    if not callable(fn):
        raise TypeError(f"reward {spec!r}: {attr!r} is a {type(fn).__name__}, not a function")
    return fn


def call_reward(
    fn: RewardFn, spec: str, prompts: list[str], completions: list[str], references: list[str | None]
) -> list[float]:
    """Call a reward function and check it gave one finite number per completion (errors name the spec)."""
    scores = fn(prompts, completions, references)
    try:
        values = [float(s) for s in scores]
    except (TypeError, ValueError) as err:
        raise TypeError(f"reward {spec!r} must return a list of numbers ({err})") from err
    if len(values) != len(completions):
        raise ValueError(f"reward {spec!r} returned {len(values)} scores for {len(completions)} completions")
    bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
    if bad:
        raise ValueError(f"reward {spec!r} returned a non-finite score for completion {bad[0]}: {values[bad[0]]}")
    return values
