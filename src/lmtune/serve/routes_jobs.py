"""/v1/fine_tuning/jobs: create, list, retrieve, cancel, pause, resume, events and checkpoints.

Usage:
    app.include_router(router, prefix="/v1")
    job = client.fine_tuning.jobs.create(model="tiny-llama", training_file=f.id,
                                         method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}})

Creating a job only writes its row (status validating_files); a worker process validates the
files, trains, and records events and checkpoints. Cancel and pause change the status at once; the
worker sees the change and stops the training process.
"""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import ValidationError

from lmtune.serve.auth import Project
from lmtune.serve.errors import APIError, not_found
from lmtune.serve.jobs import (
    CANCELLABLE,
    PAUSABLE,
    build_run_config,
    checkpoint_view,
    estimated_finish,
    event_view,
    job_view,
    method_view,
    requested_hyperparameters,
    resolve_hyperparameters,
    transition,
    with_hyperparameters,
)
from lmtune.serve.query import dict_query, refuse_unknown_query, takes_dict_query
from lmtune.serve.routes_files import get_file, page_view
from lmtune.serve.routes_graders import check_grader
from lmtune.serve.schemas import CreateJob
from lmtune.serve.store import encode, new_id, now

router = APIRouter(tags=["fine-tuning"], dependencies=[Depends(refuse_unknown_query)])
# RunConfig fields a job sets from the request, and the request parameter to blame when one is rejected.
CONFIG_PARAMS = {"training.epochs": "n_epochs", "training.batch_size": "batch_size",
                 "training.learning_rate": "learning_rate_multiplier", "method.dpo.beta": "beta",
                 "training.seed": "seed", "model.name": "model"}


def get_job(request: Request, project: str, job_id: str) -> dict[str, Any]:
    """The caller's job, else 404."""
    row = request.app.state.store.one("SELECT * FROM jobs WHERE id=? AND project=?", (job_id, project))
    if row is None:
        raise not_found("job", job_id, "fine_tuning_job_id")
    return row


def _check_config(job: dict[str, Any], request: Request) -> None:
    """Build the job's RunConfig now, so a value lmtune rejects is a 400 naming the parameter."""
    cfg = request.app.state.cfg
    # "auto" is resolved once the files are counted; every count resolves it to valid values, so check with 1.
    provisional = resolve_hyperparameters(job["hyperparameters"], cfg, n_examples=1)
    try:
        build_run_config({**job, "method": with_hyperparameters(job["method"], provisional)}, cfg, "train.jsonl", None)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        name = CONFIG_PARAMS.get(where, where)
        param = name if name in ("seed", "model") else f"method.{job['method']['type']}.hyperparameters.{name}"
        raise APIError(400, f"{param}: {first['msg']}", param=param, code="invalid_value") from None


def _grader_of(body: CreateJob) -> dict[str, Any] | None:
    """A reinforcement job's grader as JSON (None for other methods)."""
    rft = body.method.reinforcement if body.method and body.method.type == "reinforcement" else None
    return rft.grader.model_dump(exclude_none=True) if rft else None


@router.post("/fine_tuning/jobs")
def create_job(request: Request, project: Project, body: CreateJob) -> dict[str, Any]:
    """Create a job; it starts in validating_files."""
    cfg, store = request.app.state.cfg, request.app.state.store
    if body.model not in cfg.base_models:
        raise APIError(400, f"Model {body.model} is not available for fine-tuning; choose one of "
                       f"{', '.join(cfg.base_models)}", param="model", code="model_not_available")
    for param in ("training_file", "validation_file"):
        file_id = getattr(body, param)
        if file_id is not None and get_file(request, project, file_id, param)["purpose"] != "fine-tune":
            raise APIError(400, f"{param} {file_id} was not uploaded with purpose 'fine-tune'", param=param)
    request.state.model = body.model
    if body.method and body.method.reinforcement and body.method.type == "reinforcement":
        check_grader(request, project, body.method.reinforcement.grader, fine_tuned_judges=False)
    hp = requested_hyperparameters(body)
    job = {"id": new_id("ftjob"), "project": project, "model": body.model, "training_file": body.training_file,
           "validation_file": body.validation_file, "status": "validating_files", "created_at": now(),
           "hyperparameters": hp, "method": method_view(body.method_type, hp, _grader_of(body)),
           "seed": body.seed if body.seed is not None else secrets.randbelow(2**31), "suffix": body.suffix,
           "metadata": body.metadata, "result_files": []}
    _check_config(job, request)
    store.insert("jobs", {**job, "metadata": encode(body.metadata)})
    store.add_event(job["id"], f"Created fine-tuning job: {job['id']}")
    store.add_event(job["id"], f"Validating training file: {body.training_file}"
                    + (f" and validation file: {body.validation_file}" if body.validation_file else ""))
    return job_view(store.one("SELECT * FROM jobs WHERE id=?", (job["id"],)))


