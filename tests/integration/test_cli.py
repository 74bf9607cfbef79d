"""`lmtune train` end to end on configs/tiny.yaml (a 2-layer random Llama, TweetEval emotion): the run
folder, its lineage, `lmtune runs`, and what the run's settings change.

One training run (the session fixture `trained`, tests/integration/conftest.py) feeds these tests and
those of test_cli_use.py, test_cli_eval.py and test_cli_resume.py.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from lmtune.cli import main
from lmtune.config_file import load_config
from lmtune.runs import read_lineage

from .cli_helpers import SYSTEM, FAST, sets, run_cli

pytestmark = pytest.mark.usefixtures("in_project_root")


@pytest.mark.slow
def test_train_writes_a_complete_run_folder(trained):
    runs, run, _ = trained
    assert run.name.startswith("tiny-")
    for name in ["config.yaml", "manifest.json", "metrics.jsonl", "loss.png", "eval.json", "predictions.jsonl",
                 "lmtune.json"]:
        assert (run / name).is_file(), name
    assert (run / "final" / "adapter_model.safetensors").is_file()
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-000004", "step-000008",
                                                                           "step-000012"]
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    saved = load_config(run / "config.yaml")
    assert saved.output.dir == str(runs) and saved.data.system_prompt == SYSTEM and saved.training.max_steps == 12

    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if m["kind"] == "train"] == list(range(1, 13))
    assert [m["step"] for m in metrics if m["kind"] == "eval"] == [6, 12]

    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["counts"]["final"] == {"train": 200, "validation": 8, "test": 8}

    evaluation = json.loads((run / "eval.json").read_text())
    systems = ["base zero-shot", "base 4-shot", "base zero-shot, constrained", "base 4-shot, constrained",
               "base searched, constrained", "fine-tuned, constrained", "fine-tuned"]
    assert list(evaluation["systems"]) == systems and evaluation["task"] == "classification"
    html = (run / "report.html").read_text()
    assert all(name in html for name in systems) and html.count("data:image/png;base64,") >= 2
    assert "Generated vs constrained answers" in html and "Prompt search" in html
    assert [r["system"] for r in evaluation["side_by_side"]] == ["base zero-shot", "base 4-shot", "fine-tuned"]
    assert set(evaluation["significance"]) == {f"fine-tuned vs {b}, {m}" for b in systems[:-1]
                                               for m in ("accuracy", "macro-F1")}
    assert evaluation["forgetting"]["text"] == "pydoc_data.topics" and evaluation["forgetting"]["tokens"] > 0
    assert all(f"| {name} |" in evaluation["table"] for name in systems)
    assert all("macro_f1_ci" in evaluation["systems"][name] for name in systems)
    predictions = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 8
    assert all(set(p) == {"prompt", "reference", "outputs", "parsed"} for p in predictions)
    assert all(set(p["outputs"]) == set(systems) for p in predictions)
    assert all(SYSTEM in p["prompt"] for p in predictions)


@pytest.mark.slow
def test_lineage(trained):
    _, run, _ = trained
    lineage = read_lineage(run)
    assert lineage["base_model"]["name"] == "tiny-llama"
    assert len(lineage["base_model"]["weights_sha256"]) == 64
    assert set(lineage["data"]["fingerprints"]) == {"train", "validation", "test"}
    assert all(len(f) == 64 for f in lineage["data"]["fingerprints"].values())
    assert len(lineage["config_hash"]) == 64
    assert lineage["lmtune_version"]
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last_eval = [m for m in metrics if m["kind"] == "eval"][-1]
    assert lineage["result"]["validation"]["eval_loss"] == pytest.approx(last_eval["eval_loss"])
    assert lineage["result"]["steps"] == 12


@pytest.mark.slow
def test_runs_list_and_show(trained, capsys, tmp_path):
    runs, run, _ = trained
    assert main(["runs", "list", "--dir", str(runs)]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    loss = read_lineage(run)["result"]["validation"]["eval_loss"]
    assert line == f"{run}  tiny-llama  done  eval_loss={loss:.4f}"

    assert main(["runs", "show", str(run)]) == 0
    assert json.loads(capsys.readouterr().out) == read_lineage(run)

    assert main(["runs", "list", "--dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out == ""
    assert main(["runs", "show", str(tmp_path)]) == 1
    assert "has no lmtune.json" in capsys.readouterr().err


def test_runs_compare_puts_runs_side_by_side(trained, capsys, tmp_path):
    _, run, _ = trained
    assert main(["runs", "compare", str(run), str(run)]) == 0
    header, rule, *rows = capsys.readouterr().out.strip().splitlines()
    assert "fine-tuned: macro_f1" in header and "base 4-shot: accuracy" in header
    tuned = read_lineage(run)["result"]["test"]["systems"]["fine-tuned"]["macro_f1"]
    assert len(rows) == 2 and all(f"| {tuned:.4f} |" in r or r.endswith(f"| {tuned:.4f} |") for r in rows)
    assert main(["runs", "compare", str(tmp_path)]) == 1


def test_baselines_can_be_switched_off_keeping_the_fine_tuned_scores(tmp_path, capsys):
    code = run_cli(["train", "configs/tiny.yaml", *sets(f"output.dir={tmp_path}", "eval.baselines=[]",
                                                        "training.max_steps=2", *FAST)])
    assert code == 0
    (run,) = tmp_path.iterdir()
    evaluation = json.loads((run / "eval.json").read_text())
    assert list(evaluation["systems"]) == ["fine-tuned, constrained", "fine-tuned"]
    assert evaluation["systems"]["fine-tuned"]["n"] == 8
    assert "max_new_tokens" in evaluation["systems"]["fine-tuned"]  # with the count of answers cut there
    assert evaluation["systems"]["fine-tuned"]["n_at_token_limit"] >= 0
    assert read_lineage(run)["result"]["stopped_early"] is False


@pytest.mark.slow
def test_the_same_config_gives_the_same_adapter(trained, tmp_path):
    _, run, cache = trained
    code = run_cli(["train", "configs/tiny.yaml", *sets(f"output.dir={tmp_path}", f"model.cache_dir={cache}", *FAST)])
    assert code == 0
    (again,) = tmp_path.iterdir()
    a = load_file(run / "final" / "adapter_model.safetensors")
    b = load_file(again / "final" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
