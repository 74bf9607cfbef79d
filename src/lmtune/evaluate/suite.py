"""The evaluation suite shared by `lmtune train` (at the end of a run) and `lmtune eval`.

    baselines, general = prompt_baselines(cfg, data, "test", objective, accelerator, model, tokenizer)
    tuned = split_scores(model, tokenizer, data, "test", cfg, objective, accelerator)
    write_comparison(out_dir, {**baselines, "fine-tuned": tuned}, data, "test", cfg, forgetting, print)

The prompt-only baselines are always a causal LM: the run's own base model, or for a classification
head on an encoder the `eval.baseline_model` (default SmolLM2). It answers by generation and, on
labelled data, by label-constrained scoring (prompt_search.py), as eval.baselines asks. They depend
only on that model, the evaluated, validation and training examples and the prompt settings, so they
are cached under `<data.cache_dir or model.cache_dir>/baselines/` and a second run on the same data does not score
them again. A causal LM fine-tuned on labelled data is scored both ways too, side by side.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from lmtune.config import ModelConfig, RunConfig
from lmtune.data.prepare import fingerprint
from lmtune.evaluate.compare import comparison_table, headline_key, score_by_generation, select_shots
from lmtune.evaluate.forgetting import general_text_loss
from lmtune.evaluate.head import score_by_head
from lmtune.evaluate.metrics import metric_statistic
from lmtune.evaluate.pairs import score_pairs
from lmtune.evaluate.prompt_search import constrained_baselines, fine_tuned_constrained, labelled_examples
from lmtune.evaluate.similar_shots import similar_shots
from lmtune.model.load import can_generate, load_model, source_identity
from lmtune.train.methods import PROMPTED_BASELINE, method_of
from lmtune.evaluate.report import write_report
from lmtune.evaluate.significance import versus_baselines
from lmtune.train.validation import evaluate_loss

Echo = Callable[[str], None]


def write_json(path: Path, value: Any) -> None:
    """Pretty JSON, with anything unusual written as its string."""
    path.write_text(json.dumps(value, indent=2, default=str))


def check_eval_labels(cfg: RunConfig, label_names: list[str] | None) -> None:
    """Fail before any training when eval.metric or eval.positive_label names a label the data lacks."""
    if not label_names:
        return
    if cfg.eval.positive_label is not None and cfg.eval.positive_label not in label_names:
        raise ValueError(f"eval.positive_label {cfg.eval.positive_label!r} is not one of the labels {label_names}")
    try:
        metric_statistic(cfg.eval.metric, label_names)
    except ValueError as err:
        raise ValueError(f"eval.metric: {err}") from None


def answers_generated(data, split: str) -> bool:
    """Whether the split's examples have answers to generate (labelled or chat), not just text."""
    return any(e.kind in ("labelled", "chat") for e in data.examples.get(split) or [])


def split_scores(model, tokenizer, data, split: str, cfg: RunConfig, objective, accelerator, shots=(),
                 desc: str | None = None) -> dict:
    """Head predictions for classification; generation metrics for answers; loss and perplexity for raw text."""
    examples = data.examples.get(split) or []
    scores: dict[str, Any] = {}
    evaluation = method_of(cfg).evaluation
    if objective is not None and evaluation == "pairs":  # reward model, DPO: held-out pairs
        if accelerator.is_main_process and data.encoded.get(split):
            scores.update(score_pairs(model, data.encoded[split], objective, cfg.training.batch_size, cfg.eval.seed))
    elif evaluation == "head":
        if accelerator.is_main_process:
            scores.update(score_by_head(model, tokenizer, examples, data.encoded[split], data.label_names, cfg, desc))
    elif answers_generated(data, split):
        if accelerator.is_main_process:
            scores.update(score_by_generation(model, tokenizer, examples, cfg, data.label_names, shots, desc))
    elif data.encoded.get(split):
        loss = evaluate_loss(model, data.encoded[split], objective, cfg.training.batch_size, accelerator)
        scores.update({k.replace("eval_", "test_"): v for k, v in loss.items()})
    return scores


