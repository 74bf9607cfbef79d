"""scripts/gsm8k_easy.py: the documented data step that writes the one-step GSM8K subset."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "gsm8k_easy.py"


def _write(path: Path, answers: list[str]) -> None:
    path.write_text("".join(json.dumps({"question": f"q{i}", "answer": a}) + "\n" for i, a in enumerate(answers)))


def test_keeps_problems_with_at_most_max_steps_annotations_unchanged(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _write(src / "train.jsonl", ["2+2=<<2+2=4>>4\n#### 4", "<<1+1=2>> <<2*3=6>>\n#### 6", "no calc\n#### 3"])
    _write(src / "test.jsonl", ["<<5-1=4>>\n#### 4"])
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(SCRIPT), "--source", str(src), "--out", str(out)],
                          capture_output=True, text=True, check=True)
    train = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert [row["question"] for row in train] == ["q0", "q2"]  # the two-step problem is left out
    assert train[0] == {"question": "q0", "answer": "2+2=<<2+2=4>>4\n#### 4"}
    assert "train: 2 problems" in done.stdout and "test: 1 problems" in done.stdout
    wider = tmp_path / "wider"
    subprocess.run([sys.executable, str(SCRIPT), "--source", str(src), "--out", str(wider), "--max-steps", "2"],
                   check=True, capture_output=True)
    assert len((wider / "train.jsonl").read_text().splitlines()) == 3
