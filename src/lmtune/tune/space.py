"""The search space: sample a trial's parameters and build the RunConfig they describe.

    params = suggest(trial, cfg.tune.space)          # {"training.learning_rate": 3.1e-4, "lora.r": 8}
    trial_cfg = with_params(cfg, params)             # the run config with those values set
    metric, direction = objective_of(cfg)            # ("eval_loss", "minimize")
"""

from __future__ import annotations

from typing import Any

import optuna

from lmtune.config import RunConfig
from lmtune.config_file import apply_override, config_from_dict
from lmtune.config_tune import TuneParam


def suggest(trial: optuna.Trial, space: dict[str, TuneParam]) -> dict[str, Any]:
    """Ask `trial` for a value of every parameter of `space` (Optuna records them in the study)."""
    params: dict[str, Any] = {}
    for name, p in space.items():
        if p.type == "categorical":
            params[name] = trial.suggest_categorical(name, p.choices)
        elif p.type == "int":
            params[name] = trial.suggest_int(name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            params[name] = trial.suggest_float(name, p.low, p.high, step=p.step, log=p.log)
    return params


def with_params(cfg: RunConfig, params: dict[str, Any], source: str = "tune.space") -> RunConfig:
    """`cfg` with each dotted-path parameter set; a value the schema refuses is a ConfigError."""
    tree = cfg.model_dump(mode="json")
    for name, value in params.items():
        apply_override(tree, name.split("."), value)
    return config_from_dict(tree, source)


def objective_of(cfg: RunConfig) -> tuple[str, str]:
    """The validation metric the study optimises and Optuna's direction for it."""
    metric = cfg.tune.metric or cfg.training.early_stopping.metric
    mode = cfg.tune.mode or (cfg.training.early_stopping.mode if metric == cfg.training.early_stopping.metric
                             else "min" if metric.endswith("loss") else "max")
    return metric, "minimize" if mode == "min" else "maximize"


def make_pruner(cfg: RunConfig) -> optuna.pruners.MedianPruner:
    """Median pruning as configured; the parent and every trial process build the same one."""
    return optuna.pruners.MedianPruner(n_startup_trials=cfg.tune.pruner.startup_trials,
                                       n_warmup_steps=cfg.tune.pruner.warmup_steps)
