"""Console jobs pages: the list (live status), creation, and one job with live curves, events,
checkpoints, hyperparameters, cancel/pause/resume and the evaluation report when there is one.

Jobs are created, moved and read with the API's own route functions, so the console accepts and
refuses exactly what the API does.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from lmtune.serve import routes_files as files_api
from lmtune.serve import routes_jobs as api
from lmtune.serve.console.session import Session
from lmtune.serve.console.web import (
    REPORT_CSP,
    TERMINAL,
    ConsoleError,
    SignedIn,
    api_errors,
    redirect,
    render,
    require_csrf,
)
from lmtune.serve.errors import APIError
from lmtune.serve.jobs import BASE_LEARNING_RATE, CANCELLABLE, PAUSABLE, job_view
from lmtune.serve.schemas import CreateJob
from lmtune.train.metrics_log import read_metrics

router = APIRouter()
ACTIONS = {"cancel": api.cancel_job, "pause": api.pause_job, "resume": api.resume_job}
# The reward curve of a preference job: the mean margin between chosen and rejected rewards.
REWARD_KEYS = (("train_margin", "reward margin"), ("train_reward", "mean reward"))
EVENTS_SHOWN = 50


def _jobs(request: Request, project: str) -> list[dict[str, Any]]:
    return api.list_jobs(request, project, after=None, limit=100)["data"]


def _form_page(request: Request, session: Session, error: str | None = None, status: int = 200,
               **values: Any) -> HTMLResponse:
    files = files_api.list_files(request, session.project, None, 10000, "desc", "fine-tune")["data"]
    return render(request, "jobs.html", session, status=status, jobs=_jobs(request, session.project), files=files,
                  base_models=request.app.state.cfg.base_models, error=error, form=values, terminal=TERMINAL)


@router.get("/jobs")
def jobs_page(request: Request, session: SignedIn) -> HTMLResponse:
    """The project's jobs (refreshing while any is active) and the form that creates one."""
    return _form_page(request, session)


@router.get("/jobs/table")
def jobs_table(request: Request, session: SignedIn) -> HTMLResponse:
    """The jobs table alone, for htmx polling."""
    return render(request, "jobs_table.html", session, jobs=_jobs(request, session.project), terminal=TERMINAL)


def _metadata(text: str) -> dict[str, str] | None:
    """`key=value` lines -> a dict (None when empty)."""
    pairs = [line.partition("=") for line in text.splitlines() if line.strip()]
    bad = [k for k, eq, _ in pairs if not eq]
    if bad:
        raise ValueError(f"metadata: write one key=value per line; got '{bad[0].strip()}'")
    return {k.strip(): v.strip() for k, _, v in pairs} or None


def _number(text: str) -> int | float | str:
    """A form field's number as JSON would carry it (the API takes numbers, not numeric strings);
    anything else stays text, for the API's range check to name."""
    text = text.strip()
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _create_body(form: dict[str, str]) -> CreateJob:
    """The API's CreateJob from the form's fields (blank hyperparameters mean "auto")."""
    method = form.get("method") or "supervised"
    names = ("n_epochs", "batch_size", "learning_rate_multiplier") + (("beta",) if method == "dpo" else ())
    hp: dict[str, Any] = {k: _number(form[k]) for k in names if form.get(k, "").strip()}
    body: dict[str, Any] = {"model": form.get("model", ""), "training_file": form.get("training_file", ""),
                            "validation_file": form.get("validation_file") or None,
                            "suffix": form.get("suffix") or None, "seed": form.get("seed") or None,
                            "metadata": _metadata(form.get("metadata", "")),
                            "method": {"type": method, method: {"hyperparameters": hp}}}
    return CreateJob.model_validate(body)


@router.post("/jobs", response_model=None)
async def create(request: Request, session: SignedIn) -> Response:
    """Create a job with the API's create_job; a refused value is shown above the form, naming the field."""
    form = {k: str(v) for k, v in (await request.form()).items()}
    require_csrf(request, session, form.pop("csrf_token", ""))
    try:
        body = _create_body(form)
    except ValueError as err:  # pydantic's ValidationError is a ValueError
        message = str(err)
        if isinstance(err, ValidationError):
            first = err.errors()[0]
            message = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
        return _form_page(request, session, message, 400, **form)
    try:
        job = await run_in_threadpool(api.create_job, request, session.project, body)
    except APIError as err:
        return _form_page(request, session, err.message, err.status, **form)
    return redirect(f"/jobs/{job['id']}")


