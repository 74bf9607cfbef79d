"""Sign-in with an API key and sign-out: the session cookie is HttpOnly, SameSite=Strict, signed and expiring.

The sign-in form carries a CSRF token too (bound to a short-lived nonce cookie), so another site
cannot sign a browser into an attacker's project.
"""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from lmtune.serve.console.session import COOKIE, LOGIN_COOKIE
from lmtune.serve.console.web import PREFIX, ConsoleError, SignedIn, redirect, render, require_csrf, state

router = APIRouter()
LOGIN_NONCE_S = 3600


def _cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path=PREFIX, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


def _login_page(request: Request, error: str | None = None, status: int = 200) -> HTMLResponse:
    nonce = secrets.token_hex(16)
    page = render(request, "login.html", None, status=status, error=error,
                  login_token=state(request).sessions.token("login", nonce))
    _cookie(request, page, LOGIN_COOKIE, nonce, LOGIN_NONCE_S)
    return page


@router.get("/login")
def login_form(request: Request) -> HTMLResponse:
    """The sign-in form."""
    return _login_page(request)


@router.post("/login", response_model=None)
def login(request: Request, api_key: str = Form(""), csrf_token: str = Form("")) -> Response:
    """Check the key and start a session; the key itself is never stored in the cookie."""
    sessions = state(request).sessions
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not nonce or not secrets.compare_digest(sessions.token("login", nonce), csrf_token):
        raise ConsoleError(403, "The sign-in form has expired or did not come from this console "
                                "(CSRF token missing or invalid). Reload the page and try again.")
    cookie = sessions.issue(api_key)
    if cookie is None:
        return _login_page(request, "Incorrect or revoked API key.", status=401)
    response = redirect("/jobs")
    _cookie(request, response, COOKIE, cookie, sessions.lifetime_s)
    response.delete_cookie(LOGIN_COOKIE, path=PREFIX)
    return response


@router.post("/logout")
def logout(request: Request, session: SignedIn, csrf_token: str = Form("")) -> Response:
    """End the session (the cookie is dropped)."""
    require_csrf(request, session, csrf_token)
    response = redirect("/login")
    response.delete_cookie(COOKIE, path=PREFIX)
    return response


@router.get("")
@router.get("/")
def home(session: SignedIn) -> Response:
    """The jobs page is the console's home."""
    return redirect("/jobs")
