"""The `tune:` section of the run configuration: the search space and the study of `lmtune tune`.

    space:
      training.learning_rate: {type: float, low: 1.0e-5, high: 3.0e-3, log: true}
      lora.r: {type: categorical, choices: [4, 8, 16, 32]}

Kept beside lmtune.config (which includes it as RunConfig.tune), so that file stays one screenful per stage.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from lmtune.config_section import Section


class TuneParam(Section):
    """One searched hyperparameter: a float or int range (log-uniform with `log`) or a list of choices."""

    type: Literal["float", "int", "categorical"]
    """float and int sample from [low, high]; categorical picks one of `choices`."""
    low: float | None = None
    """Smallest value (float, int)."""
    high: float | None = None
    """Largest value (float, int)."""
    log: bool = False
    """Sample uniformly in log space (learning rates)."""
    step: float | None = Field(None, gt=0)
    """Grid step of the range (null: continuous floats, every integer)."""
    choices: list[Any] | None = None
    """The values a categorical parameter can take."""

    @model_validator(mode="after")
    def _check_param(self) -> "TuneParam":
        if self.type == "categorical":
            if not self.choices or self.low is not None or self.high is not None:
                raise ValueError("a categorical parameter takes `choices` (a non-empty list), not low/high")
            return self
        if self.low is None or self.high is None or self.choices is not None:
            raise ValueError(f"a {self.type} parameter takes `low` and `high`, not choices")
        if self.low > self.high or (self.log and self.low <= 0):
            raise ValueError(f"need low <= high (and low > 0 with log), got low={self.low}, high={self.high}")
        if self.type == "int" and not (float(self.low).is_integer() and float(self.high).is_integer()):
            raise ValueError(f"an int parameter needs integer bounds, got {self.low}, {self.high}")
        return self


def default_space() -> dict[str, TuneParam]:
    """The search space of `lmtune tune` when the YAML declares none (docs/tuning.md)."""
    return {
        "training.learning_rate": TuneParam(type="float", low=1e-5, high=3e-3, log=True),
        "lora.r": TuneParam(type="categorical", choices=[4, 8, 16, 32]),
        "training.warmup_ratio": TuneParam(type="float", low=0.0, high=0.2),
        "training.epochs": TuneParam(type="float", low=0.5, high=3.0),
    }


class PrunerConfig(Section):
    startup_trials: int = Field(2, ge=0)
    """Trials that finish unpruned before any is pruned (the median needs a few to compare with)."""
    warmup_steps: int = Field(0, ge=0)
    """Optimizer steps of a trial before it can be pruned (its evaluations up to this step are kept)."""


class TuneConfig(Section):
    trials: int = Field(8, gt=0)
    """Finished trials (complete or pruned) the study should hold; `--trials N` overrides it."""
    timeout: float | None = Field(None, gt=0)
    """Seconds the command may run: no trial starts after it and a running one is stopped (`--timeout 30m`)."""
    metric: str | None = None
    """Validation metric optimised and pruned on (null: training.early_stopping.metric, with its mode)."""
    mode: Literal["min", "max"] | None = None
    """Whether lower or higher `metric` is better (null: training.early_stopping.mode)."""
    space: dict[str, TuneParam] = Field(default_factory=default_space)
    """Searched parameters, keyed by config path (e.g. training.learning_rate); replaces the default space."""
    seed: int = 0
    """Seed of the TPE sampler."""
    startup_trials: int = Field(3, ge=1)
    """Trials sampled at random before TPE models the results."""
    pruner: PrunerConfig = Field(default_factory=PrunerConfig)
    """Median pruning: stop a trial whose validation metric is worse than the median of earlier trials at
    the same step."""
    storage: str | None = None
    """Optuna RDB storage, any SQLAlchemy URL (null: sqlite:///<output.dir>/<output.name>-tune/study.db)."""
    study_name: str | None = None
    """Name of the study in the storage (null: output.name); the same name resumes it."""
    executor: Literal["local", "ray"] = "local"
    """Where trials run: local child processes, or a Ray cluster."""
    address: str | None = None
    """Ray cluster address (executor ray; null: auto)."""
    cpus_per_trial: float = Field(1.0, gt=0)
    """CPUs requested for each trial process."""
    gpus_per_trial: float = Field(0.0, ge=0)
    """GPUs requested for each trial process."""
    evaluate_best: bool = True
    """Score the best trial on the test split once, beside the prompt baselines, when the study ends."""

