"""`lmtune train`: prepare data -> baselines -> apply the method -> fit -> save -> compare with the base.

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

from lmtune.config import RunConfig
from lmtune.config_file import dump_config
from lmtune.data.prepare import manifest_summary, prepare_data
from lmtune.graders.items import with_chat_files
from lmtune.evaluate.suite import check_eval_labels, prompt_baselines, write_json
from lmtune.model.adapters import apply_peft
from lmtune.model.export import save_model
from lmtune.model.load import describe_model, load_model, load_tokenizer, weights_hash
from lmtune.pipeline.comparison import compare_with_base
from lmtune.runs import config_hash, find_resume_point, lineage_base, new_run_dir, run_config, write_lineage
from lmtune.train.hardware import make_accelerator, resolve_precision
from lmtune.train.loop import StepCallback, fit
from lmtune.train.methods import method_of, training_items
from lmtune.train.metrics_log import plot_losses, plot_metric

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


def run_training(cfg: RunConfig, resume: str | None = None, echo: Echo = print,
                 on_step: StepCallback | None = None) -> Path:
    """Run the whole fine-tuning pipeline and return the run folder (on_step: as fit's)."""
    started = time.time()
    method = method_of(cfg)  # settings the method cannot honour fail here, before a run folder exists
    cfg, run_dir, checkpoint = _start(cfg, resume, echo)
    accelerator = make_accelerator(cfg.training, run_dir)
    main = accelerator.is_main_process
    echo(f"run folder: {run_dir}")

    tokenizer = load_tokenizer(cfg.model)
    cfg = with_chat_files(cfg, method.grader(cfg), run_dir / "graded_data")  # OpenAI reinforcement files when a grader rewards
    data = prepare_data(cfg, tokenizer, encoding=method.encoding)
    echo(manifest_summary(data.manifest) + ("  (from cache)" if data.from_cache else ""))
    check_eval_labels(cfg, data.label_names)
    if main:
        write_json(run_dir / "manifest.json", data.manifest)

    model, tokenizer = load_model(cfg.model, method.head, method.outputs(data))
    if method.head == "sequence_classification" and data.label_names:
        # Saved in config.json with the model, so predictions come back as names.
        model.config.id2label = dict(enumerate(data.label_names))
        model.config.label2id = {name: i for i, name in enumerate(data.label_names)}
    objective = method.build(cfg, tokenizer, data, model)
    if main:
        write_lineage(run_dir, lineage_base(cfg, data.manifest, weights_hash(model)))
    evaluating = cfg.eval.at_end and bool(data.examples.get("test"))
    base_file = run_dir / "base_eval.json"
    baselines: dict[str, dict[str, Any]] = {}
    general_before = None
    if evaluating:  # before any adapter exists: the base model exactly as the user would get it
        if base_file.exists():
            saved = json.loads(base_file.read_text())
            baselines, general_before = saved["systems"], saved.get("general_text")
        else:
            # A classification head's baseline is a prompted LM (loaded there); a reward model's is its untrained head.
            lm = (None, None) if method.baseline == "prompted_lm" else (model, tokenizer)
            baselines, general_before = prompt_baselines(cfg, data, "test", objective, accelerator, *lm, echo=echo)
            if main:
                write_json(base_file, {"systems": baselines, "general_text": general_before})

    torch.manual_seed(cfg.training.seed)  # adapter (and any new head) initialisation follows the run's seed
    model = apply_peft(model, cfg.method, cfg.lora, method.head,
                       gradient_checkpointing=cfg.training.gradient_checkpointing)
    shape = describe_model(model)
    echo(f"training {shape['trainable_parameters']:,} of {shape['parameters']:,} parameters "
         f"({cfg.method.task}, peft={cfg.method.peft}, precision={resolve_precision(cfg.training.precision)})")
    result = fit(model, training_items(cfg, data, "train"), training_items(cfg, data, "validation"), objective,
                 cfg.training, run_dir, accelerator=accelerator, resume=checkpoint, on_step=on_step)

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
            for plot in method.plots:
                plot_metric(run_dir / "metrics.jsonl", plot.metric, run_dir / plot.file, plot.label, plot.also(cfg))
    if evaluating:
        summary["test"] = compare_with_base(run_dir, baselines, general_before, accelerator.unwrap_model(model),
                                            tokenizer, data, "test", cfg, objective, accelerator, echo)
    if main:
        summary["wall_seconds"] = time.time() - started
        write_lineage(run_dir, {"result": summary, "model": shape, "final": str(run_dir / "final")})
        echo(f"done in {summary['wall_seconds']:.0f} s: {run_dir / 'final'}")
    accelerator.end_training()
    return run_dir
