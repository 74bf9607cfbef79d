"""Run folders and their lineage: where each run lives and what it was made from.

A run folder `runs/<name>-<timestamp>/` holds config.yaml, manifest.json (data), metrics.jsonl,
checkpoints/, final/ and lmtune.json — the lineage: base model and weight hash, dataset
fingerprints, config hash, lmtune version and git commit, and the final metrics.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import lmtune
from lmtune.config import RunConfig
from lmtune.config_file import dump_config, load_config

LINEAGE = "lmtune.json"


def new_run_dir(cfg: RunConfig) -> Path:
    """A fresh, unique run folder under cfg.output.dir."""
    root = Path(cfg.output.dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = root / f"{cfg.output.name}-{stamp}"
    n = 2
    while path.exists():
        path = root / f"{cfg.output.name}-{stamp}-{n}"
        n += 1
    path.mkdir(parents=True)
    return path


def config_hash(cfg: RunConfig) -> str:
    """sha256 of the resolved config in canonical YAML."""
    return hashlib.sha256(dump_config(cfg).encode()).hexdigest()


def git_commit() -> str | None:
    """The commit of the lmtune source tree, when it is a git checkout."""
    src = Path(lmtune.__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def write_lineage(run_dir: Path, record: dict[str, Any]) -> None:
    """Write lmtune.json (merged into an existing one, so resumed runs keep their history)."""
    path = run_dir / LINEAGE
    old = json.loads(path.read_text()) if path.exists() else {}
    old.update(record)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(old, indent=2, default=str))
    tmp.replace(path)


def read_lineage(run_dir: Path) -> dict[str, Any]:
    """The lineage record of a run (empty when the run never got that far)."""
    path = Path(run_dir) / LINEAGE
    return json.loads(path.read_text()) if path.exists() else {}


def list_runs(root: str | Path = "runs") -> list[Path]:
    """Run folders under root, oldest first."""
    root = Path(root)
    if not root.exists():
        return []
    return sorted((p for p in root.iterdir() if (p / "config.yaml").exists()), key=lambda p: p.stat().st_mtime)


def find_resume_point(cfg: RunConfig, resume: str) -> tuple[Path, Path]:
    """(run folder, checkpoint) for `--resume latest` (this config's newest run) or a path."""
    from lmtune.train.checkpoint import latest_checkpoint

    if resume == "latest":
        candidates = [p for p in list_runs(cfg.output.dir) if p.name.startswith(cfg.output.name + "-")]
        for run_dir in reversed(candidates):
            if "result" in read_lineage(run_dir):
                continue  # finished: nothing to resume
            found = latest_checkpoint(run_dir / "checkpoints")
            if found is not None:
                return run_dir, found
        raise FileNotFoundError(
            f"no unfinished run of {cfg.output.name!r} under {cfg.output.dir} has a checkpoint to resume"
        )
    path = Path(resume)
    if (path / "state.json").exists():
        return path.parent.parent, path
    found = latest_checkpoint(path / "checkpoints")
    if found is None:
        raise FileNotFoundError(f"{path} is neither a checkpoint nor a run folder with checkpoints")
    return path, found


def run_config(run_dir: Path) -> RunConfig:
    """The resolved config a run was started with."""
    return load_config(Path(run_dir) / "config.yaml")


def lineage_base(cfg: RunConfig, manifest: dict[str, Any], weights: str | None) -> dict[str, Any]:
    """The part of lmtune.json known before training starts."""
    return {
        "lmtune_version": lmtune.__version__,
        "git_commit": git_commit(),
        "config_hash": config_hash(cfg),
        "base_model": {"name": cfg.model.name, "revision": cfg.model.revision, "weights_sha256": weights},
        "method": {"task": cfg.method.task, "peft": cfg.method.peft},
        "data": {
            "fingerprints": manifest.get("fingerprints", {}),
            "counts": manifest.get("counts", {}),
            "sources": manifest.get("sources", []),
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def compare_runs(run_dirs: list[Path]) -> str:
    """A markdown table of several runs side by side: base, data, steps, validation loss, test metrics."""
    metrics = ("accuracy", "macro_f1", "numeric_match", "exact_match", "bleu", "test_loss")
    rows, seen = [], set()
    for run in run_dirs:
        lineage = read_lineage(run)
        if not lineage:
            raise FileNotFoundError(f"{run} has no {LINEAGE} (not a run folder, or it never started)")
        result = lineage.get("result", {})
        systems = (result.get("test") or {}).get("systems", {})
        row = {
            "run": Path(run).name,
            "base model": lineage.get("base_model", {}).get("name", "?"),
            "method": "{task}/{peft}".format(**lineage.get("method", {"task": "?", "peft": "?"})),
            "train data": (lineage.get("data", {}).get("fingerprints", {}).get("train") or "?")[:12],
            "steps": result.get("steps", "incomplete"),
            "val loss": result.get("validation", {}).get("eval_loss"),
        }
        for system, scores in systems.items():
            for m in metrics:
                if m in scores:
                    key = f"{system}: {m}"
                    row[key] = scores[m]
                    seen.add(key)
        rows.append(row)
    columns = ["run", "base model", "method", "train data", "steps", "val loss", *sorted(seen)]

    def cell(value: Any) -> str:
        return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
