"""Console files page: the project's files, upload (stored by the API's own upload), and the validator's report.

After an upload the file is checked with `lmtune data validate`'s validator: every error and warning
with its line number, and token statistics counted with the chosen base model's tokenizer.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, Response

from lmtune.serve import routes_files as api
from lmtune.serve.console.web import SignedIn, api_errors, redirect, render, require_csrf, state

router = APIRouter()


def _tokenizer(request: Request, model: str) -> Any:
    """The tokenizer of base model `model`, loaded once per server."""
    from lmtune.config import ModelConfig
    from lmtune.model.load import load_tokenizer

    cache = state(request).tokenizers
    if model not in cache:
        cache[model] = load_tokenizer(ModelConfig(name=model))
    return cache[model]


def validation_report(request: Request, row: dict[str, Any], model: str) -> dict[str, Any]:
    """The validator's report on a stored file, issues naming the uploaded file name, tokens counted for `model`."""
    from lmtune.config import DataConfig
    from lmtune.data.encode import count_tokens
    from lmtune.data.validate import report_to_json, validate_file

    cfg = request.app.state.cfg
    tokenizer = _tokenizer(request, model)
    data_cfg = DataConfig(max_seq_len=cfg.max_seq_len)
    report = validate_file(row["path"], count_tokens=lambda ex: count_tokens(ex, tokenizer, data_cfg),
                           max_seq_len=cfg.max_seq_len)
    report.issues = [dataclasses.replace(i, file=row["filename"]) for i in report.issues]  # not the blob path
    return report_to_json(report)


def _model(request: Request, tokenizer: str) -> str:
    """The base model whose tokenizer counts tokens: the one asked for, else the first."""
    bases = request.app.state.cfg.base_models
    return tokenizer if tokenizer in bases else bases[0]


def _files(request: Request, project: str) -> list[dict[str, Any]]:
    return api.list_files(request, project, after=None, limit=10000, order="desc", purpose=None)["data"]


@router.get("/files")
def files_page(request: Request, session: SignedIn) -> HTMLResponse:
    """The project's files and the upload form."""
    return render(request, "files.html", session, files=_files(request, session.project),
                  base_models=request.app.state.cfg.base_models)


@router.post("/files")
def upload(request: Request, session: SignedIn, file: UploadFile = File(...), tokenizer: str = Form(""),
           csrf_token: str = Form("")) -> HTMLResponse:
    """Store an upload with the API's upload_file, then show the validator's report on it."""
    require_csrf(request, session, csrf_token)
    model = _model(request, tokenizer)
    with api_errors():
        view = api.upload_file(request, session.project, file=file, purpose="fine-tune")
    row = api.get_file(request, session.project, view["id"])
    report = validation_report(request, row, model)
    return render(request, "file.html", session, status=200 if report["ok"] else 422, file=api.file_view(row),
                  report=report, model=model, base_models=request.app.state.cfg.base_models)


@router.get("/files/{file_id}")
def file_page(request: Request, session: SignedIn, file_id: str, tokenizer: str = "") -> HTMLResponse:
    """One file with the validator's report (404 for another project's file)."""
    model = _model(request, tokenizer)
    with api_errors():
        row = api.get_file(request, session.project, file_id)
    report = validation_report(request, row, model) if row["purpose"] == "fine-tune" else None
    return render(request, "file.html", session, file=api.file_view(row), report=report, model=model,
                  base_models=request.app.state.cfg.base_models)


@router.post("/files/{file_id}/delete")
def delete(request: Request, session: SignedIn, file_id: str, csrf_token: str = Form("")) -> Response:
    """Delete a file with the API's delete_file (refused while a running job uses it)."""
    require_csrf(request, session, csrf_token)
    with api_errors():
        api.delete_file(request, session.project, file_id)
    return redirect("/files")
