"""The `lmtune` command end to end on configs/tiny.yaml (a 2-layer random Llama, TweetEval emotion).

One training run (module fixture) feeds the tests of the run folder, `runs`, `generate` and `export`;
`--resume` continues a copy of it cut short and must reproduce its losses.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from lmtune.cli import main
from lmtune.config_file import load_config
from lmtune.runs import read_lineage
from lmtune.use import load_for_inference

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
SYSTEM = "Answer with one word."
# Small and quick on a busy 2-core CPU: one thread avoids oversubscription (10x slower otherwise);
# checkpoints every 4 steps, all kept, so a copy can be cut back to step 4 and resumed.
FAST = ["training.num_threads=1", "data.max_validation_examples=8", "data.max_test_examples=8", "training.save_every=4",
        "training.keep_checkpoints=3", f"data.system_prompt={SYSTEM}"]

needs_data = pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared data not found at {SHARED}")


def sets(*overrides: str) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


@pytest.fixture(autouse=True)
def _in_project_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # config paths (../shared/data/...) are relative to the project root


def run_cli(argv: list[str]) -> int:
    """main(argv) from the project root, restoring PyTorch's thread count (training.num_threads is process-wide)."""
    threads = torch.get_num_threads()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(ROOT)
            return main(argv)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(runs folder, run folder, cache folder) of one finished tiny run."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED}")
    tmp = tmp_path_factory.mktemp("cli")
    runs, cache = tmp / "runs", tmp / "cache"
    code = run_cli(["train", "configs/tiny.yaml", *sets(f"output.dir={runs}", f"model.cache_dir={cache}", *FAST)])
    assert code == 0
    (run,) = runs.iterdir()
    return runs, run, cache


def test_runs_compare_puts_runs_side_by_side(trained, capsys, tmp_path):
    _, run, _ = trained
    assert main(["runs", "compare", str(run), str(run)]) == 0
    header, rule, *rows = capsys.readouterr().out.strip().splitlines()
    assert "fine-tuned: macro_f1" in header and "base 4-shot: accuracy" in header
    tuned = read_lineage(run)["result"]["test"]["systems"]["fine-tuned"]["macro_f1"]
    assert len(rows) == 2 and all(f"| {tuned:.4f} |" in r or r.endswith(f"| {tuned:.4f} |") for r in rows)
    assert main(["runs", "compare", str(tmp_path)]) == 1


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


# --- config -----------------------------------------------------------------------------------------------


def test_config_schema(capsys):
    assert main(["config", "schema"]) == 0
    out = capsys.readouterr().out
    assert "training.learning_rate = 0.0002  [float]  # Peak learning rate." in out
    assert "data.split.validation = 0.1" in out


def test_config_show_marks_a_split_fraction_that_a_file_overrides(capsys):
    assert main(["config", "show", "configs/tiny.yaml"]) == 0
    out = capsys.readouterr().out
    assert "    test: 0.1  # ignored: data.test_file is set" in out
    assert "    validation: 0.1  # ignored: data.validation_file is set" in out
    assert yaml.safe_load(out)["data"]["split"] == {"validation": 0.1, "test": 0.1}  # still a loadable config
    assert main(["config", "show", "configs/tiny.yaml", *sets("data.test_file=null")]) == 0
    assert "    test: 0.1\n" in capsys.readouterr().out


