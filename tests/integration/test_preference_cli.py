"""`lmtune train` with method.task reward, dpo and grpo on the tiny model, then `lmtune score`."""

from __future__ import annotations

import gzip
import json

import pytest

from lmtune.data.encode import encode_preference
from lmtune.data.formats import load_examples
from lmtune.evaluate.score import sequence_scores
from lmtune.train.metrics_log import read_metrics
from lmtune.use import load_for_inference

from .test_cli import SHARED, run_cli, sets

pytestmark = [pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared data not found at {SHARED}"), pytest.mark.slow]
HH = SHARED / "hh-rlhf-harmless" / "harmless-base-test.jsonl.gz"
GSM8K = SHARED / "gsm8k"
QUICK = ["training.num_threads=1", "training.max_steps=4", "training.eval_every=2", "training.batch_size=4",
         "data.max_train_examples=32", "data.max_validation_examples=8", "data.max_test_examples=8",
         "data.validation_file=null", "data.test_file=null", "data.leakage=warn"]


def train(tmp_path, task: str, *extra: str):
    runs = tmp_path / "runs"
    code = run_cli(["train", "configs/tiny.yaml", *sets(f"output.dir={runs}", f"model.cache_dir={tmp_path / 'cache'}",
                                                       f"method.task={task}", *QUICK, *extra)])
    assert code == 0
    (run,) = runs.iterdir()
    return run


def test_reward_model_run_and_score(tmp_path):
    run = train(tmp_path, "reward", f"data.train_file={HH}", "data.max_seq_len=512")
    evaluation = json.loads((run / "eval.json").read_text())
    assert evaluation["task"] == "preference" and set(evaluation["systems"]) == {"base", "fine-tuned"}
    assert 0 <= evaluation["systems"]["fine-tuned"]["score_accuracy"] <= 1
    train_records = [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "train"]
    assert all("train_reward_accuracy" in r and "train_margin" in r for r in train_records)

    pairs = tmp_path / "pairs.jsonl"
    with gzip.open(HH, "rt") as fh:
        pairs.write_text("".join(next(fh) for _ in range(3)))
    out = tmp_path / "scores.jsonl"
    assert run_cli(["score", str(run), str(pairs), "--out", str(out)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    model, tokenizer, cfg = load_for_inference(run)
    examples, _, _ = load_examples(str(pairs))
    expected = sequence_scores(model, [s for e in examples for s in encode_preference(e, tokenizer, cfg.data)],
                               tokenizer.pad_token_id)
    assert [r["chosen_score"] for r in rows] == pytest.approx(expected[0::2], abs=1e-5)
    assert [r["margin"] for r in rows] == pytest.approx([c - r for c, r in zip(expected[0::2], expected[1::2])], abs=1e-5)


def test_dpo_run_reports_implicit_rewards_against_the_base(tmp_path):
    run = train(tmp_path, "dpo", f"data.train_file={HH}", "data.max_seq_len=512", "method.dpo.precompute_reference=true")
    systems = json.loads((run / "eval.json").read_text())["systems"]
    assert systems["base"]["implicit_reward_accuracy"] == 0.0 and systems["base"]["implicit_reward_margin"] == 0.0
    assert "logp_accuracy_ci" in systems["fine-tuned"]
    evals = [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "eval"]
    assert all("eval_reward_accuracy" in r and "eval_chosen_reward" in r for r in evals)


def test_grpo_run_logs_rewards_and_draws_the_curve(tmp_path):
    run = train(tmp_path, "grpo", f"data.train_file={GSM8K / 'train.jsonl'}", "training.batch_size=2",
                "method.grpo.group_size=2", "method.grpo.max_new_tokens=8", "eval.few_shot=0",
                "eval.max_new_tokens=8", "method.grpo.reward=lmtune.graders.rewards:answer_format",
                "method.grpo.monitor=[lmtune.graders.rewards:gsm8k_numeric, lmtune.graders.rewards:answer_format]")
    records = [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "train"]
    assert len(records) == 4 and all({"train_reward", "train_kl", "train_completion_length"} <= set(r) for r in records)
    assert all(r["train_reward_answer_format"] == pytest.approx(r["train_reward"]) for r in records)
    assert all(0.0 <= r["train_reward_gsm8k_numeric"] <= 1.0 for r in records)
    evals = [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "eval"]
    assert evals and all("eval_reward_gsm8k_numeric" in r for r in evals)
    assert (run / "reward.png").stat().st_size > 1000
    assert "numeric_match" in json.loads((run / "eval.json").read_text())["systems"]["fine-tuned"]
