"""`lmtune train` with method.task classification, then `lmtune predict` and `lmtune eval`, on the tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lmtune.data.encode import encode_classification
from lmtune.data.records import Example
from lmtune.evaluate.head import class_probabilities, label_names_of
from lmtune.use import load_for_inference

from .cli_helpers import FAST, SHARED, run_cli, sets

pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared data not found at {SHARED}")
EMOTIONS = ["anger", "joy", "optimism", "sadness"]


@pytest.fixture(scope="module")
def classified(tmp_path_factory):
    """(run folder, cache folder) of a tiny classification run with auto class weights."""
    tmp = tmp_path_factory.mktemp("cls")
    runs, cache = tmp / "runs", tmp / "cache"
    overrides = sets(f"output.dir={runs}", f"model.cache_dir={cache}", "method.task=classification",
                     "method.class_weights=auto", "eval.positive_label=joy", *FAST)
    assert run_cli(["train", "configs/tiny.yaml", *overrides]) == 0
    (run,) = runs.iterdir()
    return run, cache, overrides


def test_the_run_compares_the_head_with_prompted_baselines(classified):
    run, _, _ = classified
    evaluation = json.loads((run / "eval.json").read_text())
    assert evaluation["task"] == "classification" and evaluation["method"] == "classification"
    assert set(evaluation["systems"]) == {"base zero-shot", "base 4-shot", "base zero-shot, constrained",
                                          "base 4-shot, constrained", "base searched, constrained", "fine-tuned"}
    # The head has no generated answer: only the base's prompts are shown both ways.
    assert [r["system"] for r in evaluation["side_by_side"]] == ["base zero-shot", "base 4-shot"]
    assert evaluation["systems"]["base zero-shot, constrained"]["n_unparsed"] == 0
    tuned = evaluation["systems"]["fine-tuned"]
    assert tuned["n_unparsed"] == 0 and tuned["n"] == 8
    assert "positive_f1" in tuned and len(tuned["positive_f1_ci"]) == 2
    assert tuned["positive_f1"] == tuned["per_class"]["joy"]["f1"]
    assert (run / "report.html").exists() and (run / "final" / "lmtune_base.json").exists()
    evals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]
    assert all("eval_macro_f1" in e for e in evals)


def test_predict_writes_the_argmax_and_the_probabilities(classified, tmp_path, capsys):
    run, _, _ = classified
    inputs = tmp_path / "tweets.txt"
    texts = ["I can't stop smiling today", "This is outrageous", "", "so tired of everything"]
    inputs.write_text("\n".join(texts) + "\n")
    out = tmp_path / "pred.jsonl"
    assert run_cli(["predict", str(run), str(inputs), "--out", str(out), "--batch-size", "2"]) == 0
    assert f"3 predictions written to {out}" in capsys.readouterr().err
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    model, tokenizer, cfg = load_for_inference(run)
    assert label_names_of(model) == EMOTIONS
    kept = [t for t in texts if t]  # blank lines are not inputs
    assert [r["text"] for r in rows] == kept and [r["line"] for r in rows] == [1, 2, 4]
    encoded = [encode_classification(Example("text", text=t), tokenizer, cfg.data, EMOTIONS) for t in kept]
    probs = class_probabilities(model, encoded, tokenizer.pad_token_id)
    assert [r["label"] for r in rows] == [EMOTIONS[i] for i in probs.argmax(-1)]
    got = np.array([[r["probabilities"][n] for n in EMOTIONS] for r in rows])
    assert np.allclose(got, probs, atol=1e-5) and np.allclose(got.sum(1), 1.0, atol=1e-4)


def test_predict_refuses_a_language_model_run(tmp_path, capsys):
    from .cli_helpers import FAST as fast

    runs = tmp_path / "runs"
    assert run_cli(["train", "configs/tiny.yaml", *sets(f"output.dir={runs}", f"model.cache_dir={tmp_path / 'c'}",
                                                        "eval.at_end=false", "training.max_steps=1", *fast)]) == 0
    (run,) = runs.iterdir()
    (tmp_path / "x.txt").write_text("hello\n")
    assert run_cli(["predict", str(run), str(tmp_path / "x.txt")]) == 1
    assert "not a classification run" in capsys.readouterr().err


def test_eval_reproduces_the_run_and_reuses_the_cached_baselines(classified, capsys):
    run, _, _ = classified
    assert run_cli(["eval", str(run)]) == 0
    assert "prompt baselines of tiny-llama from the cache" in capsys.readouterr().out
    first = json.loads((run / "eval.json").read_text())["systems"]
    again = json.loads((run / "eval-test" / "eval.json").read_text())["systems"]
    for name in first:
        assert again[name]["accuracy"] == first[name]["accuracy"]
        assert again[name]["macro_f1"] == pytest.approx(first[name]["macro_f1"])


def test_head_only_run_leaves_the_body_as_it_was_and_exports_whole(tmp_path, capsys):
    from lmtune.config import ModelConfig
    from lmtune.model.load import load_model

    runs = tmp_path / "runs"
    overrides = sets(f"output.dir={runs}", f"model.cache_dir={tmp_path / 'c'}", "method.task=classification",
                     "method.peft=head", "training.learning_rate=0.05", "eval.at_end=false",
                     "training.max_steps=4", *FAST)
    assert run_cli(["train", "configs/tiny.yaml", *overrides]) == 0
    (run,) = runs.iterdir()
    assert "training 128 of" in capsys.readouterr().out  # the score head only: 4 labels x 32 hidden, no bias
    tuned, _, _ = load_for_inference(run)
    base, _ = load_model(ModelConfig(name="tiny-llama"), task="sequence_classification", num_labels=4)
    tuned_params = dict(tuned.named_parameters())
    for name, param in base.named_parameters():
        same = torch.equal(param, tuned_params[name])
        assert same == (not name.startswith("score.")), name
    assert run_cli(["export", str(run), "--adapter", str(tmp_path / "a")]) == 2
    assert "saved a whole model, not a separate adapter" in capsys.readouterr().err
    assert run_cli(["export", str(run), "--merge", str(tmp_path / "m")]) == 0
