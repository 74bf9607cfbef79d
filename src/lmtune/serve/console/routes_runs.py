"""Console runs page: runs made with `lmtune train` in the folder the server is configured with
(`console_runs_dir`), and their self-contained report.html, sandboxed so it cannot run scripts.

These runs belong to whoever runs the server, not to a project: every signed-in key sees them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse

from lmtune.serve.console.web import REPORT_CSP, ConsoleError, SignedIn, render, state

router = APIRouter()


def _run(folder: Path) -> dict[str, Any]:
    """What the runs table shows of a run folder: name, time, model and task from its config.yaml."""
    try:
        cfg = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        cfg = {}
    section = lambda name: cfg.get(name) if isinstance(cfg.get(name), dict) else {}  # noqa: E731
    return {"name": folder.name, "modified": int(folder.stat().st_mtime), "model": section("model").get("name"),
            "task": section("method").get("task"), "has_report": (folder / "report.html").exists()}


def _runs(request: Request) -> list[dict[str, Any]]:
    root = state(request).runs_dir
    if root is None or not root.is_dir():
        return []
    folders = [p for p in root.iterdir() if p.is_dir() and (p / "config.yaml").exists()]
    return [_run(p) for p in sorted(folders, key=lambda p: p.stat().st_mtime, reverse=True)]


@router.get("/runs")
def runs_page(request: Request, session: SignedIn) -> HTMLResponse:
    """The CLI runs, newest first."""
    return render(request, "runs.html", session, runs=_runs(request), runs_dir=state(request).runs_dir)


@router.get("/runs/{name}/report")
def run_report(request: Request, session: SignedIn, name: str) -> FileResponse:
    """A run's report.html (only direct sub-folders of the runs folder: no path tricks)."""
    root = state(request).runs_dir
    match = next((r for r in _runs(request) if r["name"] == name and r["has_report"]), None)
    if root is None or match is None:
        raise ConsoleError(404, f"No run with a report named '{name}'")
    return FileResponse(root / name / "report.html", media_type="text/html",
                        headers={"Content-Security-Policy": REPORT_CSP})
