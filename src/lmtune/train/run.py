"""`lmtune train`: prepare data -> load model -> apply the method -> fit -> save -> compare with the base.

    run_dir = run_training(load_config("configs/demo.yaml"))

Everything a run produces lands in its folder: config.yaml, manifest.json, metrics.jsonl,
checkpoints/, final/, loss.png, eval.json, predictions.jsonl and lmtune.json (the lineage).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list

from lmtune.config import RunConfig, dump_config
from lmtune.data.prepare import manifest_summary, prepare_data
from lmtune.evaluate.compare import comparison_table, score_by_generation, select_shots
from lmtune.evaluate.forgetting import forgetting_report, general_text_loss
from lmtune.evaluate.report import write_report
from lmtune.evaluate.significance import versus_baselines
from lmtune.model.adapters import apply_peft
from lmtune.model.export import save_model
from lmtune.model.load import describe_model, load_model, load_tokenizer, weights_hash
from lmtune.runs import config_hash, find_resume_point, lineage_base, new_run_dir, run_config, write_lineage
from lmtune.train.hardware import make_accelerator, resolve_precision
from lmtune.train.loop import fit
from lmtune.train.metrics_log import plot_losses
from lmtune.train.objectives import build_objective
from lmtune.train.validation import evaluate_loss

Echo = Callable[[str], None]


def _start(cfg: RunConfig, resume: str | None, echo: Echo) -> tuple[RunConfig, Path, Path | None]:
    """Pick the run folder (new, or the one being resumed) on the main process and share it."""
    state = PartialState(cpu=not torch.cuda.is_available())
    checkpoint = None
    if resume is not None:
        run_dir, checkpoint = find_resume_point(cfg, resume)
        saved = run_config(run_dir)
        if config_hash(saved) != config_hash(cfg):
            echo(f"resuming with the config saved in {run_dir / 'config.yaml'} (it differs from the one given)")
        cfg = saved
    elif state.is_main_process:
        run_dir = new_run_dir(cfg)
        (run_dir / "config.yaml").write_text(dump_config(cfg))
    else:
        run_dir = None
    run_dir = Path(broadcast_object_list([str(run_dir)])[0]) if state.num_processes > 1 else run_dir
    return cfg, run_dir, checkpoint


def _json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, default=str))


def _answers_generated(data) -> bool:
    return any(e.kind in ("labelled", "chat") for e in data.examples.get("test") or [])


def _test_scores(model, tokenizer, data, cfg: RunConfig, objective, accelerator, shots=()) -> dict[str, Any]:
    """Generation metrics for tasks with answers; test loss and perplexity for raw text."""
    examples = data.examples.get("test") or []
    scores: dict[str, Any] = {}
    if _answers_generated(data):
        if accelerator.is_main_process:
            scores.update(score_by_generation(model, tokenizer, examples, cfg, data.label_names, shots))
    elif data.encoded.get("test"):
        loss = evaluate_loss(model, data.encoded["test"], objective, cfg.training.batch_size, accelerator)
        scores.update({k.replace("eval_", "test_"): v for k, v in loss.items()})
    return scores


def _without_predictions(scores: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in scores.items() if k != "predictions"}


def _write_comparison(run_dir: Path, systems: dict[str, dict[str, Any]], data, cfg: RunConfig,
                      forgetting: dict[str, Any] | None, echo: Echo) -> dict[str, Any]:
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
    with open(run_dir / "predictions.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(p) + "\n" for p in predictions)
    scores = {name: _without_predictions(s) for name, s in systems.items()}
    task = "classification" if any("macro_f1" in s for s in scores.values()) else (
        "generation" if predictions else "lm")
    evaluation = {"task": task, "split": "test", "n": len(data.examples.get("test") or []), "systems": scores,
                  "significance": versus_baselines(systems, data.label_names, cfg.eval.seed)}
    if forgetting:
        evaluation["forgetting"] = forgetting
    for pair, test in evaluation["significance"].items():
        echo(f"{pair}: p = {test['p_value']:.3g} ({test['test']})")
    _json(run_dir / "eval.json", {**evaluation, "table": table})
    _, html = write_report(run_dir, evaluation, data.manifest, predictions)
    echo(f"report: {html}")
    return evaluation


def run_training(cfg: RunConfig, resume: str | None = None, echo: Echo = print) -> Path:
    """Run the whole fine-tuning pipeline and return the run folder."""
    started = time.time()
    cfg, run_dir, checkpoint = _start(cfg, resume, echo)
    accelerator = make_accelerator(cfg.training, run_dir)
    main = accelerator.is_main_process
    echo(f"run folder: {run_dir}")

    tokenizer = load_tokenizer(cfg.model)
    data = prepare_data(cfg, tokenizer)
    echo(manifest_summary(data.manifest) + ("  (from cache)" if data.from_cache else ""))
    if main:
        _json(run_dir / "manifest.json", data.manifest)

    model, tokenizer = load_model(cfg.model)
    objective = build_objective(cfg, tokenizer)
    if main:
        write_lineage(run_dir, lineage_base(cfg, data.manifest, weights_hash(model)))
    evaluating = cfg.eval.at_end and bool(data.examples.get("test"))
    base_file = run_dir / "base_eval.json"
    baselines: dict[str, dict[str, Any]] = {}
    if evaluating:  # before any adapter exists: the base model exactly as the user would get it
        if base_file.exists():
            baselines = json.loads(base_file.read_text())
        else:
            echo(f"scoring the base model on {len(data.examples['test'])} test examples ...")
            baselines["base zero-shot"] = _test_scores(model, tokenizer, data, cfg, objective, accelerator)
            shots = select_shots(data.examples["train"], cfg.eval.few_shot, cfg.eval.seed)
            if shots and _answers_generated(data):
                echo(f"scoring the base model with {len(shots)} training examples in the prompt ...")
                baselines[f"base {len(shots)}-shot"] = _test_scores(model, tokenizer, data, cfg, objective,
                                                                    accelerator, shots)
            if cfg.eval.forgetting_blocks and main:
                baselines["_general_text"] = general_text_loss(model, tokenizer, max_blocks=cfg.eval.forgetting_blocks)
            if main:
                _json(base_file, baselines)
        general_before = baselines.pop("_general_text", None)

    torch.manual_seed(cfg.training.seed)  # adapter (and any new head) initialisation follows the run's seed
    model = apply_peft(model, cfg.method, cfg.lora, gradient_checkpointing=cfg.training.gradient_checkpointing)
    shape = describe_model(model)
    echo(f"training {shape['trainable_parameters']:,} of {shape['parameters']:,} parameters "
         f"({cfg.method.task}, peft={cfg.method.peft}, precision={resolve_precision(cfg.training.precision)})")
    result = fit(model, data.encoded["train"], data.encoded.get("validation") or [], objective, cfg.training,
                 run_dir, accelerator=accelerator, resume=checkpoint)

    summary: dict[str, Any] = {
        "steps": result.steps,
        "stopped_early": result.stopped_early,
        "best_step": result.best_step,
        "best_metric": result.best_metric,
        "train_loss": result.train_losses[-1] if result.train_losses else None,
        "validation": result.evals[-1] if result.evals else {},
        "tokens_per_s": result.tokens_per_s,
        "supervised_tokens_per_s": result.supervised_tokens_per_s,
        "peak_memory_mb": result.peak_memory_mb,
        "train_seconds": result.train_seconds,
    }
    if main:
        save_model(accelerator.unwrap_model(model), tokenizer, run_dir / "final", base_cfg=cfg.model)
        if (run_dir / "metrics.jsonl").exists():
            plot_losses(run_dir / "metrics.jsonl", run_dir / "loss.png")
    if evaluating:
        echo("scoring the fine-tuned model on the test split ...")
        tuned_scores = _test_scores(accelerator.unwrap_model(model), tokenizer, data, cfg, objective, accelerator)
        if main:
            forgetting = None
            if general_before:
                after = general_text_loss(accelerator.unwrap_model(model), tokenizer,
                                          max_blocks=cfg.eval.forgetting_blocks)
                forgetting = forgetting_report(general_before, after)
            systems = {**baselines, "fine-tuned": tuned_scores}
            summary["test"] = _write_comparison(run_dir, systems, data, cfg, forgetting, echo)
    if main:
        summary["wall_seconds"] = time.time() - started
        write_lineage(run_dir, {"result": summary, "model": shape, "final": str(run_dir / "final")})
        echo(f"done in {summary['wall_seconds']:.0f} s: {run_dir / 'final'}")
    accelerator.end_training()
    return run_dir
