"""The evaluation suite shared by `lmtune train` (at the end of a run) and `lmtune eval`.

    baselines, general = baseline_scores(base_model, tokenizer, data, "test", cfg, objective, accelerator)
    tuned = split_scores(model, tokenizer, data, "test", cfg, objective, accelerator)
    write_comparison(out_dir, {**baselines, "fine-tuned": tuned}, data, "test", cfg, forgetting, print)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from lmtune.config import RunConfig
from lmtune.evaluate.compare import comparison_table, score_by_generation, select_shots
from lmtune.evaluate.forgetting import general_text_loss
from lmtune.evaluate.report import write_report
from lmtune.evaluate.significance import versus_baselines
from lmtune.train.validation import evaluate_loss

Echo = Callable[[str], None]


def write_json(path: Path, value: Any) -> None:
    """Pretty JSON, with anything unusual written as its string."""
    path.write_text(json.dumps(value, indent=2, default=str))


def answers_generated(data, split: str) -> bool:
    """Whether the split's examples have answers to generate (labelled or chat), not just text."""
    return any(e.kind in ("labelled", "chat") for e in data.examples.get(split) or [])


def split_scores(model, tokenizer, data, split: str, cfg: RunConfig, objective, accelerator, shots=()) -> dict:
    """Generation metrics for tasks with answers; loss and perplexity for raw text."""
    examples = data.examples.get(split) or []
    scores: dict[str, Any] = {}
    if answers_generated(data, split):
        if accelerator.is_main_process:
            scores.update(score_by_generation(model, tokenizer, examples, cfg, data.label_names, shots))
    elif data.encoded.get(split):
        loss = evaluate_loss(model, data.encoded[split], objective, cfg.training.batch_size, accelerator)
        scores.update({k.replace("eval_", "test_"): v for k, v in loss.items()})
    return scores


def baseline_scores(model, tokenizer, data, split: str, cfg: RunConfig, objective, accelerator, echo: Echo = print):
    """(prompt-only baselines of the base model: zero-shot and k-shot, its loss on general text or None)."""
    echo(f"scoring the base model on {len(data.examples.get(split) or [])} {split} examples ...")
    baselines = {"base zero-shot": split_scores(model, tokenizer, data, split, cfg, objective, accelerator)}
    shots = select_shots(data.examples["train"], cfg.eval.few_shot, cfg.eval.seed)
    if shots and answers_generated(data, split):
        echo(f"scoring the base model with {len(shots)} training examples in the prompt ...")
        baselines[f"base {len(shots)}-shot"] = split_scores(model, tokenizer, data, split, cfg, objective,
                                                            accelerator, shots)
    general = None
    if cfg.eval.forgetting_blocks and accelerator.is_main_process:
        general = general_text_loss(model, tokenizer, max_blocks=cfg.eval.forgetting_blocks)
    return baselines, general


def _without_predictions(scores: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in scores.items() if k != "predictions"}


def write_comparison(out_dir: Path, systems: dict[str, dict[str, Any]], data, split: str, cfg: RunConfig,
                     forgetting: dict[str, Any] | None, echo: Echo = print) -> dict[str, Any]:
    """Print the comparison table; write eval.json, predictions.jsonl and the report (md and html)."""
    table = comparison_table(systems)
    echo("\n" + table + "\n")
    names = list(systems)
    predictions = [
        {"prompt": row[-1]["prompt"], "reference": row[0]["reference"],
         "outputs": {n: r["output"] for n, r in zip(names, row)},
         "parsed": {n: r["parsed"] for n, r in zip(names, row)}}
        for row in zip(*(systems[n].get("predictions", []) for n in names))
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "predictions.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(p) + "\n" for p in predictions)
    scores = {name: _without_predictions(s) for name, s in systems.items()}
    task = "classification" if any("macro_f1" in s for s in scores.values()) else (
        "generation" if predictions else "lm")
    evaluation = {"task": task, "split": split, "n": len(data.examples.get(split) or []), "systems": scores,
                  "significance": versus_baselines(systems, data.label_names, cfg.eval.seed)}
    if forgetting:
        evaluation["forgetting"] = forgetting
    for pair, test in evaluation["significance"].items():
        echo(f"{pair}: p = {test['p_value']:.3g} ({test['test']})")
    write_json(out_dir / "eval.json", {**evaluation, "table": table})
    _, html = write_report(out_dir, evaluation, data.manifest, predictions)
    echo(f"report: {html}")
    return evaluation
