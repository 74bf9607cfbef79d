"""The strong prompt baselines of labelled data: constrained, calibrated, the prompt chosen on validation.

    systems = constrained_baselines(model, tokenizer, data, "test", cfg, echo=print)
    # {"base zero-shot, constrained": ..., "base 4-shot, constrained": ..., "base searched, constrained": ...}

"Try prompt engineering first": before fine-tuning is credited, the base model gets its best prompt.
Every candidate (the run's instruction and eval.search_instructions, times eval.search_shots
training examples in the prompt, calibrated or not) is scored on the validation split by eval.metric;
the best one is then scored once on the test split, which the search never saw.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from lmtune.config import RunConfig
from lmtune.data.records import Example
from lmtune.evaluate.compare import select_shots
from lmtune.evaluate.constrained import PromptChoice, calibrated, choice_logprobs, score_constrained
from lmtune.evaluate.metrics import metric_value

Echo = Callable[[str], None]


def labelled_examples(data, split: str) -> list[Example]:
    """The split's examples when all of them carry a label of the data's label set (else [])."""
    examples = data.examples.get(split) or []
    names = set(data.label_names or [])
    if not names or not examples or any(e.kind != "labelled" or e.label not in names for e in examples):
        return []
    return list(examples)


def search_prompt(model, tokenizer, data, cfg: RunConfig, echo: Echo = print) -> tuple[PromptChoice, list[dict]]:
    """The best prompt choice on the validation split by eval.metric, and every candidate's row."""
    validation = labelled_examples(data, "validation")
    labels = data.label_names
    references = [e.label for e in validation]
    instructions = [None, *cfg.eval.search_instructions]
    shot_counts = sorted(set(cfg.eval.search_shots))
    n = len(instructions) * len(shot_counts)
    echo(f"prompt search: {n} prompts x calibrated or not on {len(validation)} validation examples ...")
    rows: list[dict[str, Any]] = []
    best: tuple[float, PromptChoice] | None = None
    for i, instruction in enumerate(instructions):
        for j, k in enumerate(shot_counts):
            shots = tuple(select_shots(data.examples.get("train") or [], k, cfg.eval.seed))
            raw = PromptChoice(instruction, shots, False)
            desc = f"prompt search {i * len(shot_counts) + j + 1}/{n}"
            logp = choice_logprobs(model, tokenizer, validation, cfg, labels, raw, desc)
            free = choice_logprobs(model, tokenizer, _content_free(cfg, labels), cfg, labels, raw)
            for cal, scores in ((False, logp), (True, calibrated(logp, free))):
                choice = PromptChoice(instruction, shots, cal)
                predicted = [labels[c] for c in scores.argmax(axis=1)]
                value = metric_value(predicted, references, labels, cfg.eval.metric)
                rows.append({**choice.describe(), "validation": value})
                if best is None or value > best[0]:  # ties keep the earlier, simpler prompt
                    best = (value, choice)
    assert best is not None
    return best[1], rows


def _content_free(cfg: RunConfig, labels: list[str]) -> list[Example]:
    return [Example("labelled", text=t, label=labels[0]) for t in cfg.eval.content_free]


def constrained_baselines(model, tokenizer, data, split: str, cfg: RunConfig, echo: Echo = print) -> dict[str, dict]:
    """Zero-shot, k-shot and (with eval.prompt_search and a validation split) searched constrained baselines."""
    examples = labelled_examples(data, split)
    if not examples:
        return {}
    labels = data.label_names
    shots = tuple(select_shots(data.examples.get("train") or [], cfg.eval.few_shot, cfg.eval.seed))
    choices = {"base zero-shot, constrained": PromptChoice(None, (), cfg.eval.calibrate)}
    if shots:
        choices[f"base {len(shots)}-shot, constrained"] = PromptChoice(None, shots, cfg.eval.calibrate)
    systems = {name: score_constrained(model, tokenizer, examples, cfg, labels, choice, desc=name)
               for name, choice in choices.items()}
    if cfg.eval.prompt_search and labelled_examples(data, "validation"):
        started = time.perf_counter()
        best, rows = search_prompt(model, tokenizer, data, cfg, echo)
        search_seconds = time.perf_counter() - started
        same = next((name for name, c in choices.items() if c == best), None)
        name = "base searched, constrained"
        scores = dict(systems[same]) if same else score_constrained(model, tokenizer, examples, cfg, labels, best,
                                                                    desc=name)
        scores.update(search={"metric": cfg.eval.metric, "split": "validation", "seconds": search_seconds,
                              "candidates": rows, "best": best.describe()})
        systems[name] = scores
        echo(f"best prompt on validation: {_describe(best)}")
    return systems


def _describe(choice: PromptChoice) -> str:
    instruction = "the run's instruction" if choice.instruction is None else repr(choice.instruction)
    return f"{instruction}, {len(choice.shots)} shots, {'calibrated' if choice.calibrated else 'uncalibrated'}"


def fine_tuned_constrained(model, tokenizer, data, split: str, cfg: RunConfig) -> dict[str, Any]:
    """The fine-tuned model under the same constrained scoring: its own (trained) prompt, zero-shot."""
    examples = labelled_examples(data, split)
    if not examples:
        return {}
    return score_constrained(model, tokenizer, examples, cfg, data.label_names,
                             PromptChoice(None, (), cfg.eval.calibrate), desc="fine-tuned, constrained")
