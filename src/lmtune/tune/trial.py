"""One trial of `lmtune tune`, as its own process (submitted through an executor, like a service job).

    python -m lmtune.tune.trial TRIAL.yaml --storage sqlite:///study.db --study demo --trial 3

The Optuna-distributed way: the process opens the study's RDB storage, trains the trial's config,
reports the validation metric to Optuna at each evaluation and asks whether to stop (median
pruning), and tells the study the outcome itself. Exit codes: 0 complete, PRUNED_EXIT_CODE pruned,
anything else a failure the parent records.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

import optuna

from lmtune.config_file import load_config
from lmtune.tune.space import make_pruner, objective_of

PRUNED_EXIT_CODE = 10


def run_trial(config: str, storage: str, study_name: str, number: int) -> int:
    """Train trial `number` of the study with the config at `config`; its exit code."""
    cfg = load_config(config)
    metric, _ = objective_of(cfg)
    study = optuna.load_study(study_name=study_name, storage=storage, pruner=make_pruner(cfg))
    # Optuna's distributed pattern: a Trial object for a trial the parent asked for, in another process.
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    trial = optuna.trial.Trial(study, trial_id)
    values: list[float] = []

    def report(step: int, record: dict[str, Any]) -> None:
        value = record.get(metric) if record.get("kind") == "eval" else None
        if value is None or math.isnan(value):
            return
        values.append(value)
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"{metric}={value:.4g} at step {step}, worse than the median")

    from lmtune.train.hardware import end_distributed
    from lmtune.pipeline.training import run_training

    try:
        run_dir = run_training(cfg, on_step=report)
    except optuna.TrialPruned as pruned:
        print(f"trial {number} pruned: {pruned}", flush=True)
        study.tell(number, state=optuna.trial.TrialState.PRUNED)
        return PRUNED_EXIT_CODE
    finally:
        end_distributed()
    if not values:
        raise RuntimeError(f"trial {number} never reported {metric}: it needs a validation split whose "
                           f"evaluation gives {metric} (tune.metric)")
    best = min(values) if study.direction == optuna.study.StudyDirection.MINIMIZE else max(values)
    study.tell(number, best)
    print(f"trial {number} complete: {metric}={best:.4g} ({run_dir})", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the trial process."""
    parser = argparse.ArgumentParser(prog="python -m lmtune.tune.trial")
    parser.add_argument("config")
    parser.add_argument("--storage", required=True)
    parser.add_argument("--study", required=True)
    parser.add_argument("--trial", type=int, required=True)
    args = parser.parse_args(argv)
    return run_trial(args.config, args.storage, args.study, args.trial)


if __name__ == "__main__":
    sys.exit(main())
