"""Console sessions: a signed, expiring cookie naming the API key's id, and CSRF tokens bound to it.

Usage:
    sessions = Sessions(secret_file(cfg.root), store, lifetime_s=8 * 3600)
    cookie = sessions.issue(key)              # None for an unknown or revoked key
    session = sessions.read(cookie_value)     # Session(project, key_id, nonce), or None
    session.csrf                               # the token every state-changing form must carry
    sessions.check_csrf(session, token)        # constant-time comparison

The cookie holds `key_id.expires.nonce.signature` (HMAC-SHA256 with a per-data-folder secret): never
the key, so a stolen cookie cannot be turned into API access, and revoking the key ends its sessions
at the next request because every read looks the key id up again.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from lmtune.serve.auth import hash_key
from lmtune.serve.store import Store

COOKIE = "lmtune_console"
LOGIN_COOKIE = "lmtune_console_login"  # the nonce the sign-in form's CSRF token is bound to


def secret_file(root: Path) -> bytes:
    """The data folder's signing secret, created (mode 0600) on first use so restarts keep sessions."""
    path = root / "console_secret"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
    return path.read_bytes()


@dataclass(frozen=True)
class Session:
    """A signed-in browser: its project, the key it signed in with, and its CSRF token."""

    project: str
    key_id: str
    csrf: str


class Sessions:
    """Issues and checks session cookies and CSRF tokens with one secret."""

    def __init__(self, secret: bytes, store: Store, lifetime_s: int):
        self.secret, self.store, self.lifetime_s = secret, store, lifetime_s

    def _sign(self, text: str) -> str:
        return hmac.new(self.secret, text.encode("utf-8"), hashlib.sha256).hexdigest()

    def token(self, purpose: str, nonce: str) -> str:
        """An HMAC of `purpose:nonce`: a CSRF token only this server can make for that nonce."""
        return self._sign(f"{purpose}:{nonce}")

    def issue(self, key: str) -> str | None:
        """A cookie value for a valid key, or None."""
        row = self.store.one("SELECT id FROM keys WHERE hash=? AND revoked=0", (hash_key(key.strip()),))
        if row is None:
            return None
        body = f"{row['id']}.{int(time.time()) + self.lifetime_s}.{secrets.token_hex(16)}"
        return f"{body}.{self._sign(body)}"

    def read(self, value: str | None) -> Session | None:
        """The session of a cookie value; None when missing, forged, expired or its key is revoked."""
        if not value or value.count(".") != 3:
            return None
        body, _, signature = value.rpartition(".")
        if not hmac.compare_digest(signature, self._sign(body)):
            return None
        key_id, expires, nonce = body.split(".")
        if not expires.isdigit() or int(expires) < time.time():
            return None
        row = self.store.one("SELECT project FROM keys WHERE id=? AND revoked=0", (key_id,))
        if row is None:
            return None
        return Session(row["project"], key_id, self.token("csrf", nonce))

    @staticmethod
    def check_csrf(session: Session, token: str | None) -> bool:
        """True when `token` is the session's CSRF token."""
        return bool(token) and hmac.compare_digest(session.csrf, token or "")
