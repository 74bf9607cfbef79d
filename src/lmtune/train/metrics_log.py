"""Per-step metrics: `metrics.jsonl` in the run folder, optional trackers, and the loss-curve PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any



class MetricsLog:
    """Appends one JSON object per record to metrics.jsonl (flushed, so a crash keeps what was logged)."""

    def __init__(self, path: Path, accelerator=None):
        self.path = path
        self.accelerator = accelerator

    def write(self, record: dict[str, Any]) -> None:
        """Append a record; also send numeric values to the accelerate trackers, if any."""
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.accelerator is not None and self.accelerator.trackers:
            numbers = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
            self.accelerator.log(numbers, step=record.get("step"))


def truncate_metrics(path: Path, step: int) -> None:
    """Drop records logged after `step` (a resumed run logs those steps again)."""
    if not path.exists():
        return
    kept = [r for r in read_metrics(path) if r.get("step", 0) <= step]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
    tmp.replace(path)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl file (an interrupted last line is skipped)."""
    records = []
    if not path.exists():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def plot_losses(metrics_path: Path, out_png: Path) -> Path:
    """Training and validation loss against the optimizer step."""
    records = read_metrics(metrics_path)
    train = [(r["step"], r["loss"]) for r in records if r.get("kind") == "train"]
    evals = [(r["step"], r["eval_loss"]) for r in records if r.get("kind") == "eval" and "eval_loss" in r]
    fig, ax = _pyplot().subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss", linewidth=1)
    if evals:
        ax.plot(*zip(*evals), "o-", label="validation loss")
    return _save(fig, ax, "loss (nats/token)", out_png)


def plot_metric(metrics_path: Path, key: str, out_png: Path, label: str, also: tuple[str, ...] = ()) -> Path | None:
    """One training metric (e.g. GRPO's mean reward) against the step, with its validation twin if logged;
    `also` adds the moving averages of related metrics (e.g. monitored rewards) to the same axes."""
    records = read_metrics(metrics_path)
    train = _series(records, "train", "train_" + key)
    evals = _series(records, "eval", "eval_" + key)
    if not train:
        return None
    fig, ax = _pyplot().subplots(figsize=(7, 4), dpi=100)
    ax.plot(*zip(*train), label=f"train {label}", linewidth=1, alpha=0.5)
    if len(train) >= 5:  # a moving average shows the trend through sampling noise
        window = max(5, len(train) // 10)
        ax.plot(*zip(*_moving_mean(train, window)), label=f"train {label} ({window}-step mean)", linewidth=2)
        for other in also:
            series = _series(records, "train", "train_" + other)
            if series:
                ax.plot(*zip(*_moving_mean(series, window)), "--", label=f"train {other} ({window}-step mean)")
    if evals:
        ax.plot(*zip(*evals), "o-", label=f"validation {label}")
    return _save(fig, ax, label, out_png)


def _series(records: list[dict], kind: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of `key` in the records of one kind."""
    return [(r["step"], r[key]) for r in records if r.get("kind") == kind and key in r]


def _moving_mean(series: list[tuple[int, float]], window: int) -> list[tuple[int, float]]:
    """Trailing mean over `window` points (fewer at the start)."""
    values = [v for _, v in series]
    return [(step, sum(values[max(0, i - window + 1) : i + 1]) / len(values[max(0, i - window + 1) : i + 1]))
            for i, (step, _) in enumerate(series)]


def _pyplot():
    """matplotlib's pyplot on the file-only backend, imported at the first plot (~35 MB resident)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: runs happen on machines with no display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, ax, ylabel: str, out_png: Path) -> Path:
    """Label the step axis, add grid and legend, write the PNG and free the figure."""
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png)
    _pyplot().close(fig)
    return out_png
