"""API keys: each belongs to one project, only its sha256 is stored, and a request sees its project only.

Usage:
    key = create_key(store, "research")        # printed once by `lmtune keys create`; never stored
    project = project_for_key(store, key)      # "research", or None for an unknown or revoked key
    Project = Annotated[str, Depends(current_project)]   # in a route: def route(project: Project)

Keys are 32 random bytes, so a plain sha256 (no salt, no slow hash) cannot be reversed, and the
lookup is by hash: the key itself is never compared, logged or kept.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Annotated

from fastapi import Depends, Request

from lmtune.serve.errors import APIError
from lmtune.serve.limits import admit
from lmtune.serve.store import Store, new_id, now

KEY_PREFIX = "sk-lmt-"
PROJECT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def hash_key(key: str) -> str:
    """Hex sha256 of a key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_key(store: Store, project: str) -> str:
    """Make a key for `project` (created if new) and return it; only its hash is stored."""
    if not PROJECT_RE.match(project):
        # The project name appears in fine-tuned model ids (ft:base:project:...), so no colons or spaces.
        raise ValueError(f"project name {project!r}: use 1-64 letters, digits, '_', '.' or '-'")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with store.tx() as db:
        db.execute("INSERT INTO projects (name, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING", (project, now()))
        db.execute("INSERT INTO keys (id, project, hash, created_at) VALUES (?, ?, ?, ?)",
                   (new_id("key"), project, hash_key(key), now()))
    return key


def list_keys(store: Store) -> list[dict]:
    """Every key's id, project, creation time and whether it is revoked (never the key)."""
    return store.all("SELECT id, project, created_at, revoked FROM keys ORDER BY created_at, id")


def revoke_key(store: Store, key_id: str) -> bool:
    """Revoke a key by its id; False when there is no such key."""
    return store.execute("UPDATE keys SET revoked=1 WHERE id=?", (key_id,)) > 0


def key_row(store: Store, key: str) -> dict | None:
    """{"id", "project"} of a valid key, or None."""
    return store.one("SELECT id, project FROM keys WHERE hash=? AND revoked=0", (hash_key(key),))


def project_for_key(store: Store, key: str) -> str | None:
    """The project of a valid key, or None."""
    row = key_row(store, key)
    return row["project"] if row else None


def _unauthorized(message: str) -> APIError:
    return APIError(401, message, code="invalid_api_key")


def current_project(request: Request) -> str:
    """FastAPI dependency: the project of the request's Bearer key, else 401 (or 429 over a rate limit)."""
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise _unauthorized("You didn't provide an API key. Provide it as 'Authorization: Bearer YOUR_KEY'.")
    store = request.app.state.store
    row = key_row(store, key.strip())
    if row is None:
        raise _unauthorized("Incorrect API key provided.")
    # Only completions spend tokens; a key over its token budget can still manage its files and jobs.
    admit(store, request.app.state.cfg, row["id"], uses_tokens=request.url.path.endswith("completions"))
    request.state.project, request.state.key_id = row["project"], row["id"]
    return row["project"]


Project = Annotated[str, Depends(current_project)]