@router.get("/fine_tuning/jobs")
@takes_dict_query("metadata")
def list_jobs(request: Request, project: Project, after: str | None = None,
              limit: int = Query(20, ge=1, le=100)) -> dict[str, Any]:
    """The project's jobs, newest first; metadata[key]=value keeps only jobs with that metadata (all of them)."""
    where, params = "project=?", [project]
    for key, value in dict_query(request, "metadata").items():
        where += " AND EXISTS (SELECT 1 FROM json_each(jobs.metadata) WHERE key=? AND value=?)"
        params += [key, value]
    return page_view(request, "jobs", where, tuple(params), after, limit, "desc",
                     lambda row: _job(request, row))


@router.get("/fine_tuning/jobs/{job_id}")
def retrieve_job(request: Request, project: Project, job_id: str) -> dict[str, Any]:
    """One job."""
    return _job(request, get_job(request, project, job_id))


def _job(request: Request, row: dict[str, Any]) -> dict[str, Any]:
    return job_view(row, estimated_finish(request.app.state.store, row))


def _move(request: Request, project: str, job_id: str, to: str, allowed: tuple[str, ...], verb: str,
          **fields: Any) -> dict[str, Any]:
    row = get_job(request, project, job_id)
    store = request.app.state.store
    if not transition(store, job_id, to, allowed, **fields):
        raise APIError(409, f"Cannot {verb} job {job_id}: its status is {row['status']}",
                       param="fine_tuning_job_id", code="invalid_job_status")
    store.add_event(job_id, {"cancelled": "Job cancelled", "paused": "Job paused", "queued": "Job resumed"}[to])
    return job_view(get_job(request, project, job_id))


@router.post("/fine_tuning/jobs/{job_id}/cancel")
def cancel_job(request: Request, project: Project, job_id: str) -> dict[str, Any]:
    """Cancel a job that has not finished; its training process is stopped."""
    return _move(request, project, job_id, "cancelled", CANCELLABLE, "cancel", finished_at=now())


@router.post("/fine_tuning/jobs/{job_id}/pause")
def pause_job(request: Request, project: Project, job_id: str) -> dict[str, Any]:
    """Pause a queued or running job; a running one stops after its next checkpoint."""
    known = request.app.state.store.one("SELECT MAX(step) AS step FROM checkpoints WHERE job_id=?", (job_id,))
    return _move(request, project, job_id, "paused", PAUSABLE, "pause", pause_step=(known or {}).get("step") or 0)


@router.post("/fine_tuning/jobs/{job_id}/resume")
def resume_job(request: Request, project: Project, job_id: str) -> dict[str, Any]:
    """Queue a paused job again; it continues from its latest checkpoint."""
    return _move(request, project, job_id, "queued", ("paused",), "resume")


@router.get("/fine_tuning/jobs/{job_id}/events")
def list_events(request: Request, project: Project, job_id: str, after: str | None = None,
                limit: int = Query(20, ge=1, le=1000)) -> dict[str, Any]:
    """The job's events, newest first."""
    get_job(request, project, job_id)
    return page_view(request, "events", "job_id=?", (job_id,), after, limit, "desc", event_view)


@router.get("/fine_tuning/jobs/{job_id}/checkpoints")
def list_checkpoints(request: Request, project: Project, job_id: str, after: str | None = None,
                     limit: int = Query(10, ge=1, le=100)) -> dict[str, Any]:
    """The job's checkpoints, newest first."""
    get_job(request, project, job_id)
    return page_view(request, "checkpoints", "job_id=?", (job_id,), after, limit, "desc", checkpoint_view)
