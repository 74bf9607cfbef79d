"""/v1/files: upload, list (cursor paging), retrieve, delete and download, scoped to the caller's project.

Usage:
    app.include_router(router, prefix="/v1")
    client.files.create(file=open("train.jsonl", "rb"), purpose="fine-tune")   # with the openai client
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse

from lmtune.serve import blobs
from lmtune.serve.auth import Project
from lmtune.serve.errors import APIError, log, not_found
from lmtune.serve.jobs import ACTIVE
from lmtune.serve.purge import purge_file
from lmtune.serve.query import refuse_unknown_query
from lmtune.serve.store import new_id, now

router = APIRouter(tags=["files"], dependencies=[Depends(refuse_unknown_query)])
PURPOSES = ("fine-tune",)


def file_view(row: dict[str, Any]) -> dict[str, Any]:
    """The `file` object of a files row."""
    return {"id": row["id"], "object": "file", "bytes": row["bytes"], "created_at": row["created_at"],
            "filename": row["filename"], "purpose": row["purpose"], "status": row["status"],
            "expires_at": None, "status_details": None}


def get_file(request: Request, project: str, file_id: str, param: str = "file_id") -> dict[str, Any]:
    """The caller's live file `file_id`, else 404 (another project's file looks missing)."""
    row = request.app.state.store.one("SELECT * FROM files WHERE id=? AND project=? AND deleted=0", (file_id, project))
    if row is None:
        raise not_found("file", file_id, param)
    return row


def page_view(request: Request, table: str, where: str, params: tuple, after: str | None, limit: int,
              order: str, view: Any) -> dict[str, Any]:
    """A cursor page {object: list, data, has_more, first_id, last_id}; an unknown cursor is a 400."""
    try:
        rows, more = request.app.state.store.page(table, where, params, after, limit, order)
    except KeyError:
        raise APIError(400, f"after: no such id in this list: '{after}'", param="after") from None
    data = [view(r) for r in rows]
    return {"object": "list", "data": data, "has_more": more,
            "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}


@router.post("/files")
def upload_file(request: Request, project: Project, file: UploadFile = File(...),
                purpose: str = Form(...)) -> dict[str, Any]:
    """Upload a file (multipart); the blob is durable before the row, and the row before the reply."""
    if purpose not in PURPOSES:
        raise APIError(400, f"purpose must be one of {', '.join(PURPOSES)}; got '{purpose}'", param="purpose")
    cfg = request.app.state.cfg
    file_id = new_id("file")
    name = blobs.sanitize_filename(file.filename)
    try:
        path, size = blobs.save_stream(cfg.blob_dir, file_id, name, file.file, cfg.max_upload_bytes)
    except blobs.TooLarge:
        raise APIError(413, f"File too large: the limit is {cfg.max_upload_bytes} bytes", param="file",
                       code="file_too_large") from None
    except OSError as err:  # disk full, folder not writable: the server's problem, said plainly
        log.error("cannot store an upload in %s: %s", cfg.blob_dir, err)
        raise APIError(507, f"The server cannot store the file: {err.strerror or err}", param="file",
                       code="insufficient_storage") from None
    row = {"id": file_id, "project": project, "filename": name, "purpose": purpose, "bytes": size,
           "created_at": now(), "path": str(path), "status": "processed"}
    request.app.state.store.insert("files", row)
    return file_view(row)


@router.get("/files")
def list_files(request: Request, project: Project, after: str | None = None,
               limit: int = Query(10000, ge=1, le=10000), order: Literal["asc", "desc"] = "desc",
               purpose: str | None = None) -> dict[str, Any]:
    """The project's files, newest first by default."""
    where, params = "project=? AND deleted=0", (project,)
    if purpose:
        where, params = where + " AND purpose=?", (project, purpose)
    return page_view(request, "files", where, params, after, limit, order, file_view)


@router.get("/files/{file_id}")
def retrieve_file(request: Request, project: Project, file_id: str) -> dict[str, Any]:
    """One file's metadata."""
    return file_view(get_file(request, project, file_id))


@router.delete("/files/{file_id}")
def delete_file(request: Request, project: Project, file_id: str) -> dict[str, Any]:
    """Delete a file; refused (409) while a job that has not finished uses it."""
    row = get_file(request, project, file_id)
    store = request.app.state.store
    marks = ", ".join("?" for _ in ACTIVE)
    busy = store.one(f"SELECT id FROM jobs WHERE (training_file=? OR validation_file=?) AND status IN ({marks})",  # noqa: S608
                     (file_id, file_id, *ACTIVE))
    if busy:
        raise APIError(409, f"File {file_id} is used by job {busy['id']}, which has not finished", param="file_id",
                       code="file_in_use")
    store.execute("UPDATE files SET deleted=1 WHERE id=?", (file_id,))
    purge_file(request.app.state.cfg, store, row)
    return {"id": file_id, "object": "file", "deleted": True}


@router.get("/files/{file_id}/content")
def file_content(request: Request, project: Project, file_id: str) -> FileResponse:
    """The file's bytes."""
    row = get_file(request, project, file_id)
    return FileResponse(row["path"], media_type="application/octet-stream", filename=row["filename"])
