"""`lmtune tune` end to end on configs/tiny.yaml: trials are real training processes (tiny-llama)
started through the local executor, reporting to a SQLite Optuna study."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
import torch

from lmtune.cli import main
from lmtune.config_file import dump_config, load_config
from lmtune.tune.report import trial_run_dir
from lmtune.tune.space import make_pruner
from lmtune.tune.study import open_study, trial_config, tune_dir_of
from lmtune.tune.trial import PRUNED_EXIT_CODE, run_trial

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared data not found at {SHARED}")

# 6 steps of 4 tweets, evaluated every 2 steps on 8; no test scoring unless a test asks for it.
FAST = ["training.num_threads=1", "training.max_steps=6", "training.eval_every=2", "training.batch_size=4",
        "data.max_train_examples=48", "data.max_validation_examples=8", "data.max_test_examples=8",
        "training.early_stopping.patience=null", "tune.evaluate_best=false",
        "tune.space={training.learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true},"
        " lora.r: {type: categorical, choices: [4, 8]}}"]


@pytest.fixture(autouse=True)
def _in_project_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # config paths (../shared/data/...) are relative to the project root


def tune(tmp_path: Path, *args: str, extra: tuple[str, ...] = ()) -> int:
    """`lmtune tune configs/tiny.yaml` into tmp_path, restoring PyTorch's process-wide thread count."""
    sets = [a for o in (*FAST, f"output.dir={tmp_path}", *extra) for a in ("--set", o)]
    threads = torch.get_num_threads()
    try:
        return main(["tune", "configs/tiny.yaml", *sets, *args])
    finally:
        torch.set_num_threads(threads)


def stored(tmp_path: Path) -> optuna.Study:
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'tiny-tune' / 'study.db'}")


@pytest.mark.slow
def test_a_stopped_study_resumes_and_writes_best_config_and_report(tmp_path):
    assert tune(tmp_path, "--trials", "1") == 0
    first = stored(tmp_path).trials[0]
    assert first.state == optuna.trial.TrialState.COMPLETE and first.last_step == 6
    # A command killed mid-trial leaves its trial RUNNING in the storage, as this one.
    stored(tmp_path).ask()
    assert tune(tmp_path, "--trials", "2") == 0
    trials = stored(tmp_path).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert trials[0].params == first.params and trials[0].value == first.value  # continued, not restarted
    out = tmp_path / "tiny-tune"
    best = min((t for t in trials if t.value is not None), key=lambda t: t.value)
    best_cfg = load_config(out / "best.yaml")
    assert best_cfg.training.learning_rate == pytest.approx(best.params["training.learning_rate"])
    assert best_cfg.lora.r == best.params["lora.r"] and best_cfg.eval.at_end  # the user's config, tuned
    report = (out / "report.md").read_text()
    assert "| trial | state | eval_loss |" in report and "| 2 | complete |" in report and "| 1 | fail |" in report
    assert (out / "importance.png").stat().st_size > 0 and "| training.learning_rate |" in report


@pytest.mark.slow
def test_timeout_stops_the_running_trial_and_starts_no_other(tmp_path):
    started = time.monotonic()
    # Trials far longer than the timeout: it must cut the first one short.
    assert tune(tmp_path, "--trials", "3", "--timeout", "20s",
                extra=("training.max_steps=100000", "training.eval_every=1000")) == 0
    elapsed = time.monotonic() - started
    trials = stored(tmp_path).trials
    assert len(trials) == 1 and trials[0].state == optuna.trial.TrialState.FAIL
    assert "| 0 | fail (timeout) |" in (tmp_path / "tiny-tune" / "report.md").read_text()
    assert elapsed < 20 + 25  # the timeout, plus stopping the trial and the study's bookkeeping
    assert not (tmp_path / "tiny-tune" / "best.yaml").exists()


@pytest.mark.slow
def test_a_trial_worse_than_the_median_is_pruned_at_its_first_evaluation(tmp_path):
    sets = [*FAST, f"output.dir={tmp_path}", "tune.pruner.startup_trials=1"]
    cfg = load_config("configs/tiny.yaml", sets)
    tune_dir = tune_dir_of(cfg)
    study, storage = open_study(cfg, tune_dir)
    # An earlier trial that reached a loss no real trial gets near: the next one is below the median.
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.0,
                                              intermediate_values={2: 0.0, 4: 0.0, 6: 0.0}))
    trial = study.ask()
    trial_cfg = trial_config(cfg, trial, tune_dir)
    path = tmp_path / "trial.yaml"
    path.write_text(dump_config(trial_cfg))
    threads = torch.get_num_threads()
    try:
        code = run_trial(str(path), storage, study.study_name, trial.number)
    finally:
        torch.set_num_threads(threads)
    assert code == PRUNED_EXIT_CODE
    pruned = optuna.load_study(study_name="tiny", storage=storage, pruner=make_pruner(cfg)).trials[trial.number]
    assert pruned.state == optuna.trial.TrialState.PRUNED and list(pruned.intermediate_values) == [2]
    metrics = (trial_run_dir(tune_dir, trial.number) / "metrics.jsonl").read_text()
    assert '"step": 2' in metrics and '"step": 3' not in metrics  # training stopped at the pruned evaluation


@pytest.mark.slow
def test_a_study_whose_trials_all_fail_stops_instead_of_looping(tmp_path):
    assert tune(tmp_path, "--trials", "5", extra=("data.train_file=../shared/data/no-such-file.txt",)) == 0
    trials = stored(tmp_path).trials
    assert [t.state.name for t in trials] == ["FAIL"] * 3
    assert "no-such-file.txt" in (tmp_path / "tiny-tune" / "trials" / "trial-000.log").read_text()
    assert "Not scored on the test split" in (tmp_path / "tiny-tune" / "report.md").read_text()
