"""score_model and label_model: a local model (built-in, base or fine-tuned) as the judge.

Usage:
    judges = LocalJudges(cache_dir="~/.cache/lmtune")      # loads models by name on first use
    texts = judges("tiny-llama", [[("user", "Score 0-1: ...")]], max_new_tokens=32, temperature=0.0, seed=0)
    score_of(text, (0.0, 1.0))        # the judged score, or JudgeParseError
    label_of(text, ["good", "bad"])    # the label the judge chose, or JudgeParseError

The judge sees the grader's messages (templates filled in) and, as OpenAI's structured output asks of
its judges, a last system line saying what to answer: `{"result": <number in range>}` or one of the
labels. A score is read from that JSON, else from the first number in the answer; a label is the
answer itself (case and punctuation aside), else the one label the answer names. Anything else is a
model_grader_parse_error. Greedy decoding unless sampling_params give a temperature.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Protocol

DEFAULT_MAX_TOKENS = 64
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


class JudgeParseError(ValueError):
    """The judge's answer holds no usable score or label."""


class Judges(Protocol):
    def __call__(self, model: str, conversations: list[list[tuple[str, str]]], max_new_tokens: int,
                 temperature: float, seed: int) -> list[str]:
        """One answer of `model` to each conversation."""


def score_instruction(bounds: tuple[float, float]) -> str:
    """The line that tells a score_model judge what to answer."""
    return f'Answer with JSON only: {{"result": <a number from {bounds[0]:g} to {bounds[1]:g}>}}'


def label_instruction(labels: list[str]) -> str:
    """The line that tells a label_model judge what to answer."""
    return "Answer with exactly one of these labels and nothing else: " + ", ".join(labels)


def score_of(text: str, bounds: tuple[float, float]) -> float:
    """The score in a judge's answer; JudgeParseError when there is none or it is outside `bounds`."""
    value: Any = None
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        try:
            value = json.loads(text[start:end + 1]).get("result")
        except (ValueError, AttributeError):
            value = None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        found = _NUMBER.search(text)
        if found is None:
            raise JudgeParseError(f"the judge's answer holds no score: {text[:200]!r}")
        value = float(found.group())
    if not bounds[0] <= value <= bounds[1]:
        raise JudgeParseError(f"the judge's score {value:g} is outside the range [{bounds[0]:g}, {bounds[1]:g}]")
    return float(value)


def _plain(text: str) -> str:
    return re.sub(r"[^\w\s-]", "", text).strip().lower()


def label_of(text: str, labels: list[str]) -> str:
    """The label a judge's answer chose; JudgeParseError when it names none or several."""
    answer = _plain(text)
    for label in labels:
        if answer == _plain(label):
            return label
    named = [label for label in labels if re.search(rf"(?<!\w){re.escape(_plain(label))}(?!\w)", answer)]
    if len(named) == 1:
        return named[0]
    raise JudgeParseError(f"the judge's answer names {'no label' if not named else 'several labels'} "
                          f"of {labels}: {text[:200]!r}")


class LocalJudges:
    """Judges loaded in this process by model name (built-in, hub id or local folder), kept once loaded."""

    def __init__(self, cache_dir: str = "~/.cache/lmtune", load: Callable[[str], Any] | None = None):
        self.cache_dir = cache_dir
        self.loaded: dict[str, tuple[Any, Any]] = {}
        self._load = load

    def _get(self, name: str) -> tuple[Any, Any]:
        if name not in self.loaded:
            from lmtune.config import ModelConfig
            from lmtune.model.load import load_model

            model, tokenizer = self._load(name) if self._load else load_model(ModelConfig(name=name, cache_dir=self.cache_dir))
            self.loaded[name] = (model.eval(), tokenizer)
        return self.loaded[name]

    def __call__(self, model: str, conversations: list[list[tuple[str, str]]], max_new_tokens: int,
                 temperature: float, seed: int) -> list[str]:
        """Greedy (or sampled at `temperature`) answers, one batch, left-padded."""
        import torch

        from lmtune.data.records import Message
        from lmtune.data.templates import generation_prompt, resolve_template

        net, tokenizer = self._get(model)
        template = resolve_template("auto", tokenizer)
        prompts = [generation_prompt([Message("system" if r == "developer" else r, t) for r, t in conv],
                                     template, tokenizer) for conv in conversations]
        eos = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        width = max(len(ids) for ids in encoded)
        ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded])
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
        torch.manual_seed(seed)
        sampling = {"do_sample": True, "temperature": temperature, "top_k": 0} if temperature > 0 else {"do_sample": False}
        with torch.inference_mode():
            out = net.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                               pad_token_id=pad, eos_token_id=eos, **sampling)
        return [tokenizer.decode(row[width:], skip_special_tokens=True) for row in out.tolist()]
