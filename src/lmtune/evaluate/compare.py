"""Score a model on the test split by generation, so base and fine-tuned models compare on one scale.

Labelled data is answered by generation and parsed back into a label (accuracy, macro-F1 with a
bootstrap interval); chat data is scored on its final answer (exact match, BLEU, chrF, ROUGE, and
numeric match for GSM8K-style `#### N` answers). The few-shot baseline puts k training examples,
chosen deterministically and never from the evaluated split, before each prompt as earlier turns.

    shots = select_shots(train_examples, k=4, seed=0)
    scores = score_by_generation(model, tokenizer, test_examples, cfg, label_names, shots)
    print(comparison_table({"few-shot": scores}))
"""

from __future__ import annotations

import random
import time
from typing import Any, Sequence

import numpy as np

from lmtune.config import RunConfig
from lmtune.data.encode import label_chat, with_system
from lmtune.data.records import Example, Message
from lmtune.data.templates import generation_prompt, resolve_template
from lmtune.data.tool_render import flatten_tools
from lmtune.model.generate import generate
from lmtune.evaluate.labels import parse_label
from lmtune.evaluate.metrics import classification_metrics, metric_with_ci
from lmtune.stats import bootstrap_ci
from lmtune.graders.as_reward import grader_values
from lmtune.graders.text_metrics import generation_metrics, per_example_scores


def _conversation(example: Example, cfg: RunConfig, label_names: list[str] | None) -> list[Message]:
    if example.kind == "labelled":
        return label_chat(example, cfg.data, label_names or [])
    if example.kind == "chat":
        return list(example.messages)
    raise ValueError(f"{example.kind} examples have no answer to generate")


def select_shots(train: list[Example], k: int, seed: int) -> list[Example]:
    """k training examples for few-shot prompts: seeded, one label after another for labelled data."""
    if k <= 0 or not train:
        return []
    order = list(range(len(train)))
    random.Random(seed).shuffle(order)
    by_label: dict[str | None, list[int]] = {}
    for i in order:
        by_label.setdefault(train[i].label, []).append(i)
    queues = [by_label[key] for key in sorted(by_label, key=str)]
    chosen: list[int] = []
    while len(chosen) < min(k, len(train)):
        for queue in queues:
            if queue and len(chosen) < k:
                chosen.append(queue.pop(0))
    return [train[i] for i in chosen]


def prompt_and_reference(
    example: Example, cfg: RunConfig, tokenizer, label_names: list[str] | None, shots: Sequence[Example] = ()
) -> tuple[str, str]:
    """The generation prompt of an example (as rendered in training, after any shots) and its reference."""
    messages = _conversation(example, cfg, label_names)
    last = max(i for i, m in enumerate(messages) if m.role == "assistant")
    earlier = [m for shot in shots for m in _conversation(shot, cfg, label_names)]
    prompt_msgs: list[Message] = with_system(earlier + messages[:last], cfg.data.system_prompt)
    template = resolve_template(cfg.data.template, tokenizer)
    # A tool-calling answer's reference is its calls as the fallback writes them (docs/data.md).
    reference = flatten_tools([messages[last]], None)[0].content
    return generation_prompt(prompt_msgs, template, tokenizer, example.tools), reference


