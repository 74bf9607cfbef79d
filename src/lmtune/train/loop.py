"""The one training loop: every method (SFT now; classification, reward, DPO, RL later) runs here.

    result = fit(model, train_set, eval_set, objective, cfg.training, out_dir)

Per optimizer step: take this process's micro-batches from the deterministic plan, divide each
micro-batch's summed loss by the *global* number of loss units of the whole step (so accumulation and
data parallelism equal one large batch), backward, clip, step. Evaluate every `eval_every` steps,
keep the best weights, stop early on a plateau, and checkpoint atomically so `resume` continues
exactly where a run stopped.
"""

from __future__ import annotations

import math
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from tqdm.auto import tqdm

from lmtune.config import TrainingConfig
from lmtune.model.lora_speed import input_casts_off, tuner_layers
from lmtune.train import checkpoint as ckpt
from lmtune.train.compile import compile_blocks, uncompile
from lmtune.train.hardware import make_accelerator, peak_memory_mb, store_frozen_weights
from lmtune.train.kernels import liger_kernels, packed_attention, resolve_packed_attention, use_liger
from lmtune.train.metrics_log import MetricsLog, truncate_metrics
from lmtune.train.objectives import Objective
from lmtune.train.optim import build_optimizer, build_scheduler
from lmtune.train.schedule import BatchPlan, total_steps
from lmtune.train.validation import evaluate_loss, to_device

StepCallback = Callable[[int, dict[str, Any]], None]


@dataclass
class FitResult:
    """What a training run produced, beside the files it wrote."""

    steps: int
    total_steps: int
    train_losses: list[float] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    best_step: int | None = None
    best_metric: float | None = None
    stopped_early: bool = False
    tokens_per_s: float = 0.0
    supervised_tokens_per_s: float = 0.0
    peak_memory_mb: float = 0.0
    train_seconds: float = 0.0


