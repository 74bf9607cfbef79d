"""Deleting a file or a model removes every copy the service made of it, not only its database row.

Usage:
    purge_file(cfg, store, row)     # after files.delete: the upload, caches built from it, runs without a model
    purge_model(cfg, row)           # after models.delete: the run folder (weights, checkpoints) and the job's log

What holds a file's examples: its blob; the prepared-data caches built from it (in the project's cache,
<data_dir>/cache/<project>/data/<key>/, found by the source path in their manifest); the project's
baseline scores (<data_dir>/cache/<project>/baselines/, which keep prompts and cannot be traced to one
file, so the whole folder goes: a cache, rebuilt when needed); and the folders of jobs trained on it.
A job that produced a model keeps its run folder until the model is deleted (the weights are the
model; OpenAI also keeps a model whose training file is deleted), less the copies of examples the run
wrote beside them (predictions.jsonl). Jobs that ended without a model lose their folders at once.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Iterator

from lmtune.serve import blobs
from lmtune.serve.config import ServeConfig
from lmtune.serve.store import Store

EXAMPLE_COPIES = ("predictions.jsonl",)  # files of a run folder that quote its examples
ENDED_WITHOUT_MODEL = ("failed", "cancelled")


def _inside(path: Path, folder: Path) -> bool:
    """Whether `path` lies in `folder` (never delete outside the data folder, whatever a row says)."""
    return path.resolve().is_relative_to(folder.resolve())


def _remove_tree(path: Path, within: Path) -> None:
    if path.exists() and _inside(path, within):
        shutil.rmtree(path, ignore_errors=True)


def caches_built_from(cache_dir: Path, source: str) -> Iterator[Path]:
    """The prepared-data caches under `cache_dir`/data whose manifest lists `source` as an input file."""
    for manifest in (cache_dir / "data").glob("*/manifest.json"):
        try:
            sources = json.loads(manifest.read_text(encoding="utf-8")).get("sources", {})
        except (OSError, ValueError):
            yield manifest.parent  # unreadable: it may hold anything, so it goes too
            continue
        if any(f.get("path") == source for files in sources.values() for f in files):
            yield manifest.parent


def purge_file(cfg: ServeConfig, store: Store, row: dict[str, Any]) -> None:
    """Remove the blob of a deleted file and every copy of its examples the service made."""
    blobs.remove(row["path"])
    cache = cfg.project_cache(row["project"])
    for folder in list(caches_built_from(cache, row["path"])):
        _remove_tree(folder, cfg.root)
    _remove_tree(cache / "baselines", cfg.root)
    jobs = store.all("SELECT id, status, run_dir FROM jobs WHERE (training_file=? OR validation_file=?) AND project=?",
                     (row["id"], row["id"], row["project"]))
    for job in jobs:
        run_dir = Path(job["run_dir"]) if job["run_dir"] else None
        if job["status"] in ENDED_WITHOUT_MODEL:
            for folder in [*cfg.runs_dir.glob(f"{job['id']}-*"), cfg.jobs_dir / job["id"]]:
                _remove_tree(folder, cfg.root)
        elif run_dir is not None and _inside(run_dir, cfg.runs_dir):
            for name in EXAMPLE_COPIES:
                for copy in run_dir.rglob(name):
                    copy.unlink(missing_ok=True)


def purge_model(cfg: ServeConfig, row: dict[str, Any]) -> None:
    """Remove a deleted model's run folder (weights, checkpoints, metrics) and its job's config and log."""
    _remove_tree(Path(row["path"]), cfg.runs_dir)
    _remove_tree(cfg.jobs_dir / row["job_id"], cfg.jobs_dir)
