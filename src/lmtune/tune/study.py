"""`lmtune tune CONFIG --trials N [--timeout 30m]`: an Optuna study whose trials are training processes.

    tune_dir = run_study(load_config("configs/demo.yaml"), trials=6, timeout=1800)

TPE samples each trial's parameters from `tune.space`; the trial runs as `python -m lmtune.tune.trial`
through an executor (local processes or Ray), reports its validation metric at each evaluation and is
pruned when it falls below the median of earlier trials at that step. The study lives in Optuna's RDB
storage (`<output.dir>/<output.name>-tune/study.db` unless `tune.storage` names another URL), so the same
command again continues it up to N finished trials. At the end: best.yaml (the best trial's config),
report.md (trials table, parameter importances, the best trial on the test split, scored once).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import optuna

from lmtune.config import RunConfig
from lmtune.config_file import dump_config
from lmtune.execute.base import Executor, Resources, make_executor
from lmtune.tune.report import trial_run_dir, write_report
from lmtune.tune.space import make_pruner, objective_of, suggest, with_params

Echo = Callable[[str], None]
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
MAX_FAILED_IN_A_ROW = 3


def tune_dir_of(cfg: RunConfig) -> Path:
    """The study's folder: fixed (no timestamp), so that running the command again finds it."""
    return Path(cfg.output.dir) / f"{cfg.output.name}-tune"


def open_study(cfg: RunConfig, tune_dir: Path) -> tuple[optuna.Study, str]:
    """Create the study or load the stored one; returns it and its storage URL."""
    tune_dir.mkdir(parents=True, exist_ok=True)
    storage = cfg.tune.storage or f"sqlite:///{(tune_dir / 'study.db').resolve()}"
    _, direction = objective_of(cfg)
    study = optuna.create_study(
        storage=storage, study_name=cfg.tune.study_name or cfg.output.name, direction=direction,
        load_if_exists=True, pruner=make_pruner(cfg))
    # Seeded past the stored trials: a resumed study draws new points, not the first run's again.
    study.sampler = optuna.samplers.TPESampler(seed=cfg.tune.seed + len(study.trials),
                                               n_startup_trials=cfg.tune.startup_trials)
    if study.direction != optuna.study.StudyDirection[direction.upper()]:
        raise ValueError(f"study {study.study_name} in {storage} was created to {study.direction.name.lower()}, "
                         f"but this config's metric wants to {direction}")
    return study, storage


def trial_config(cfg: RunConfig, trial: optuna.Trial, tune_dir: Path) -> RunConfig:
    """The config trial `trial` trains: sampled parameters, its own run folder, no test scoring."""
    sampled = with_params(cfg, suggest(trial, cfg.tune.space))
    return with_params(sampled, {"output.dir": str(tune_dir / "trials"), "output.name": f"trial-{trial.number:03d}",
                                 "eval.at_end": False, "training.progress_bar": False})


def _forget_interrupted(study: optuna.Study, echo: Echo) -> None:
    """Trials left running by a stopped `lmtune tune` will never report: mark them failed."""
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        echo(f"trial {t.number} was left running by an earlier, stopped command: marked failed")
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)


def run_study(cfg: RunConfig, trials: int | None = None, timeout: float | None = None, echo: Echo = print) -> Path:
    """Run the study until it holds `trials` finished trials or `timeout` seconds pass; the tune folder."""
    timeout = timeout or cfg.tune.timeout
    deadline = time.monotonic() + timeout if timeout else None
    wanted = trials or cfg.tune.trials
    tune_dir = tune_dir_of(cfg)
    study, storage = open_study(cfg, tune_dir)
    _forget_interrupted(study, echo)
    executor = make_executor(cfg.tune.executor, cfg.tune.address)
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    failed_in_a_row = 0
    echo(f"study {study.study_name} ({storage}): {done} of {wanted} trials finished")
    while done < wanted:
        left = deadline - time.monotonic() if deadline else None
        if left is not None and left <= 0:
            echo(f"--timeout reached: {done} of {wanted} trials finished; run the command again to continue")
            break
        state = _run_trial(cfg, study, storage, tune_dir, executor, left, echo)
        if state is None:
            echo("--timeout reached during the trial; run the command again to continue")
            break
        done += state in FINISHED
        failed_in_a_row = 0 if state in FINISHED else failed_in_a_row + 1
        if failed_in_a_row == MAX_FAILED_IN_A_ROW:  # e.g. a config every trial rejects: do not loop forever
            echo(f"stopping: {MAX_FAILED_IN_A_ROW} trials in a row failed (their logs: {tune_dir / 'trials'})")
            break
    best = _best_trial(study)
    if best is not None:
        (tune_dir / "best.yaml").write_text(dump_config(with_params(cfg, best.params)))
        if cfg.tune.evaluate_best:
            _score_best_once(study, best, tune_dir, echo)
    report = write_report(study, cfg, tune_dir)
    echo(f"report: {report}")
    return tune_dir


def _run_trial(cfg: RunConfig, study: optuna.Study, storage: str, tune_dir: Path, executor: Executor,
               timeout: float | None, echo: Echo) -> optuna.trial.TrialState | None:
    """Sample, submit and wait for one trial; its final state, or None when `timeout` stopped it."""
    trial = study.ask()
    config_path = tune_dir / "trials" / f"trial-{trial.number:03d}.yaml"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(dump_config(trial_config(cfg, trial, tune_dir)))
    echo(f"trial {trial.number}: {trial.params} (log: {config_path.with_suffix('.log')})")
    handle = executor.submit("lmtune.tune.trial", [str(config_path), "--storage", storage, "--study",
                                                   study.study_name, "--trial", str(trial.number)],
                             log_path=config_path.with_suffix(".log"),
                             resources=Resources(cpus=cfg.tune.cpus_per_trial, gpus=cfg.tune.gpus_per_trial))
    try:
        code = handle.wait(timeout)
    except BaseException:  # Ctrl-C: stop the trial with us; the study stays resumable
        handle.cancel()
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        raise
    if code is None:
        handle.cancel()
        trial.set_user_attr("stopped", "timeout")  # shown in the report's trials table
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        return None
    # The trial process told the study its outcome, unless it died first.
    frozen = study.get_trials(deepcopy=False)[trial.number]
    if frozen.state == optuna.trial.TrialState.RUNNING:
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        frozen = study.get_trials(deepcopy=False)[trial.number]
    echo(f"trial {trial.number} {frozen.state.name.lower()}"
         + (f": {frozen.value:.4g}" if frozen.value is not None else "")
         + (f" (exit code {code}; see its log)" if frozen.state == optuna.trial.TrialState.FAIL else ""))
    return frozen.state


def _best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return study.best_trial if complete else None


def _score_best_once(study: optuna.Study, best: optuna.trial.FrozenTrial, tune_dir: Path, echo: Echo) -> None:
    """Score the best trial's model on the test split, once per best trial (a resumed study keeps the score)."""
    if study.user_attrs.get("test_scored_trial") == best.number:
        return
    from lmtune.pipeline.evaluation import evaluate_target

    run_dir = trial_run_dir(tune_dir, best.number)
    echo(f"scoring the best trial ({best.number}) on the test split: {run_dir}")
    evaluate_target(run_dir, split="test", echo=echo)
    study.set_user_attr("test_scored_trial", best.number)