def baseline_scores(model, tokenizer, data, split: str, cfg: RunConfig, objective, accelerator, echo: Echo = print):
    """(prompt-only baselines of the base model as eval.baselines asks, its loss on general text or None).

    Generated: zero-shot and k-shot answers; constrained (labelled data): the label scores of
    prompt_search.constrained_baselines. Pairs and raw text get their own baseline whenever any is asked.
    """
    n = len(data.examples.get(split) or [])
    baselines: dict[str, dict[str, Any]] = {}
    constrained = "constrained" in cfg.eval.baselines and bool(labelled_examples(data, split))
    generated = "generated" in cfg.eval.baselines or (bool(cfg.eval.baselines) and not labelled_examples(data, split))
    pairs = objective is not None and method_of(cfg).evaluation == "pairs"
    if generated:
        echo(f"scoring the base model on {n} {split} examples ...")
        name = "base" if pairs else "base zero-shot"
        baselines[name] = split_scores(model, tokenizer, data, split, cfg, objective, accelerator, desc=name)
        shots = baseline_shots(data, split, cfg)
        if shots and answers_generated(data, split):
            k = min(cfg.eval.few_shot, len(data.examples["train"]))
            name = f"base {k}-shot" + (", similar shots" if cfg.eval.shot_selection == "similar" else "")
            echo(f"scoring the base model with {k} training examples in the prompt ...")
            baselines[name] = split_scores(model, tokenizer, data, split, cfg, objective, accelerator, shots, desc=name)
    if constrained and accelerator.is_main_process:
        echo(f"scoring the base model's label log-likelihoods on {n} {split} examples ...")
        baselines.update(constrained_baselines(model, tokenizer, data, split, cfg, echo))
    general = None
    if cfg.eval.forgetting_blocks and accelerator.is_main_process:
        general = general_text_loss(model, tokenizer, max_blocks=cfg.eval.forgetting_blocks,
                                    desc="general text (forgetting)")
    return baselines, general


def baseline_shots(data, split: str, cfg: RunConfig) -> list:
    """The generated k-shot baseline's shots: one list for all prompts, or one per example (similar)."""
    train = data.examples.get("train") or []
    if cfg.eval.shot_selection == "similar" and cfg.eval.few_shot and train:
        examples = [e for e in data.examples.get(split) or [] if e.kind in ("labelled", "chat")]
        return similar_shots(train, examples, cfg.eval.few_shot, cfg.model.cache_dir)
    return select_shots(train, cfg.eval.few_shot, cfg.eval.seed)


BASELINE_CACHE_VERSION = "2"  # 2: constrained baselines and the prompt search


def baseline_model_config(cfg: RunConfig) -> ModelConfig:
    """The causal LM whose prompted answers are the baselines (the run's own model unless it is an encoder)."""
    if method_of(cfg).baseline != "prompted_lm":
        return cfg.model
    name = cfg.eval.baseline_model
    if name is None:
        name = cfg.model.name if can_generate(cfg.model) else ModelConfig().name
    own = name == cfg.model.name
    return cfg.model.model_copy(update={"name": name, "from_config": cfg.model.from_config if own else None})


def baseline_config(cfg: RunConfig) -> RunConfig:
    """The run's config as the baselines see it: its baseline LM, answering by generation."""
    method = method_of(cfg)
    if method.head == "causal_lm":
        return cfg
    if method.baseline != "prompted_lm":  # a reward model: its own untrained head, no general-text loss
        return cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"forgetting_blocks": 0})})
    # A head model's backbone is not scored on general text: forgetting is a causal-LM measure.
    return cfg.model_copy(update={"model": baseline_model_config(cfg),
                                  "method": cfg.method.model_copy(update={"task": PROMPTED_BASELINE.name}),
                                  "eval": cfg.eval.model_copy(update={"forgetting_blocks": 0})})


def baseline_cache_file(cfg: RunConfig, data, split: str) -> Path | None:
    """Where the baselines of this (model, examples, prompt settings) are cached; None if uncacheable."""
    identity = source_identity(cfg.model)
    if identity is None:
        return None
    # Of the method only what changes the base's scores: the task (and for pairs its section: DPO's beta scales
    # its rewards); LoRA or not, class weights and the like act on training only.
    record = method_of(cfg)
    section = record.config_section if record.evaluation == "pairs" else None
    method = [cfg.method.task, getattr(cfg.method, section).model_dump(mode="json") if section else None]
    payload = [BASELINE_CACHE_VERSION, identity, cfg.model.model_dump(mode="json"), method,
               cfg.eval.model_dump(mode="json", exclude={"at_end", "baseline_model"}),
               cfg.data.model_dump(mode="json",
                                   include={"template", "system_prompt", "instruction", "context",
                                            "normalize_whitespace"}),
               data.label_names, split, fingerprint(data.examples.get(split) or []),
               # The prompt search chooses on validation; similar shots may come from anywhere in train.
               fingerprint(data.examples.get("validation") or []), fingerprint(data.examples.get("train") or [])
               if cfg.eval.shot_selection == "similar" else None,
               fingerprint(select_shots(data.examples.get("train") or [], cfg.eval.few_shot, cfg.eval.seed))]
    key = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode("utf-8")).hexdigest()
    return cfg.data_cache() / "baselines" / f"{key}.json"


