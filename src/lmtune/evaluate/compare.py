"""Score a model on the test split by generation, so base and fine-tuned models compare on one scale.

Labelled data is answered by generation and parsed back into a label (accuracy, macro-F1 with a
bootstrap interval); chat data is scored by normalised exact match of the final answer.

    scores = score_by_generation(model, tokenizer, test_examples, cfg, label_names)
    print(comparison_table({"base": base_scores, "fine-tuned": scores}))
"""

from __future__ import annotations

import re
import time
import unicodedata
from typing import Any

from lmtune.config import RunConfig
from lmtune.data.encode import label_chat, with_system
from lmtune.data.records import Example, Message
from lmtune.data.templates import generation_prompt, resolve_template
from lmtune.evaluate.generate import generate
from lmtune.evaluate.labels import parse_label
from lmtune.evaluate.metrics import classification_metrics, metric_with_ci


def prompt_and_reference(example: Example, cfg: RunConfig, tokenizer, label_names: list[str] | None) -> tuple[str, str]:
    """The generation prompt of an example (as rendered in training) and its reference answer."""
    if example.kind == "labelled":
        messages = label_chat(example, cfg.data, label_names or [])
    elif example.kind == "chat":
        messages = list(example.messages)
    else:
        raise ValueError(f"{example.kind} examples have no answer to generate")
    last = max(i for i, m in enumerate(messages) if m.role == "assistant")
    prompt_msgs: list[Message] = with_system(messages[:last], cfg.data.system_prompt)
    template = resolve_template(cfg.data.template, tokenizer)
    return generation_prompt(prompt_msgs, template, tokenizer), messages[last].content


def normalise_answer(text: str) -> str:
    """Lowercase, NFKC, no surrounding punctuation, single spaces: for exact match."""
    text = unicodedata.normalize("NFKC", text).lower().strip()
    text = re.sub(r"\s+", " ", text)
    return text.strip(" .,!?;:'\"`*")


def score_by_generation(
    model, tokenizer, examples: list[Example], cfg: RunConfig, label_names: list[str] | None
) -> dict[str, Any]:
    """Generate an answer for every example and score it against the reference."""
    scorable = [e for e in examples if e.kind in ("labelled", "chat")]
    if not scorable:
        return {}
    pairs = [prompt_and_reference(e, cfg, tokenizer, label_names) for e in scorable]
    prompts = [p for p, _ in pairs]
    references = [r for _, r in pairs]
    was_training = model.training
    model.eval()
    started = time.perf_counter()
    outputs = generate(model, tokenizer, prompts, max_new_tokens=cfg.eval.max_new_tokens, batch_size=cfg.eval.batch_size)
    seconds = time.perf_counter() - started
    if was_training:
        model.train()
    texts = [g.text for g in outputs]
    scores: dict[str, Any] = {"n": len(scorable), "seconds": seconds, "examples_per_s": len(scorable) / seconds}
    if label_names and all(e.kind == "labelled" for e in scorable):
        predictions = [parse_label(t, label_names) for t in texts]
        scores.update(classification_metrics(predictions, references, label_names))
        for metric in ("accuracy", "macro_f1"):
            _, low, high = metric_with_ci(predictions, references, label_names, metric=metric)
            scores[f"{metric}_ci"] = [low, high]
    else:
        predictions = texts
        hits = [normalise_answer(t) == normalise_answer(r) for t, r in zip(texts, references)]
        scores["exact_match"] = sum(hits) / len(hits)
    scores["predictions"] = [
        {"prompt": p, "reference": r, "output": t, "parsed": pr}
        for p, r, t, pr in zip(prompts, references, texts, predictions)
    ]
    return scores


def _cell(scores: dict[str, Any], metric: str) -> str:
    if metric not in scores:
        return "-"
    ci = scores.get(f"{metric}_ci")
    value = scores[metric]
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{value:.3f}"


def comparison_table(systems: dict[str, dict[str, Any]]) -> str:
    """A markdown table with one row per system and its main metrics (95 % intervals in brackets)."""
    names = ("accuracy", "macro_f1", "exact_match", "n_unparsed", "test_loss", "test_perplexity")
    metrics = [m for m in names if any(m in s for s in systems.values())]
    header = "| system | " + " | ".join(metrics) + " |"
    rule = "|---|" + "---|" * len(metrics)
    rows = [f"| {name} | " + " | ".join(_cell(s, m) if m != "n_unparsed" else str(s.get(m, "-")) for m in metrics) + " |"
            for name, s in systems.items()]
    return "\n".join([header, rule, *rows])
