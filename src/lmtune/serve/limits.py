"""Per-key rate limits: requests and tokens per minute, counted in the store so every replica shares them.

Usage:
    admit(store, cfg, key_id, uses_tokens=True)     # raises APIError 429 (with retry-after) when over a limit
    charge_tokens(store, key_id, 1234)              # after a completion: its prompt + completion tokens

Fixed one-minute windows (unix time // 60), one row per key and minute in rate_usage, incremented in a
single upsert: no lock service, and any replica sees what the others counted. A key over its token
budget may still list files or jobs; only completions are refused. Both limits are off by default.
"""

from __future__ import annotations

import logging
import math
import time

from sqlalchemy.exc import OperationalError

from lmtune.serve.config import ServeConfig
from lmtune.serve.errors import APIError
from lmtune.serve.store import Store

log = logging.getLogger("lmtune.serve")
WINDOW_S = 60


def _retry_after(t: float) -> int:
    """Whole seconds until the current window ends (at least 1)."""
    return max(1, math.ceil((int(t // WINDOW_S) + 1) * WINDOW_S - t))


def _limited(kind: str, limit: int, t: float) -> APIError:
    retry = _retry_after(t)
    return APIError(429, f"Rate limit reached for {kind} per minute: limit {limit}. Please try again in {retry}s.",
                    code="rate_limit_exceeded", headers={"retry-after": str(retry)})


def admit(store: Store, cfg: ServeConfig, key_id: str, uses_tokens: bool) -> None:
    """Count one request of `key_id`; 429 when it is over requests_per_minute, or (uses_tokens) tokens_per_minute."""
    tokens_limited = uses_tokens and cfg.tokens_per_minute is not None
    if cfg.requests_per_minute is None and not tokens_limited:
        return
    t = time.time()
    minute = int(t // WINDOW_S)
    with store.tx() as db:
        db.execute("INSERT INTO rate_usage (key_id, minute, requests, tokens) VALUES (?, ?, 1, 0) "
                   "ON CONFLICT (key_id, minute) DO UPDATE SET requests = rate_usage.requests + 1", (key_id, minute))
        used = db.execute("SELECT requests, tokens FROM rate_usage WHERE key_id=? AND minute=?",
                          (key_id, minute)).fetchone()
        db.execute("DELETE FROM rate_usage WHERE key_id=? AND minute<?", (key_id, minute))  # past windows
    if cfg.requests_per_minute is not None and used["requests"] > cfg.requests_per_minute:
        raise _limited("requests", cfg.requests_per_minute, t)
    if tokens_limited and used["tokens"] >= cfg.tokens_per_minute:
        raise _limited("tokens", cfg.tokens_per_minute, t)


def charge_tokens(store: Store, key_id: str, tokens: int) -> None:
    """Add a finished completion's tokens to its key's window (skipped, with a warning, if the database is down)."""
    minute = int(time.time() // WINDOW_S)
    try:
        store.execute("INSERT INTO rate_usage (key_id, minute, requests, tokens) VALUES (?, ?, 0, ?) "
                      "ON CONFLICT (key_id, minute) DO UPDATE SET tokens = rate_usage.tokens + excluded.tokens",
                      (key_id, minute, tokens))
    except OperationalError as err:  # the answer is already given; losing its count is the lesser harm
        log.warning("could not count %d tokens for key %s: %s", tokens, key_id, str(err).splitlines()[0])
