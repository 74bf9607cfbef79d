"""Errors in OpenAI's shape, so the official client raises its usual exceptions.

Usage:
    raise APIError(404, "No such file: file-abc", param="file_id", code="not_found")
    install_handlers(app)      # APIError, request validation, unknown routes, database down (503), crashes

Every error body is {"error": {"message", "type", "param", "code"}}. Request validation errors
(FastAPI's 422) become 400 invalid_request_error naming the offending parameter, as OpenAI does.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("lmtune.serve")
DATABASE_RETRY_AFTER_S = 2

TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "invalid_request_error",
         404: "invalid_request_error", 409: "invalid_request_error", 413: "invalid_request_error",
         429: "rate_limit_error", 500: "server_error", 503: "server_error", 507: "server_error"}


class APIError(Exception):
    """An error answered to the client with `status` and OpenAI's error object."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type_: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}  # e.g. retry-after on 429
        self.type = type_ or TYPES.get(status, "invalid_request_error")


def not_found(kind: str, ident: str, param: str) -> APIError:
    """The 404 for an id the caller's project cannot see (missing and foreign look the same)."""
    return APIError(404, f"No such {kind}: '{ident}'", param=param, code=f"{kind}_not_found".replace(" ", "_"))


def error_body(status: int, message: str, type_: str, param: str | None, code: str | None) -> dict:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(err: APIError) -> JSONResponse:
    """The JSON response of an APIError."""
    return JSONResponse(error_body(err.status, err.message, err.type, err.param, err.code), status_code=err.status,
                        headers=err.headers)


def _param(loc: tuple) -> str | None:
    """`body.method.supervised.hyperparameters.n_epochs` -> `method.supervised.hyperparameters.n_epochs`."""
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    # Union members add their type name to the location (e.g. `int`, `literal['auto']`): drop them.
    parts = [p for p in parts if not (p.startswith(("literal[", "function-")) or p in ("int", "float", "str"))]
    return ".".join(parts) or None


async def _api_error(_: Request, err: APIError) -> JSONResponse:
    return error_response(err)


def _json_error(first: dict) -> APIError:
    """A body that is not JSON: say so, and where the parser gave up (pydantic says only "JSON decode error")."""
    detail = (first.get("ctx") or {}).get("error")
    where = first.get("loc", ("body", None))[-1]
    text = "We could not parse the JSON body of your request" + (f": {detail}" if detail else "") + (
        f" (at character {where})" if isinstance(where, int) else "") + ". The API expects a JSON object."
    return APIError(400, text, code="invalid_json")


async def _validation(_: Request, err: RequestValidationError) -> JSONResponse:
    first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        return error_response(_json_error(first))
    param = _param(tuple(first.get("loc", ())))
    msg = first.get("msg", "invalid request").removeprefix("Value error, ")
    if first.get("type") == "extra_forbidden":
        msg = "Unrecognized request argument supplied"
    text = f"{param}: {msg}" if param else msg
    return error_response(APIError(400, text, param=param, code="invalid_value"))


async def _http(_: Request, err: StarletteHTTPException) -> JSONResponse:
    codes = {404: "unknown_url", 405: "method_not_allowed"}
    api = APIError(err.status_code, str(err.detail), code=codes.get(err.status_code))
    return error_response(api)


async def _database_down(request: Request, err: Exception) -> JSONResponse:
    # Nothing was acknowledged, so the client may simply retry (the official client does on 503).
    log.warning("database unavailable on %s: %s", request.url.path, str(err).splitlines()[0])
    return error_response(APIError(503, "The service's database is unavailable; please retry shortly.",
                                   code="database_unavailable", headers={"retry-after": str(DATABASE_RETRY_AFTER_S)}))


async def _crash(request: Request, err: Exception) -> JSONResponse:
    log.exception("unhandled error on %s", request.url.path)
    return error_response(APIError(500, "The server had an error while processing your request.",
                                   code="internal_error"))


def install_handlers(app: FastAPI) -> None:
    """Register the OpenAI-shaped handlers on `app`."""
    app.add_exception_handler(APIError, _api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http)  # type: ignore[arg-type]
    for kind in (OperationalError, InterfaceError):  # connection refused, lost, or the server shutting down
        app.add_exception_handler(kind, _database_down)
    app.add_exception_handler(Exception, _crash)
