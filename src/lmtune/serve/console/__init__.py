"""The web console of `lmtune serve`, under /console: the same keys, projects and service functions as the API.

Usage (create_app does this when cfg.console is on):
    mount_console(app, cfg)
    # then open http://127.0.0.1:8000/console and sign in with an API key

Pages are server-rendered Jinja2 templates; htmx (polling fragments) and uPlot (loss and reward
curves) are vendored under static/vendor, so nothing is loaded from another site.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from lmtune.serve.config import ServeConfig
from lmtune.serve.console import routes_auth, routes_files, routes_jobs, routes_models, routes_runs
from lmtune.serve.console.session import Sessions, secret_file
from lmtune.serve.console.web import (
    HERE,
    PREFIX,
    ConsoleError,
    ConsoleState,
    NeedSignIn,
    SecurityHeaders,
    console_error,
    make_templates,
    need_sign_in,
)


def mount_console(app: FastAPI, cfg: ServeConfig) -> None:
    """Add the console's routes, static files, error pages and security headers to `app`."""
    sessions = Sessions(secret_file(cfg.root), app.state.store, int(cfg.console_session_hours * 3600))
    runs = Path(cfg.console_runs_dir).expanduser().resolve() if cfg.console_runs_dir else None
    app.state.console = ConsoleState(sessions, make_templates(), runs)
    for module in (routes_auth, routes_files, routes_jobs, routes_models, routes_runs):
        app.include_router(module.router, prefix=PREFIX, include_in_schema=False)
    app.mount(PREFIX + "/static", StaticFiles(directory=HERE / "static"), name="console-static")
    app.add_exception_handler(ConsoleError, console_error)  # type: ignore[arg-type]
    app.add_exception_handler(NeedSignIn, need_sign_in)  # type: ignore[arg-type]
    app.add_middleware(SecurityHeaders)