def prompt_baselines(cfg: RunConfig, data, split: str, objective, accelerator, model=None, tokenizer=None,
                     echo: Echo = print) -> tuple[dict[str, dict[str, Any]], dict | None]:
    """(zero/k-shot baselines, base loss on general text), from the cache when scored before.

    `model` is the already loaded base of a causal-LM run; a classification run loads its baseline LM here.
    """
    base_cfg = baseline_config(cfg)
    if not cfg.eval.baselines and not base_cfg.eval.forgetting_blocks:
        return {}, None
    cache = baseline_cache_file(base_cfg, data, split)
    if cache is not None and cache.is_file():
        saved = json.loads(cache.read_text(encoding="utf-8"))
        echo(f"prompt baselines of {base_cfg.model.name} from the cache ({cache.name[:12]})")
        return saved["systems"], saved.get("general_text")
    if model is None or method_of(cfg).baseline == "prompted_lm":
        echo(f"loading {base_cfg.model.name} for the prompt-only baselines ...")
        base_method = method_of(base_cfg)
        model, tokenizer = load_model(base_cfg.model, base_method.head, base_method.outputs(data))
    baselines, general = baseline_scores(model, tokenizer, data, split, base_cfg, objective, accelerator, echo)
    if cache is not None and accelerator.is_main_process:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        write_json(tmp, {"model": base_cfg.model.name, "systems": baselines, "general_text": general})
        tmp.replace(cache)  # readers never see half a file
    return baselines, general


def fine_tuned_scores(model, tokenizer, data, split: str, cfg: RunConfig, objective, accelerator) -> dict[str, dict]:
    """The fine-tuned system(s): as trained (head, generation, loss) and, for a causal LM on labelled
    data, under the baselines' constrained scoring as well."""
    systems: dict[str, dict[str, Any]] = {}
    if method_of(cfg).head == "causal_lm" and labelled_examples(data, split) and accelerator.is_main_process:
        systems["fine-tuned, constrained"] = fine_tuned_constrained(model, tokenizer, data, split, cfg)
    systems["fine-tuned"] = split_scores(model, tokenizer, data, split, cfg, objective, accelerator, desc="fine-tuned")
    return systems


CONSTRAINED = ", constrained"


def side_by_side(systems: dict[str, dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Generated and constrained scores of the same prompt (zero-shot, k-shot, fine-tuned) on one row."""
    rows = []
    for name, scores in systems.items():
        other = systems.get(name + CONSTRAINED)
        if other is not None and key in scores and key in other:
            rows.append({"system": name, "metric": key,
                         "generated": scores[key], "generated_ci": scores.get(f"{key}_ci"),
                         "n_unparsed": scores.get("n_unparsed"), "n_at_token_limit": scores.get("n_at_token_limit"),
                         "constrained": other[key], "constrained_ci": other.get(f"{key}_ci")})
    return rows


def side_by_side_table(rows: list[dict[str, Any]]) -> str:
    """The side-by-side rows as a markdown table ("" when there are none)."""
    if not rows:
        return ""
    cell = lambda v, ci: "-" if v is None else f"{v:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")  # noqa: E731
    metric = rows[0]["metric"]
    lines = [f"| prompt | {metric}, generated | unparsed | at token limit | {metric}, constrained |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['system']} | {cell(r['generated'], r['generated_ci'])} | {r['n_unparsed']} | "
              f"{r['n_at_token_limit'] if r['n_at_token_limit'] is not None else '-'} | "
              f"{cell(r['constrained'], r['constrained_ci'])} |" for r in rows]
    return "\n".join(lines)


def _without_predictions(scores: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in scores.items() if k != "predictions"}


def write_comparison(out_dir: Path, systems: dict[str, dict[str, Any]], data, split: str, cfg: RunConfig,
                     forgetting: dict[str, Any] | None, echo: Echo = print) -> dict[str, Any]:
    """Print the comparison table; write eval.json, predictions.jsonl and the report (md and html)."""
    table = comparison_table(systems)
    key = headline_key(cfg.eval.metric)
    pairs = side_by_side(systems, key)
    echo("\n" + table + "\n" + (f"\ngenerated vs constrained answers:\n{side_by_side_table(pairs)}\n" if pairs else ""))
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
        "generation" if predictions else "preference" if method_of(cfg).evaluation == "pairs" else "lm")
    evaluation = {"task": task, "method": cfg.method.task, "baseline_model": baseline_model_config(cfg).name,
                  "split": split, "n": len(data.examples.get(split) or []), "systems": scores,
                  "significance": versus_baselines(systems, data.label_names, cfg.eval.seed)}
    if task == "classification":
        evaluation.update(metric=cfg.eval.metric, metric_key=key, side_by_side=pairs)
    if forgetting:
        evaluation["forgetting"] = forgetting
    for pair, test in evaluation["significance"].items():
        echo(f"{pair}: p = {test['p_value']:.3g} ({test['test']})")
    write_json(out_dir / "eval.json", {**evaluation, "table": table})
    _, html = write_report(out_dir, evaluation, data.manifest, predictions)
    echo(f"report: {html}")
    return evaluation
