"""The FastAPI application of `lmtune serve`: routers, OpenAI-shaped errors, metrics, request log, workers.

Usage:
    app = create_app(ServeConfig(data_dir="/srv/lmtune"))
    uvicorn.run(app, host="127.0.0.1", port=8000)
    # then: OpenAI(base_url="http://127.0.0.1:8000/v1", api_key=KEY)

The app starts cfg.workers worker processes (python -m lmtune.serve.worker) when it starts and stops
them when it stops; each worker exits on its own if the server dies, and a restarted server's
workers continue the jobs it left running.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.routing import Match

from lmtune.serve import routes_files, routes_graders, routes_jobs, routes_models
from lmtune.serve.config import ServeConfig
from lmtune.serve.errors import APIError, error_response, install_handlers
from lmtune.serve.inference import ModelPool
from lmtune.serve.metrics import ServiceMetrics, log_request
from lmtune.serve.store import Store

log = logging.getLogger("lmtune.serve")
API_PREFIX = "/v1"
DOCS_ASSETS = "/docs-assets"  # Swagger UI's JavaScript and CSS, served by this app
MULTIPART_OVERHEAD = 64 * 1024  # form boundaries and headers around the file in an upload


def start_workers(cfg: ServeConfig) -> list[subprocess.Popen]:
    """Start the worker processes (they exit by themselves when this process dies, whenever that is)."""
    return [start_worker(cfg, i) for i in range(cfg.workers)]


def start_worker(cfg: ServeConfig, index: int) -> subprocess.Popen:
    """Start worker `index`, bound to this process, with this server's settings on its stdin.

    Not from <data_dir>/serve.json: replicas sharing a data folder each write that file, and a worker
    that read another replica's worker count would take a sibling's running job for its own orphan.
    """
    proc = subprocess.Popen([sys.executable, "-m", "lmtune.serve.worker", "--data-dir", str(cfg.root),
                             "--index", str(index), "--parent-pid", str(os.getpid()), "--settings", "-"],
                            stdin=subprocess.PIPE)
    proc.stdin.write(cfg.model_dump_json().encode())  # a few KB: fits the pipe, the worker reads it at start
    proc.stdin.close()
    return proc


def stop_workers(workers: list[subprocess.Popen]) -> None:
    """Stop worker processes; their running jobs resume at the next start."""
    for proc in workers:
        proc.terminate()
    for proc in workers:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def _route_template(scope: dict, initial: dict) -> str:
    """The matched route's template, e.g. /v1/files/{file_id} (FastAPI reports it without the router prefix).

    `initial` is the scope as the request came in: routing rewrites the scope (a Mount sets root_path).
    """
    path = getattr(scope.get("route"), "path", None)
    if path is None:  # Starlette's own routes (/openapi.json, /docs, mounts) do not record themselves
        app = scope.get("app")
        path = next((r.path for r in getattr(app, "routes", ()) if r.matches(initial)[0] == Match.FULL), None)
    if path is None:
        return "unmatched"  # never the raw path: ids would make unbounded metric labels
    return API_PREFIX + path if scope["path"].startswith(API_PREFIX + "/") and not path.startswith(API_PREFIX) else path


class RequestObserver:
    """ASGI middleware: 413 for oversized uploads up front, then latency, metrics and one log line per request."""

    def __init__(self, app: Any, cfg: ServeConfig, metrics: ServiceMetrics):
        self.app, self.cfg, self.metrics = app, cfg, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, initial = time.perf_counter(), dict(scope)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if scope["method"] == "POST" and length and int(length) > self.cfg.max_upload_bytes + MULTIPART_OVERHEAD:
            err = APIError(413, f"Request too large: uploads are limited to {self.cfg.max_upload_bytes} bytes",
                           code="file_too_large")
            await error_response(err)(scope, receive, send)
            return
        status = {"code": 500}

        async def observed_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                route = _route_template(scope, initial)
                seconds = time.perf_counter() - started
                self.metrics.observe(route, scope["method"], status["code"], seconds)
                state = scope.get("state") or {}
                log_request(route, scope["method"], status["code"], seconds * 1000, state.get("model"),
                            state.get("tokens"))

        await self.app(scope, receive, observed_send)


def add_offline_docs(app: FastAPI) -> None:
    """GET /docs: Swagger UI from the assets of the pinned swagger-ui-bundle package, so it renders offline."""
    import swagger_ui_bundle

    app.mount(DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_bundle.swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        # validatorUrl None: Swagger UI would otherwise fetch a badge from validator.swagger.io.
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} - API",
                                   swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
                                   swagger_ui_parameters={"validatorUrl": None})


def create_app(cfg: ServeConfig) -> FastAPI:
    """The service for `cfg`: database and folders are created, workers start with the app."""
    # Workers may run elsewhere: absolute path; the thread split is resolved once, for server and workers.
    cfg = cfg.model_copy(update={"data_dir": str(cfg.root)}).with_thread_split()
    cfg.save()
    store = Store(cfg.database)
    metrics = ServiceMetrics(store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        workers = start_workers(cfg) if cfg.start_workers else []
        try:
            yield
        finally:
            stop_workers(workers)

    app = FastAPI(title="lmtune serve", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="OpenAI-compatible fine-tuning and inference on your own hardware.")
    app.state.cfg, app.state.store, app.state.metrics = cfg, store, metrics
    app.state.pool = ModelPool(cfg, store)
    app.state.grading = routes_graders.grading_state(cfg)
    app.state.started = int(time.time())
    install_handlers(app)
    for router in (routes_files.router, routes_jobs.router, routes_models.router, routes_graders.router):
        app.include_router(router, prefix=API_PREFIX)

    add_offline_docs(app)

    @app.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/health", include_in_schema=False)
    def health(request: Request) -> dict[str, str]:
        request.app.state.store.one("SELECT 1 AS ok")
        return {"status": "ok"}

    if cfg.console:
        from lmtune.serve.console import mount_console

        mount_console(app, cfg)
    app.add_middleware(RequestObserver, cfg=cfg, metrics=metrics)
    return app