def _job(request: Request, project: str, job_id: str) -> dict[str, Any]:
    with api_errors():
        return api.get_job(request, project, job_id)


def _report(row: dict[str, Any]) -> Path | None:
    path = Path(row["run_dir"]) / "report.html" if row["run_dir"] else None
    return path if path and path.exists() else None


def _panel_values(request: Request, row: dict[str, Any]) -> dict[str, Any]:
    store, job_id = request.app.state.store, row["id"]
    events = store.all("SELECT * FROM events WHERE job_id=? ORDER BY seq DESC LIMIT ?", (job_id, EVENTS_SHOWN))
    checkpoints = store.all("SELECT * FROM checkpoints WHERE job_id=? ORDER BY seq DESC", (job_id,))
    job = job_view(row)
    hp = dict(job["method"][job["method"]["type"]]["hyperparameters"])
    multiplier = hp.get("learning_rate_multiplier")  # "auto" until the files are validated (serve/auto.py)
    hp["learning_rate"] = BASE_LEARNING_RATE * multiplier if isinstance(multiplier, (int, float)) else "auto"
    config = request.app.state.cfg.jobs_dir / job_id / "config.yaml"
    return {"job": job, "events": events, "checkpoints": checkpoints, "hyperparameters": hp,
            "run_config": config.read_text(encoding="utf-8") if config.exists() else None,
            "has_report": _report(row) is not None, "terminal": TERMINAL,
            "actions": [a for a, ok in (("pause", row["status"] in PAUSABLE), ("resume", row["status"] == "paused"),
                                        ("cancel", row["status"] in CANCELLABLE)) if ok]}


@router.get("/jobs/{job_id}")
def job_page(request: Request, session: SignedIn, job_id: str) -> HTMLResponse:
    """One job (404 for another project's)."""
    return render(request, "job.html", session, **_panel_values(request, _job(request, session.project, job_id)))


@router.get("/jobs/{job_id}/panel")
def job_panel(request: Request, session: SignedIn, job_id: str) -> HTMLResponse:
    """The job's live part (status, actions, checkpoints, events), for htmx polling."""
    return render(request, "job_panel.html", session, **_panel_values(request, _job(request, session.project, job_id)))


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


@router.get("/jobs/{job_id}/metrics")
def job_metrics(request: Request, session: SignedIn, job_id: str) -> dict[str, Any]:
    """The curves so far from the run's metrics.jsonl: steps, train/validation loss and, for preference jobs, reward."""
    row = _job(request, session.project, job_id)
    records = read_metrics(Path(row["run_dir"]) / "metrics.jsonl") if row["run_dir"] else []
    by_step: dict[int, dict[str, Any]] = {}
    for r in records:
        if r.get("kind") == "train":
            by_step.setdefault(int(r.get("step", 0)), {}).update(r)
        elif r.get("kind") == "eval":
            by_step.setdefault(int(r.get("step", 0)), {})["valid_loss"] = r.get("eval_loss")
    steps = sorted(s for s, r in by_step.items() if "loss" in r)
    reward = next(((k, label) for k, label in REWARD_KEYS if any(k in by_step[s] for s in steps)), None)
    out: dict[str, Any] = {"status": row["status"], "terminal": row["status"] in TERMINAL, "step": steps,
                           "train_loss": [_finite(by_step[s]["loss"]) for s in steps],
                           "valid_loss": [_finite(by_step[s].get("valid_loss")) for s in steps]}
    if reward:
        out["reward"] = [_finite(by_step[s].get(reward[0])) for s in steps]
        out["reward_label"] = reward[1]
    return out


@router.post("/jobs/{job_id}/{action}")
def move(request: Request, session: SignedIn, job_id: str, action: str, csrf_token: str = Form("")) -> Response:
    """Cancel, pause or resume with the API's own functions (409 as a page when the status forbids it)."""
    require_csrf(request, session, csrf_token)
    if action not in ACTIONS:
        raise ConsoleError(404, f"No such action: '{action}'")
    with api_errors():
        ACTIONS[action](request, session.project, job_id)
    return redirect(f"/jobs/{job_id}")


@router.get("/jobs/{job_id}/report")
def job_report(request: Request, session: SignedIn, job_id: str) -> FileResponse:
    """The run's evaluation report.html, sandboxed (no scripts) by its own CSP."""
    path = _report(_job(request, session.project, job_id))
    if path is None:
        raise ConsoleError(404, f"Job {job_id} has no evaluation report")
    return FileResponse(path, media_type="text/html", headers={"Content-Security-Policy": REPORT_CSP})