def score_by_generation(
    model, tokenizer, examples: list[Example], cfg: RunConfig, label_names: list[str] | None,
    shots: Sequence[Example] | Sequence[Sequence[Example]] = (), desc: str | None = None,
) -> dict[str, Any]:
    """Generate an answer for every example (after the few-shot examples, if any) and score it.

    `shots` is one list for every prompt, or (similar-shot selection) one list per example.
    """
    scorable = [e for e in examples if e.kind in ("labelled", "chat")]
    if not scorable:
        return {}
    per_example = bool(shots) and not isinstance(shots[0], Example)
    if per_example and len(shots) != len(scorable):
        raise ValueError(f"{len(shots)} shot lists for {len(scorable)} examples")
    pairs = [prompt_and_reference(e, cfg, tokenizer, label_names, shots[i] if per_example else shots)
             for i, e in enumerate(scorable)]
    prompts = [p for p, _ in pairs]
    references = [r for _, r in pairs]
    started = time.perf_counter()  # generate() itself switches to eval mode and back
    outputs = generate(model, tokenizer, prompts, max_new_tokens=cfg.eval.max_new_tokens,
                       batch_size=cfg.eval.batch_size, desc=desc)
    seconds = time.perf_counter() - started
    texts = [g.text for g in outputs]
    scores: dict[str, Any] = {"n": len(scorable), "seconds": seconds, "examples_per_s": len(scorable) / seconds,
                              # Answers cut by eval.max_new_tokens: "The tweet expresses a" parses as no label.
                              "n_at_token_limit": sum(g.finish_reason == "length" for g in outputs),
                              "max_new_tokens": cfg.eval.max_new_tokens}
    if label_names and all(e.kind == "labelled" for e in scorable):
        predictions = [parse_label(t, label_names) for t in texts]
        scores.update(label_scores(predictions, references, label_names, cfg))
    else:
        predictions = texts
        numeric = all("####" in r for r in references)
        scores.update(generation_metrics(texts, references, numeric=numeric))
        main = "numeric_match" if numeric else "exact_match"
        values = per_example_scores(texts, references, main)
        scores[f"{main}_ci"] = list(bootstrap_ci(lambda idx: np.asarray(values)[idx].mean(axis=1), len(values),
                                                 seed=cfg.eval.seed))
        for grader in cfg.eval.graders:  # OpenAI graders as metrics: grader_<name> with its interval
            graded = np.asarray(grader_values(grader, texts, references, cfg.model.cache_dir))
            scores[f"grader_{grader['name']}"] = float(graded.mean())
            scores[f"grader_{grader['name']}_ci"] = list(bootstrap_ci(lambda idx: graded[idx].mean(axis=1),
                                                                      len(graded), seed=cfg.eval.seed))
    scores["predictions"] = [
        {"prompt": p, "reference": r, "output": t, "parsed": pr}
        for p, r, t, pr in zip(prompts, references, texts, predictions)
    ]
    return scores


def headline_key(metric: str) -> str:
    """The scores key of an eval.metric (f1 over chosen labels is `labels_f1`)."""
    return metric if metric in ("macro_f1", "accuracy", "macro_recall") else "labels_f1"


def label_scores(predictions: list[str | None], references: list[str], label_names: list[str], cfg: RunConfig) -> dict:
    """Classification metrics with bootstrap intervals: accuracy, macro-F1, eval.metric and eval.positive_label's F1."""
    scores = classification_metrics(predictions, references, label_names)
    metrics = {"accuracy": "accuracy", "macro_f1": "macro_f1", headline_key(cfg.eval.metric): cfg.eval.metric}
    positive = cfg.eval.positive_label
    if positive is not None:
        if positive not in label_names:
            raise ValueError(f"eval.positive_label {positive!r} is not one of the labels {label_names}")
        metrics["positive_f1"] = f"f1:{positive}"
    for key, metric in metrics.items():
        try:
            value, low, high = metric_with_ci(predictions, references, label_names, metric=metric, seed=cfg.eval.seed)
        except ValueError as err:
            raise ValueError(f"eval.metric: {err}") from None
        scores[key], scores[f"{key}_ci"] = value, [low, high]
    return scores


def _cell(scores: dict[str, Any], metric: str) -> str:
    if metric not in scores:
        return "-"
    ci = scores.get(f"{metric}_ci")
    value = scores[metric]
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{value:.3f}"


def comparison_table(systems: dict[str, dict[str, Any]]) -> str:
    """A markdown table with one row per system and its main metrics (95 % intervals in brackets)."""
    names = ("accuracy", "macro_f1", "macro_recall", "labels_f1", "positive_f1", "score_accuracy", "score_margin",
             "implicit_reward_accuracy", "implicit_reward_margin", "logp_accuracy", "logp_margin", "numeric_match",
             "exact_match", "bleu", "chrf", "rougeL", "n_unparsed", "n_at_token_limit", "test_loss", "test_perplexity")
    metrics = [m for m in names if any(m in s for s in systems.values())]
    metrics += sorted({k for s in systems.values() for k in s if k.startswith("grader_") and not k.endswith("_ci")})
    header = "| system | " + " | ".join(metrics) + " |"
    rule = "|---|" + "---|" * len(metrics)
    rows = [f"| {name} | " + " | ".join(_cell(s, m) if not m.startswith("n_") else str(s.get(m, "-")) for m in metrics) + " |"
            for name, s in systems.items()]
    return "\n".join([header, rule, *rows])