def test_config_show_applies_overrides(capsys):
    assert main(["config", "show", "configs/tiny.yaml", *sets("training.learning_rate=1e-4")]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["training"]["learning_rate"] == 1e-4
    assert shown["model"]["name"] == "tiny-llama" and shown["training"]["max_steps"] == 12  # from the file
    assert shown["lora"]["r"] == 16  # from the defaults


@pytest.mark.parametrize("command", ["config show", "train", "data prepare"])
def test_a_bad_override_exits_2_naming_the_key_and_file(capsys, tmp_path, command):
    argv = [*command.split(), "configs/tiny.yaml", *sets(f"output.dir={tmp_path}", "training.batch_size=x")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "training.batch_size" in err and "configs/tiny.yaml" in err and "'x'" in err
    assert list(tmp_path.iterdir()) == []  # no run folder for a config that does not validate


def test_the_installed_entry_point_exits_2_on_an_unknown_key():
    exe = Path(sys.executable).with_name("lmtune")
    exe = exe if exe.exists() else shutil.which("lmtune")
    assert exe, "the lmtune entry point is not installed"
    done = subprocess.run([str(exe), "config", "show", "configs/tiny.yaml", "--set", "training.learning_rat=1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "lmtune: error: invalid config (configs/tiny.yaml with --set training.learning_rat=1)" in done.stderr
    assert "training.learning_rat: unknown key" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


# --- train and the run folder -------------------------------------------------------------------------------


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


@pytest.mark.slow
def test_generate_uses_the_runs_template_and_system_prompt(trained, capsys):
    _, run, _ = trained
    prompt = "I am so happy today"
    assert main(["generate", str(run), "--prompt", prompt, "--max-new-tokens", "6"]) == 0
    printed = capsys.readouterr().out
    # The same greedy decode done by hand: chatml with the run's system prompt, cut at EOS.
    model, tokenizer, _ = load_for_inference(run)
    text = tokenizer.apply_chat_template([{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}],
                                         add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    expected = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert expected and printed == expected + "\n"


def test_generate_on_an_unfinished_run_says_so(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text("model:\n  name: tiny-llama\n")
    assert main(["generate", str(tmp_path), "--prompt", "hi"]) == 1
    err = capsys.readouterr().err
    assert "has no final model" in err and "--resume" in err


def _logits(model, tokenizer) -> torch.Tensor:
    ids = tokenizer("<|im_start|>user\nwhat a day<|im_end|>\n", return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        return model(**ids).logits


@pytest.mark.slow
def test_export_merged_gives_the_logits_of_the_adapter_model(trained, tmp_path, capsys):
    _, run, _ = trained
    out = tmp_path / "merged"
    assert main(["export", str(run), "--merge", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    weights = load_file(out / "model.safetensors")
    assert not any("lora" in name for name in weights)  # plain weights, usable without peft
    adapter_model, tokenizer, _ = load_for_inference(run)
    merged_model, _, cfg = load_for_inference(out)
    assert type(merged_model).__name__ == "LlamaForCausalLM"
    torch.testing.assert_close(_logits(merged_model, tokenizer), _logits(adapter_model, tokenizer), atol=1e-5, rtol=0)
    assert cfg.data.system_prompt == SYSTEM  # `lmtune generate OUT` prompts like the run does


@pytest.mark.slow
def test_export_adapter(trained, tmp_path, capsys):
    _, run, _ = trained
    out = tmp_path / "adapter"
    assert main(["export", str(run), "--adapter", str(out)]) == 0
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    exported = load_file(out / "adapter_model.safetensors")
    assert exported and all("lora_" in name for name in exported)
    original, tokenizer, _ = load_for_inference(run)
    again, _, cfg = load_for_inference(out)
    torch.testing.assert_close(_logits(again, tokenizer), _logits(original, tokenizer), atol=1e-6, rtol=0)
    assert cfg.data.system_prompt == SYSTEM


# --- resume ---------------------------------------------------------------------------------------------------


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _cut_back(run: Path) -> int:
    """Make `run` look killed during step 7: checkpoint 4 is the newest, metrics go up to step 6."""
    shutil.rmtree(run / "final")
    for later in ["step-000008", "step-000012"]:
        shutil.rmtree(run / "checkpoints" / later)
    for name in ["eval.json", "predictions.jsonl", "loss.png"]:
        (run / name).unlink()
    kept = [r for r in _records(run) if r["step"] <= 6]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    lineage = read_lineage(run)
    del lineage["result"]
    (run / "lmtune.json").write_text(json.dumps(lineage))
    return len(kept)


@pytest.fixture(scope="module")
def resumed(trained, tmp_path_factory):
    """(uninterrupted run, the same run cut back to step 4 and resumed with --resume latest, records kept)."""
    _, run, cache = trained
    root = tmp_path_factory.mktemp("resume") / "runs"
    copy = root / run.name
    shutil.copytree(run, copy)
    kept = _cut_back(copy)
    code = run_cli(["train", "configs/tiny.yaml", "--resume", "latest",
                     *sets(f"output.dir={root}", f"model.cache_dir={cache}", *FAST)])
    assert code == 0
    assert list(root.iterdir()) == [copy]  # continued in place, no new run folder
    return run, copy, kept


@pytest.mark.slow
def test_resume_latest_reproduces_the_uninterrupted_run(resumed):
    run, copy, kept = resumed
    full = {(r["kind"], r["step"]): r for r in _records(run)}
    # Resuming from the step-4 checkpoint drops the records logged after it and writes steps 5.. again.
    after = [r for r in _records(copy) if r["step"] > 4]
    train = {r["step"]: r["loss"] for r in after if r["kind"] == "train"}
    assert sorted(train) == list(range(5, 13))
    for step, loss in train.items():
        assert loss == pytest.approx(full["train", step]["loss"], abs=1e-6), step
    evals = {r["step"]: r["eval_loss"] for r in after if r["kind"] == "eval"}
    assert evals == pytest.approx({6: full["eval", 6]["eval_loss"], 12: full["eval", 12]["eval_loss"]}, abs=1e-6)

    a = load_file(run / "final" / "adapter_model.safetensors")
    b = load_file(copy / "final" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=0)
    result = read_lineage(copy)["result"]
    assert result["steps"] == 12
    assert result["validation"]["eval_loss"] == pytest.approx(read_lineage(run)["result"]["validation"]["eval_loss"],
                                                              abs=1e-6)
    assert (copy / "eval.json").is_file() and (copy / "loss.png").is_file()


@pytest.mark.slow
def test_resume_leaves_one_record_per_step(resumed):
    _, copy, _ = resumed
    keys = [(r["kind"], r["step"]) for r in _records(copy)]
    assert len(keys) == len(set(keys)) == 12 + 2


def test_resume_latest_without_a_checkpoint_fails_clearly(tmp_path, capsys):
    code = main(["train", "configs/tiny.yaml", "--resume", "latest", *sets(f"output.dir={tmp_path}")])
    assert code == 1
    assert f"no unfinished run of 'tiny' under {tmp_path} has a checkpoint to resume" in capsys.readouterr().err


# --- data prepare ---------------------------------------------------------------------------------------------


@needs_data
@pytest.mark.slow
def test_data_prepare_twice_reuses_the_cache(tmp_path, capsys):
    argv = ["data", "prepare", "configs/tiny.yaml", *sets(f"model.cache_dir={tmp_path}")]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert main(argv) == 0
    second = capsys.readouterr().out
    (wrote,) = [ln for ln in first.splitlines() if ln.startswith("wrote ")]
    cache_dir = wrote.removeprefix("wrote ")
    assert Path(cache_dir).is_relative_to(tmp_path) and Path(cache_dir).is_dir()
    assert second.splitlines()[-1] == f"reused {cache_dir}"
    assert "train           200" in first and first.splitlines()[:-1] == second.splitlines()[:-1]
