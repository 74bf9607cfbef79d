"""The study's report: report.md in the tune folder with the trials table, the parameter importances
(importance.png) and the best trial's test scores.

    write_report(study, cfg, tune_dir)    # -> tune_dir / "report.md"
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import optuna

from lmtune.config import RunConfig
from lmtune.tune.space import objective_of


def trial_run_dir(tune_dir: Path, number: int) -> Path:
    """The run folder trial `number` trained into (the newest, should it have been run twice)."""
    found = sorted((tune_dir / "trials").glob(f"trial-{number:03d}-*"))
    if not found:
        raise FileNotFoundError(f"trial {number} has no run folder under {tune_dir / 'trials'}")
    return found[-1]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def trials_table(study: optuna.Study, metric: str) -> str:
    """One markdown row per trial: state, value, last evaluated step, minutes and parameters."""
    names = sorted({k for t in study.trials for k in t.params})
    lines = [f"| trial | state | {metric} | last eval step | minutes | " + " | ".join(names) + " |",
             "|---:|---|---:|---:|---:|" + "---:|" * len(names)]
    for t in study.trials:
        minutes = t.duration.total_seconds() / 60 if t.duration else None
        state = t.state.name.lower() + (f" ({t.user_attrs['stopped']})" if "stopped" in t.user_attrs else "")
        lines.append(f"| {t.number} | {state} | {_cell(t.value)} | {_cell(t.last_step)} | "
                     f"{_cell(minutes)} | " + " | ".join(_cell(t.params.get(n)) for n in names) + " |")
    return "\n".join(lines)


def importances(study: optuna.Study, png: Path) -> dict[str, float] | str:
    """fANOVA importance of each parameter over the complete trials, plotted to `png`; else why not."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2:
        return "Needs at least two complete trials."
    if len({t.value for t in complete}) < 2:
        return "All complete trials reached the same value: nothing to attribute."
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    with warnings.catch_warnings():  # the matplotlib plots are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        found = optuna.importance.get_param_importances(study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
        ax = optuna.visualization.matplotlib.plot_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    ax.figure.tight_layout()
    ax.figure.savefig(png, dpi=100)
    plt.close(ax.figure)
    return found


def _test_section(study: optuna.Study, tune_dir: Path) -> list[str]:
    number = study.user_attrs.get("test_scored_trial")
    if number is None:
        return ["Not scored on the test split yet (no complete trial, or tune.evaluate_best is off)."]
    out = trial_run_dir(tune_dir, number) / "eval-test"
    table = json.loads((out / "eval.json").read_text())["table"]
    return [f"Trial {number}, its model and the base model's prompt baselines on the test split, scored once "
            f"after the search ({out / 'report.html'}):", "", table]


def write_report(study: optuna.Study, cfg: RunConfig, tune_dir: Path) -> Path:
    """Write report.md (and importance.png when it can be computed) into the tune folder."""
    metric, direction = objective_of(cfg)
    states = [t.state.name.lower() for t in study.trials]
    lines = [f"# Study {study.study_name}", "",
             f"{len(states)} trials ({', '.join(f'{states.count(s)} {s}' for s in sorted(set(states)))}); "
             f"objective: {direction} the validation {metric}, best value over each trial's evaluations; "
             f"TPE sampling, median pruning.", "", "## Trials", "", trials_table(study, metric), ""]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        lines += [f"Best: trial {best.number}, {metric} = {best.value:.4g}; its config: {tune_dir / 'best.yaml'}", ""]
    found = importances(study, tune_dir / "importance.png")
    lines += ["## Parameter importance (fANOVA over the complete trials)", ""]
    if isinstance(found, str):
        lines += [found, ""]
    else:
        lines += ["![parameter importance](importance.png)", "", "| parameter | importance |", "|---|---:|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in found.items()] + [""]
    lines += ["## Best trial on the test split", "", *_test_section(study, tune_dir), ""]
    path = tune_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
