"""`lmtune eval` of a finished run (it must reproduce the scores of training) and of a config (baselines only)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from .cli_helpers import run_cli

pytestmark = pytest.mark.usefixtures("in_project_root")


@pytest.mark.slow
def test_eval_of_a_run_reproduces_the_scores_of_training(trained, capsys):
    _, run, cache = trained
    assert run_cli(["eval", str(run)]) == 0
    assert f"wrote {run / 'eval-test'}" in capsys.readouterr().out
    again = json.loads((run / "eval-test" / "eval.json").read_text())
    first = json.loads((run / "eval.json").read_text())
    assert list(again["systems"]) == list(first["systems"])
    for name, scores in first["systems"].items():  # adapter off == the base before training; reloaded == trained
        for metric in ("accuracy", "macro_f1", "n_unparsed"):
            assert again["systems"][name][metric] == scores[metric], (name, metric)
    assert (run / "eval-test" / "report.html").is_file()


@pytest.mark.slow
def test_eval_of_a_config_scores_the_baselines_only(tmp_path, capsys):
    code = run_cli(["eval", "configs/tiny.yaml", "--limit", "6"])
    assert code == 0
    out = Path(capsys.readouterr().out.strip().splitlines()[-1].removeprefix("wrote "))
    evaluation = json.loads((out / "eval.json").read_text())
    shutil.rmtree(out)  # configs/tiny.yaml writes under the project's runs/: remove only this folder
    if not any(out.parent.iterdir()):
        out.parent.rmdir()
    assert list(evaluation["systems"]) == ["base zero-shot", "base 4-shot", "base zero-shot, constrained",
                                           "base 4-shot, constrained", "base searched, constrained"]
    assert evaluation["n"] == 6 and evaluation["metric"] == "macro_f1"
    assert [r["system"] for r in evaluation["side_by_side"]] == ["base zero-shot", "base 4-shot"]
