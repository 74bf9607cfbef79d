"""The one training loop: every method (SFT, classification, reward, DPO, GRPO) runs here.

    result = fit(model, train_set, eval_set, objective, cfg.training, out_dir, on_step=callback)

`fit` is the loop itself; _setup, _train_step, _evaluate_and_keep_best, _save_checkpoint and _finish
hold the details, in the order they run.

Per optimizer step: take this process's micro-batches from the deterministic plan, divide each
micro-batch's summed loss by the *global* number of loss units of the whole step (so accumulation and
data parallelism equal one large batch), backward, clip, step. Evaluate every `eval_every` steps,
keep the best weights, stop early on a plateau, and checkpoint atomically so `resume` continues
exactly where a run stopped.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from tqdm.auto import tqdm

from lmtune.config import TrainingConfig
from lmtune.train import checkpoint as ckpt
from lmtune.train.hardware import make_accelerator, peak_memory_mb, store_frozen_weights
from lmtune.train.metrics_log import MetricsLog, truncate_metrics
from lmtune.train.objective import Objective
from lmtune.train.optim import build_optimizer, build_scheduler
from lmtune.train.schedule import BatchPlan, total_steps
from lmtune.train.speedups import SpeedLayers
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

    Frozen weights are first cast to `cfg.frozen_dtype` (bf16 under bf16 mixed precision by default).
    `on_step(step, record)` sees every train record and every eval record; what it raises ends the run.
    """
    run = _setup(model, train_set, eval_set, objective, cfg, out_dir, accelerator or make_accelerator(cfg, out_dir),
                 resume)
    state, result = run.state, run.result
    while state["step"] < run.n_steps:
        record = _train_step(run)
        step = state["step"]
        result.steps = step
        result.train_losses.append(record["loss"])
        if run.log and (step % cfg.log_every == 0 or step == run.n_steps):
            run.log.write(record)
        run.bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}",
                            tok_s=f"{run.seen_tokens / run.train_time:.0f}")
        run.bar.update(1)

        evaluation, stop = None, False
        if step % run.eval_every == 0 or step == run.n_steps:
            evaluation, stop = _evaluate_and_keep_best(run)
        if step % run.save_every == 0 or step == run.n_steps or stop:
            _save_checkpoint(run)
        if on_step is not None:
            on_step(step, record)
            if evaluation is not None:
                on_step(step, evaluation)
        if stop:
            result.stopped_early = True
            run.accelerator.print(f"early stopping at step {step}: no improvement in {state['bad_evals']} evaluations")
            break
    return _finish(run)


@dataclass
class _Run:
    """Everything one `fit` holds between steps (set up once by _setup)."""

    model: torch.nn.Module
    raw_model: torch.nn.Module
    objective: Objective
    cfg: TrainingConfig
    accelerator: Accelerator
    out_dir: Path
    train_set: list
    eval_set: list
    units: list[int]
    lengths: list[int]
    plan: BatchPlan
    n_steps: int
    eval_every: int
    save_every: int
    optimizer: Any
    scheduler: Any
    speed: SpeedLayers
    state: dict[str, Any]
    result: FitResult
    log: MetricsLog | None
    params: list[torch.nn.Parameter]
    bar: Any
    seen_tokens: int = 0
    seen_units: int = 0
    train_time: float = 0.0


def _setup(model, train_set, eval_set, objective: Objective, cfg: TrainingConfig, out_dir: Path,
           accelerator: Accelerator, resume: Path | None) -> _Run:
    """Plan the batches, build the optimizer, apply the speed layers, restore a checkpoint, open the logs."""
    out_dir.mkdir(parents=True, exist_ok=True)
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
    speed = SpeedLayers(raw_model, objective, cfg, accelerator)

    state: dict[str, Any] = {"step": 0, "best_metric": None, "best_step": None, "bad_evals": 0, "evals": []}
    if resume is not None:
        state = ckpt.load_checkpoint(resume, raw_model, optimizer, scheduler)
        if accelerator.is_main_process:
            truncate_metrics(out_dir / "metrics.jsonl", state["step"])
        accelerator.print(f"resumed from {resume} at step {state['step']}")
    if cfg.report_to:
        # TensorBoard writes under <run>/lmtune/; MLflow files the run under experiment "lmtune".
        accelerator.init_trackers("lmtune", config={k: str(v) for k, v in cfg.model_dump().items()},
                                  init_kwargs={"mlflow": {"run_name": out_dir.name}})
    bar = tqdm(total=n_steps, initial=state["step"], desc="train", dynamic_ncols=True,
               disable=not (cfg.progress_bar and accelerator.is_local_main_process))
    model.train()
    return _Run(model=model, raw_model=raw_model, objective=objective, cfg=cfg, accelerator=accelerator,
                out_dir=out_dir, train_set=train_set, eval_set=eval_set, units=units, lengths=lengths, plan=plan,
                n_steps=n_steps, eval_every=eval_every, save_every=cfg.save_every or eval_every,
                optimizer=optimizer, scheduler=scheduler, speed=speed, state=state,
                result=FitResult(steps=state["step"], total_steps=n_steps, evals=list(state["evals"])),
                log=MetricsLog(out_dir / "metrics.jsonl", accelerator) if accelerator.is_main_process else None,
                params=[p for p in model.parameters() if p.requires_grad], bar=bar)


