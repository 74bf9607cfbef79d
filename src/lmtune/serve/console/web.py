"""What every console page shares: templates, the signed-in session, CSRF checks, errors, security headers.

Usage:
    @router.get("/things")
    def things(request: Request, session: SignedIn) -> HTMLResponse:
        return render(request, "things.html", session, things=[...])

    @router.post("/things")
    def add(request: Request, session: SignedIn, csrf_token: str = Form("")) -> Response:
        require_csrf(request, session, csrf_token)
        with api_errors():                       # the service's APIError -> the same status, as a page
            routes_files.upload_file(request, session.project, ...)

Templates autoescape everything (Jinja2's select_autoescape for .html): names, metadata, validator
messages and model outputs appear as text, never as markup.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from lmtune.serve.console.session import COOKIE, Session, Sessions
from lmtune.serve.errors import APIError

HERE = Path(__file__).parent
PREFIX = "/console"
# Scripts, styles, frames and fetches only from this server: no CDN, no inline script, no eval.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'")
# A run's report.html is self-contained (inline CSS, data: images); it may not run scripts at all.
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"
TERMINAL = ("succeeded", "failed", "cancelled")


class ConsoleError(Exception):
    """A console request that fails with `status`; rendered as a page with the message as text."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class NeedSignIn(Exception):
    """No valid session: the browser is sent to the sign-in page."""


@dataclass
class ConsoleState:
    """The console's per-app objects (kept on app.state.console)."""

    sessions: Sessions
    templates: Environment
    runs_dir: Path | None
    tokenizers: dict[str, Any] = field(default_factory=dict)


def make_templates() -> Environment:
    """The Jinja2 environment of the console's templates (autoescaped)."""
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.globals["static"] = lambda path: f"{PREFIX}/static/{path}"
    env.filters["kv"] = lambda v: ", ".join(f"{k}: {x}" for k, x in v.items()) if isinstance(v, dict) else v
    env.filters["ts"] = lambda t: time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t)) if t else ""
    return env


def state(request: Request) -> ConsoleState:
    """The app's ConsoleState."""
    return request.app.state.console


def signed_in(request: Request) -> Session:
    """FastAPI dependency: the request's session, else NeedSignIn (a redirect to the sign-in page)."""
    session = state(request).sessions.read(request.cookies.get(COOKIE))
    if session is None:
        raise NeedSignIn()
    request.state.project = session.project
    return session


SignedIn = Annotated[Session, Depends(signed_in)]


def require_csrf(request: Request, session: Session, token: str | None) -> None:
    """Refuse (403) a state-changing request whose form does not carry the session's CSRF token."""
    if not state(request).sessions.check_csrf(session, token):
        raise ConsoleError(403, "This form has expired or did not come from this console (CSRF token "
                                "missing or invalid). Reload the page and try again.")


@contextmanager
def api_errors() -> Iterator[None]:
    """Turn the service's APIError into a ConsoleError with the same status and message."""
    try:
        yield
    except APIError as err:
        raise ConsoleError(err.status, err.message) from None


def render(request: Request, template: str, session: Session | None, status: int = 200,
           **values: Any) -> HTMLResponse:
    """A rendered template with the session (project, CSRF token) available as `session`."""
    page = state(request).templates.get_template(template)
    return HTMLResponse(page.render(session=session, path=request.url.path, **values), status_code=status)


def redirect(path: str) -> RedirectResponse:
    """A 303 to a console page (POST -> GET)."""
    return RedirectResponse(PREFIX + path, status_code=303)


async def console_error(request: Request, err: ConsoleError) -> HTMLResponse:
    """Exception handler: the error page (a fragment for htmx requests)."""
    session = state(request).sessions.read(request.cookies.get(COOKIE))
    name = "error_fragment.html" if request.headers.get("hx-request") else "error.html"
    return render(request, name, session, status=err.status, code=err.status, message=err.message)


async def need_sign_in(request: Request, _: NeedSignIn) -> Response:
    """Exception handler: to the sign-in page (htmx follows HX-Redirect instead of swapping it in)."""
    if request.headers.get("hx-request"):
        return Response(status_code=200, headers={"HX-Redirect": PREFIX + "/login"})
    return RedirectResponse(PREFIX + "/login", status_code=303)


class SecurityHeaders:
    """ASGI middleware: CSP and friends on every /console response (the report route sets its own CSP)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                extra = {b"content-security-policy": CSP.encode(), b"x-content-type-options": b"nosniff",
                         b"referrer-policy": b"same-origin", b"x-frame-options": b"SAMEORIGIN"}
                if not scope["path"].startswith(PREFIX + "/static/"):
                    extra[b"cache-control"] = b"no-store"  # pages show live state and a CSRF token
                headers += [(k, v) for k, v in extra.items() if k not in names]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
