"""Console models page (base and fine-tuned, delete) and the playground: one prompt, two models' answers
streamed side by side through the API's own chat completion route.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import ValidationError

from lmtune.serve import routes_models as api
from lmtune.serve.console.web import SignedIn, api_errors, redirect, render, require_csrf
from lmtune.serve.errors import APIError, error_body
from lmtune.serve.schemas import ChatRequest

router = APIRouter()


def _models(request: Request, project: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(base models, the project's fine-tuned models with the job that made them)."""
    bases = set(request.app.state.cfg.base_models)
    data = api.list_models(request, project)["data"]
    jobs = {r["id"]: r["job_id"] for r in request.app.state.store.all(
        "SELECT id, job_id FROM models WHERE project=? AND deleted=0", (project,))}
    return ([m for m in data if m["id"] in bases],
            [{**m, "job_id": jobs.get(m["id"])} for m in data if m["id"] not in bases])


@router.get("/models")
def models_page(request: Request, session: SignedIn) -> HTMLResponse:
    """Base models and the project's fine-tuned models."""
    bases, tuned = _models(request, session.project)
    return render(request, "models.html", session, bases=bases, tuned=tuned)


@router.post("/models/delete")
def delete(request: Request, session: SignedIn, model: str = Form(""), csrf_token: str = Form("")) -> Response:
    """Delete a fine-tuned model with the API's delete_model (ids hold colons, so the id is a form field)."""
    require_csrf(request, session, csrf_token)
    with api_errors():
        api.delete_model(request, session.project, model)
    return redirect("/models")


@router.get("/playground")
def playground_page(request: Request, session: SignedIn, model: str = "") -> HTMLResponse:
    """The side-by-side form: a base model on the left, a fine-tuned one (or another base) on the right."""
    bases, tuned = _models(request, session.project)
    return render(request, "playground.html", session, bases=bases, tuned=tuned, chosen=model,
                  max_tokens_limit=request.app.state.cfg.max_tokens_limit)


@router.post("/playground/stream", response_model=None)
def stream(request: Request, session: SignedIn, model: str = Form(""), prompt: str = Form(""),
           temperature: float = Form(0.0), max_tokens: int = Form(64), csrf_token: str = Form("")) -> Response:
    """One model's answer as the API's server-sent events (errors in the API's JSON shape)."""
    require_csrf(request, session, csrf_token)
    try:
        body = ChatRequest(model=model, messages=[{"role": "user", "content": prompt}], stream=True,
                           temperature=temperature, max_tokens=max_tokens)
        if not prompt.strip():
            raise APIError(400, "prompt: write something for the models to answer", param="prompt")
        return api.chat_completions(request, session.project, body)
    except ValidationError as invalid:
        first = invalid.errors()[0]
        param = ".".join(str(p) for p in first["loc"])
        refused = APIError(400, f"{param}: {first['msg']}", param=param)
    except APIError as err:
        refused = err
    body = error_body(refused.status, refused.message, refused.type, refused.param, refused.code)
    return JSONResponse(body, status_code=refused.status)