def _train_step(run: _Run) -> dict[str, Any]:
    """One optimizer step over this process's micro-batches; returns the step's train record."""
    acc, objective, cfg = run.accelerator, run.objective, run.cfg
    step = run.state["step"]
    started = time.perf_counter()
    everyone = run.plan.all_micro_batches(step)
    step_units = sum(run.units[i] for mb in everyone for i in mb)
    step_tokens = sum(run.lengths[i] for mb in everyone for i in mb)
    world = acc.num_processes
    mine = run.plan.micro_batches(step, acc.process_index)
    loss_sum = torch.zeros((), device=acc.device, dtype=torch.float64)
    step_sums: dict[str, torch.Tensor] = {}
    for k, indices in enumerate(mine):
        batch = to_device(objective.collate([run.train_set[i] for i in indices]), acc.device)
        last = k == len(mine) - 1
        with nullcontext() if last else acc.no_sync(run.model), acc.autocast(), run.speed.micro_batch():
            micro_sum, sums = objective.loss(run.model, batch)
            # DDP averages gradients over processes, so scale by world size to get the global sum / units.
            acc.backward(micro_sum * world / max(step_units, 1))
        loss_sum += micro_sum.detach().double()
        for key, value in sums.items():
            step_sums[key] = step_sums.get(key, 0) + value.detach().double()
    grad_norm = acc.clip_grad_norm_(run.params, cfg.max_grad_norm) if cfg.max_grad_norm else None
    lr = run.scheduler.get_last_lr()[0]
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    keys = sorted(step_sums)
    packed = torch.stack([loss_sum] + [torch.as_tensor(step_sums[k], device=loss_sum.device) for k in keys])
    if world > 1:
        packed = acc.reduce(packed, reduction="sum")
    # The objective's own statistics of this step (token accuracy, reward accuracy, mean reward, ...).
    totals = {k: packed[i + 1].item() for i, k in enumerate(keys)}
    train_view = objective.summarize(totals, step_units)
    if not step_tokens:  # GRPO: the tokens exist only once sampled; count the completion tokens trained on
        step_tokens = int(totals.get("n_tokens", 0))
    step_loss = packed[0].item() / max(step_units, 1)
    elapsed = time.perf_counter() - started
    run.train_time += elapsed
    run.seen_tokens += step_tokens
    run.seen_units += step_units
    run.state["step"] = step = step + 1
    return {
        "kind": "train",
        "step": step,
        "total_steps": run.n_steps,  # the service reports progress as step/total_steps, as OpenAI does
        "epoch": round(step / run.plan.steps_per_epoch, 4),
        "loss": step_loss,
        "lr": lr,
        "grad_norm": float(grad_norm) if grad_norm is not None else None,
        "tokens": step_tokens,
        "supervised_tokens": step_units,
        "tokens_per_s": step_tokens / elapsed,
        "supervised_tokens_per_s": step_units / elapsed,
        **{"train_" + k.removeprefix("eval_"): v for k, v in train_view.items() if k != "eval_loss"},
    }


def _evaluate_and_keep_best(run: _Run) -> tuple[dict[str, Any], bool]:
    """Score the validation set, keep the best weights so far; (eval record, whether to stop early)."""
    state, cfg = run.state, run.cfg
    step = state["step"]
    metrics = evaluate_loss(run.model, run.eval_set, run.objective, cfg.batch_size, run.accelerator) \
        if run.eval_set else {}
    metrics.update({"kind": "eval", "step": step})
    state["evals"].append(metrics)
    run.result.evals.append(metrics)
    if run.log:
        run.log.write(metrics)
    watched = metrics.get(cfg.early_stopping.metric)
    if watched is None:
        return metrics, False
    es = cfg.early_stopping
    if _improved(watched, state["best_metric"], es.mode, es.min_delta):
        state.update(best_metric=watched, best_step=step, bad_evals=0)
        if run.accelerator.is_main_process:
            ckpt.save_weights(run.out_dir / "checkpoints" / "best", run.raw_model)
        return metrics, False
    state["bad_evals"] += 1
    # At the last scheduled step the run ends anyway: that is not early stopping.
    return metrics, es.patience is not None and state["bad_evals"] >= es.patience and step < run.n_steps


def _save_checkpoint(run: _Run) -> None:
    """Write the step's checkpoint (all processes wait for it) and prune the old ones."""
    run.accelerator.wait_for_everyone()
    if run.accelerator.is_main_process:
        folder = run.out_dir / "checkpoints"
        ckpt.save_checkpoint(folder, run.raw_model, run.optimizer, run.scheduler, run.state)
        ckpt.prune_checkpoints(folder, run.cfg.keep_checkpoints)


def _finish(run: _Run) -> FitResult:
    """Close the bar and the speed layers, load the best weights back, fill in the result's figures."""
    run.bar.close()
    run.speed.close()
    acc, result = run.accelerator, run.result
    acc.wait_for_everyone()
    result.best_step, result.best_metric = run.state["best_step"], run.state["best_metric"]
    if result.best_step is not None and result.best_step != result.steps:
        best = run.out_dir / "checkpoints" / "best" / "trainable.safetensors"
        ckpt.load_trainable_state(run.raw_model, load_file(best))
        acc.print(f"kept the best weights: step {result.best_step}, "
                  f"{run.cfg.early_stopping.metric}={result.best_metric:.4f}")
    result.train_seconds = run.train_time
    result.tokens_per_s = run.seen_tokens / run.train_time if run.train_time else 0.0
    result.supervised_tokens_per_s = run.seen_units / run.train_time if run.train_time else 0.0
    result.peak_memory_mb = peak_memory_mb(acc.device)
    acc.end_training()
    return result