def _improved(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best - min_delta if mode == "min" else value > best + min_delta


def fit(
    model: torch.nn.Module,
    train_set: list,
    eval_set: list,
    objective: Objective,
    cfg: TrainingConfig,
    out_dir: Path,
    accelerator: Accelerator | None = None,
    resume: Path | None = None,
    on_step: StepCallback | None = None,
) -> FitResult:
    """Train `model` in place on encoded examples; the best weights are loaded back at the end.

    `on_step(step, record)` gets each train record, then the step's eval record if it evaluated
    (record["kind"] says which); an exception it raises stops training. Frozen weights are first cast
    to `cfg.frozen_dtype` (bf16 under bf16 mixed precision by default).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out_dir / "checkpoints"
    accelerator = accelerator or make_accelerator(cfg, out_dir)
    store_frozen_weights(model, cfg.frozen_dtype, accelerator.mixed_precision)
    torch.manual_seed(cfg.seed)
    if not train_set:
        raise ValueError("the training set is empty")

    lengths = [objective.length(e) for e in train_set]
    units = [objective.units(e) for e in train_set]
    plan = BatchPlan(
        n_examples=len(train_set),
        batch_size=cfg.batch_size,
        grad_accum=cfg.grad_accum,
        world_size=accelerator.num_processes,
        seed=cfg.seed,
        lengths=tuple(lengths) if cfg.group_by_length and not cfg.packing else None,
        max_tokens=cfg.max_tokens_per_batch,
        token_counts=tuple(lengths) if cfg.max_tokens_per_batch else None,
    )
    n_steps = total_steps(plan, cfg.epochs, cfg.max_steps)
    eval_every = cfg.eval_every or plan.steps_per_epoch
    save_every = cfg.save_every or eval_every

    if cfg.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()  # frozen embeddings + LoRA: checkpointed blocks need a grad input
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, n_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    raw_model = accelerator.unwrap_model(model)
    if objective.prepare is not None:  # e.g. DPO's reference log-probs, scored once before any update
        train_set = objective.prepare(raw_model, train_set, cfg.batch_size)
        eval_set = objective.prepare(raw_model, eval_set, cfg.batch_size) if eval_set else eval_set
    # Kernels go in before compilation, so the compiled blocks trace Liger's kernels; both leave with fit.
    speedups = ExitStack()
    speedups.enter_context(liger_kernels(raw_model, use_liger(raw_model, cfg.kernels, accelerator.device)))
    if objective.packs:
        speedups.enter_context(packed_attention(raw_model, resolve_packed_attention(cfg.packed_attention,
                                                                                    accelerator.device)))
    # In place: `model` (and any DDP wrapper) runs the compiled blocks.
    compiled = compile_blocks(raw_model) if cfg.compile else []
    # Under autocast the adapters need not cast their inputs first (model/lora_speed.py).
    lora_layers = tuner_layers(raw_model) if accelerator.mixed_precision != "no" else []

    state: dict[str, Any] = {"step": 0, "best_metric": None, "best_step": None, "bad_evals": 0, "evals": []}
    if resume is not None:
        state = ckpt.load_checkpoint(resume, raw_model, optimizer, scheduler)
        if accelerator.is_main_process:
            truncate_metrics(out_dir / "metrics.jsonl", state["step"])
        accelerator.print(f"resumed from {resume} at step {state['step']}")
    result = FitResult(steps=state["step"], total_steps=n_steps, evals=list(state["evals"]))
    if cfg.report_to:
        # TensorBoard writes under <run>/lmtune/; MLflow files the run under experiment "lmtune".
        accelerator.init_trackers("lmtune", config={k: str(v) for k, v in cfg.model_dump().items()},
                                  init_kwargs={"mlflow": {"run_name": out_dir.name}})
    log = MetricsLog(out_dir / "metrics.jsonl", accelerator) if accelerator.is_main_process else None
    rank, world = accelerator.process_index, accelerator.num_processes
    params = [p for p in model.parameters() if p.requires_grad]
    bar = tqdm(
        total=n_steps,
        initial=state["step"],
        disable=not (cfg.progress_bar and accelerator.is_local_main_process),
        desc="train",
        dynamic_ncols=True,
    )
    seen_tokens = seen_units = 0
    train_time = 0.0
    model.train()

    while state["step"] < n_steps:
        step = state["step"]
        started = time.perf_counter()
        everyone = plan.all_micro_batches(step)
        step_units = sum(units[i] for mb in everyone for i in mb)
        step_tokens = sum(lengths[i] for mb in everyone for i in mb)
        mine = plan.micro_batches(step, rank)
        loss_sum = torch.zeros((), device=accelerator.device, dtype=torch.float64)
        step_sums: dict[str, torch.Tensor] = {}
        for k, indices in enumerate(mine):
            batch = to_device(objective.collate([train_set[i] for i in indices]), accelerator.device)
            last = k == len(mine) - 1
            with (nullcontext() if last else accelerator.no_sync(model), accelerator.autocast(),
                  input_casts_off(lora_layers)):
                micro_sum, sums = objective.loss(model, batch)
                # DDP averages gradients over processes, so scale by world size to get the global sum / units.
                loss = micro_sum * world / max(step_units, 1)
                accelerator.backward(loss)
            loss_sum += micro_sum.detach().double()
            for key, value in sums.items():
                step_sums[key] = step_sums.get(key, 0) + value.detach().double()
        grad_norm = accelerator.clip_grad_norm_(params, cfg.max_grad_norm) if cfg.max_grad_norm else None
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        keys = sorted(step_sums)
        packed = torch.stack([loss_sum] + [torch.as_tensor(step_sums[k], device=loss_sum.device) for k in keys])
        if world > 1:
            packed = accelerator.reduce(packed, reduction="sum")
        loss_sum = packed[0]
        # The objective's own statistics of this step (token accuracy, reward accuracy, mean reward, ...).
        totals = {k: packed[i + 1].item() for i, k in enumerate(keys)}
        train_view = objective.summarize(totals, step_units)
        if not step_tokens:  # GRPO: the tokens exist only once sampled; count the completion tokens trained on
            step_tokens = int(totals.get("n_tokens", 0))
        step_loss = loss_sum.item() / max(step_units, 1)
        elapsed = time.perf_counter() - started
        train_time += elapsed
        seen_tokens += step_tokens
        seen_units += step_units
        state["step"] = step = step + 1
        result.steps = step
        result.train_losses.append(step_loss)
        record = {
            "kind": "train",
            "step": step,
            "epoch": round(step / plan.steps_per_epoch, 4),
            "loss": step_loss,
            "lr": lr,
            "grad_norm": float(grad_norm) if grad_norm is not None else None,
            "tokens": step_tokens,
            "supervised_tokens": step_units,
            "tokens_per_s": step_tokens / elapsed,
            "supervised_tokens_per_s": step_units / elapsed,
            **{"train_" + k.removeprefix("eval_"): v for k, v in train_view.items() if k != "eval_loss"},
        }
        if log and (step % cfg.log_every == 0 or step == n_steps):
            log.write(record)
        bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{seen_tokens / train_time:.0f}")
        bar.update(1)

        stop = False
        metrics = None
        if step % eval_every == 0 or step == n_steps:
            metrics = evaluate_loss(model, eval_set, objective, cfg.batch_size, accelerator) if eval_set else {}
            metrics.update({"kind": "eval", "step": step})
            state["evals"].append(metrics)
            result.evals.append(metrics)
            if log:
                log.write(metrics)
            watched = metrics.get(cfg.early_stopping.metric)
            if watched is not None:
                es = cfg.early_stopping
                if _improved(watched, state["best_metric"], es.mode, es.min_delta):
                    state.update(best_metric=watched, best_step=step, bad_evals=0)
                    if accelerator.is_main_process:
                        ckpt.save_weights(ckpt_dir / "best", raw_model)
                else:
                    state["bad_evals"] += 1
                    # At the last scheduled step the run ends anyway: that is not early stopping.
                    stop = es.patience is not None and state["bad_evals"] >= es.patience and step < n_steps
        if step % save_every == 0 or step == n_steps or stop:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                ckpt.save_checkpoint(ckpt_dir, raw_model, optimizer, scheduler, state)
                ckpt.prune_checkpoints(ckpt_dir, cfg.keep_checkpoints)
        if on_step is not None:
            on_step(step, record)
            if metrics is not None:  # e.g. lmtune tune reports it to Optuna, whose TrialPruned stops fit here
                on_step(step, metrics)
        if stop:
            result.stopped_early = True
            accelerator.print(f"early stopping at step {step}: no improvement in {state['bad_evals']} evaluations")
            break
    bar.close()
    uncompile(compiled)
    speedups.close()

    accelerator.wait_for_everyone()
    result.best_step, result.best_metric = state["best_step"], state["best_metric"]
    if result.best_step is not None and result.best_step != result.steps:
        ckpt.load_trainable_state(raw_model, load_file(ckpt_dir / "best" / "trainable.safetensors"))
        accelerator.print(f"kept the best weights: step {result.best_step}, {cfg.early_stopping.metric}={result.best_metric:.4f}")
    result.train_seconds = train_time
    result.tokens_per_s = seen_tokens / train_time if train_time else 0.0
    result.supervised_tokens_per_s = seen_units / train_time if train_time else 0.0
    result.peak_memory_mb = peak_memory_mb(accelerator.device)
    accelerator.end_training()
    return result
