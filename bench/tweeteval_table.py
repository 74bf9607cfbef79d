"""Print the TweetEval results table of docs/results.md from finished runs (the newest run of each config).

    python bench/tweeteval_table.py [runs/tweeteval]

Each row: the task's official metric on the whole test set (macro-F1; F1 of the ironic class for
irony) with its 95 % bootstrap interval (bold in the first table where it beats both FastText and LSTM), accuracy, the zero-shot prompt baseline, training time,
wall time, peak memory and the command that made it.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

TASKS = ("emotion", "irony", "hate", "offensive")
MODELS = {  # config-name suffix -> row label
    "minilm": "lmtune minilm-l6 (full fine-tuning)",
    "smollm2": "lmtune smollm2-135m-instruct (LoRA r16 + head)",
    "minilm-head": "lmtune minilm-l6, encoder frozen, head only",
}
PAPER = {  # ../shared/data/README.md: TweetEval paper and leaderboard, test sets
    "SVM": (64.7, 61.7, 36.7, 52.3), "FastText": (65.2, 63.1, 50.6, 73.4), "LSTM": (66.0, 62.8, 52.6, 71.7),
    "RoBERTa-base": (76.1, 59.7, 46.6, 79.5),
}


def official(task: str, scores: dict) -> tuple[float, list[float]]:
    """TweetEval's metric for the task (x100) and its interval."""
    key = "positive_f1" if task == "irony" else "macro_f1"
    return 100 * scores[key], [100 * x for x in scores[f"{key}_ci"]]


def newest_run(root: Path, name: str) -> Path | None:
    """The newest finished run folder of a config name."""
    # Only <name>-<timestamp>: hate-minilm must not pick up hate-minilm-head-... or other variants.
    stamped = re.compile(rf"{re.escape(name)}-\d{{8}}-\d{{6}}")
    done = [p for p in sorted(root.glob(f"{name}-*")) if stamped.fullmatch(p.name) and (p / "eval.json").exists()]
    return done[-1] if done else None


def main(root: Path) -> None:
    """Print the markdown tables."""
    cells: dict[tuple[str, str], str] = {}
    details = []
    for task in TASKS:
        for model in MODELS:
            run = newest_run(root, f"{task}-{model}")
            if run is None:
                cells[task, model] = "—"
                continue
            evaluation = json.loads((run / "eval.json").read_text())
            lineage = json.loads((run / "lmtune.json").read_text())
            tuned = evaluation["systems"]["fine-tuned"]
            base = evaluation["systems"].get("base zero-shot", {})
            value, ci = official(task, tuned)
            # Bold where the row beats both FastText and LSTM (the target).
            beaten = max(PAPER["FastText"][TASKS.index(task)], PAPER["LSTM"][TASKS.index(task)])
            cells[task, model] = f"**{value:.1f}**" if value > beaten else f"{value:.1f}"
            result = lineage["result"]
            base_value = f"{official(task, base)[0]:.1f}" if "macro_f1" in base else "-"
            details.append(
                f"| {task} | {model} | {value:.1f} [{ci[0]:.1f}, {ci[1]:.1f}] | {100 * tuned['accuracy']:.1f} | "
                f"{base_value} | {result['steps']} | {result['train_seconds'] / 60:.1f} | "
                f"{result['wall_seconds'] / 60:.1f} | {result['peak_memory_mb'] / 1024:.1f} | "
                f"`lmtune train configs/tweeteval/{task}-{model}.yaml` |")
    print("| model | " + " | ".join(TASKS) + " |")
    print("|---|" + "---:|" * len(TASKS))
    for name, values in PAPER.items():
        print(f"| {name} (paper) | " + " | ".join(f"{v:.1f}" for v in values) + " |")
    for model, label in MODELS.items():
        print(f"| {label} | " + " | ".join(cells[t, model] for t in TASKS) + " |")
    print()
    print("| task | model | official metric [95 % CI] | accuracy | zero-shot baseline | steps | train min | "
          "wall min | peak RSS GB | command |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    print("\n".join(details))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/tweeteval"))
