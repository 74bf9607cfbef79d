"""`lmtune train` with a grader as GRPO's reward (OpenAI reinforcement data), and graders as `lmtune eval` metrics."""

from __future__ import annotations

import json

import pytest
import yaml

from lmtune.train.metrics_log import read_metrics

from .cli_helpers import ROOT, SHARED, run_cli

pytestmark = [pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared data not found at {SHARED}"), pytest.mark.slow]
NUMERIC = "def grade(sample, item):\n    return float(item['answer'] in sample['output_text'])\n"
GRADER = {"type": "multi", "name": "gsm8k", "calculate_output": "0.9 * correct + 0.1 * format",
          "graders": {"correct": {"type": "python", "name": "correct", "source": NUMERIC},
                      "format": {"type": "string_check", "name": "format", "input": "{{ sample.output_text }}",
                                 "reference": "####", "operation": "like"}}}


def rft_file(path, start: int, n: int, drop_answer_at: int | None = None):
    lines = (SHARED / "gsm8k" / "train.jsonl").read_text().splitlines()[start:start + n]
    rows = []
    for k, line in enumerate(lines):
        rec = json.loads(line)
        row = {"messages": [{"role": "user", "content": rec["question"]}],
               "answer": rec["answer"].rsplit("####", 1)[1].strip()}
        if k == drop_answer_at:
            del row["answer"]
        rows.append(json.dumps(row))
    path.write_text("\n".join(rows) + "\n")
    return path


def config(tmp_path, train, valid) -> str:
    cfg = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    cfg["data"] = {"train_file": str(train), "validation_file": str(valid), "test_file": str(valid),
                   "template": "chatml", "max_seq_len": 256, "leakage": "warn"}
    cfg["method"] = {"task": "grpo", "peft": "lora", "grpo": {"grader": GRADER, "group_size": 2, "max_new_tokens": 8}}
    cfg["training"].update(max_steps=3, eval_every=3, batch_size=2)
    cfg["eval"] = {"max_new_tokens": 8, "few_shot": 0, "baselines": ["generated"], "forgetting_blocks": 0,
                   "graders": [GRADER, {"type": "string_check", "name": "has_digit", "input": "{{ sample.output_text }}",
                                        "reference": "1", "operation": "like"}]}
    cfg["output"] = {"dir": str(tmp_path / "runs"), "name": "graded"}
    cfg["model"]["cache_dir"] = str(tmp_path / "cache")
    path = tmp_path / "graded.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_grader_rewards_grpo_and_scores_eval_with_intervals(tmp_path):
    train = rft_file(tmp_path / "train.jsonl", 0, 12)
    valid = rft_file(tmp_path / "valid.jsonl", 12, 4)
    assert run_cli(["train", config(tmp_path, train, valid)]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    records = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3]
    assert all(0.0 <= r["train_reward"] <= 1.0 for r in records if r["kind"] == "train")
    assert any("eval_reward" in r for r in records if r["kind"] == "eval")
    fine_tuned = json.loads((run / "eval.json").read_text())["systems"]["fine-tuned"]
    for name in ("grader_gsm8k", "grader_has_digit"):
        low, high = fine_tuned[f"{name}_ci"]
        assert 0.0 <= low <= fine_tuned[name] <= high <= 1.0
    assert "grader_gsm8k" in (run / "report.md").read_text()


def test_a_line_missing_a_field_the_grader_reads_is_a_line_numbered_error(tmp_path, capsys):
    train = rft_file(tmp_path / "train.jsonl", 0, 6, drop_answer_at=3)
    valid = rft_file(tmp_path / "valid.jsonl", 12, 2)
    GRADER_WITH_TEMPLATE = {"type": "string_check", "name": "exact", "input": "{{ sample.output_text }}",
                            "reference": "{{ item.answer }}", "operation": "eq"}
    path = config(tmp_path, train, valid)
    cfg = yaml.safe_load(open(path))
    cfg["method"]["grpo"]["grader"] = GRADER_WITH_TEMPLATE
    open(path, "w").write(yaml.safe_dump(cfg))
    assert run_cli(["train", path]) != 0
    err = capsys.readouterr().err
    assert f"{train}:4" in err and "answer" in err
