"""The service's metadata in SQLite: projects, API keys, files, jobs, events, checkpoints, models.

Usage:
    store = Store(cfg.db_path)                 # creates the schema on first use
    with store.tx() as db:                     # BEGIN IMMEDIATE ... COMMIT (durable on return)
        db.execute("UPDATE jobs SET status=? WHERE id=?", ("queued", job_id))
    store.one("SELECT * FROM jobs WHERE id=?", (job_id,))      # a dict, or None
    rows, has_more = store.page("jobs", "project=?", (p,), after=None, limit=20, order="desc")

WAL mode lets the server read while a worker writes; synchronous=FULL makes every commit durable
before the response that acknowledges it is sent. Each call opens its own connection, so the store
is safe to share between threads and processes. JSON columns (names in JSON_COLUMNS) are decoded.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from lmtune.serve.config import PRIVATE_DIR, PRIVATE_FILE

SCHEMA = """
CREATE TABLE IF NOT EXISTS projects (name TEXT PRIMARY KEY, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY, project TEXT NOT NULL REFERENCES projects(name), hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, project TEXT NOT NULL,
    filename TEXT NOT NULL, purpose TEXT NOT NULL, bytes INTEGER NOT NULL, created_at INTEGER NOT NULL,
    path TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'processed', deleted INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, project TEXT NOT NULL,
    model TEXT NOT NULL, training_file TEXT NOT NULL, validation_file TEXT, status TEXT NOT NULL,
    created_at INTEGER NOT NULL, started_at INTEGER, finished_at INTEGER, fine_tuned_model TEXT,
    trained_tokens INTEGER, error TEXT, hyperparameters TEXT NOT NULL, method TEXT NOT NULL,
    seed INTEGER NOT NULL, suffix TEXT, metadata TEXT, result_files TEXT NOT NULL DEFAULT '[]',
    run_dir TEXT, worker INTEGER, metrics_step INTEGER NOT NULL DEFAULT 0, pause_step INTEGER);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, seq);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, job_id TEXT NOT NULL,
    created_at INTEGER NOT NULL, level TEXT NOT NULL, message TEXT NOT NULL, type TEXT NOT NULL,
    data TEXT);
CREATE INDEX IF NOT EXISTS events_job ON events(job_id, seq);
CREATE TABLE IF NOT EXISTS checkpoints (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, job_id TEXT NOT NULL,
    created_at INTEGER NOT NULL, step INTEGER NOT NULL, metrics TEXT NOT NULL, model_name TEXT NOT NULL,
    UNIQUE (job_id, step));
CREATE TABLE IF NOT EXISTS models (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, project TEXT NOT NULL,
    created_at INTEGER NOT NULL, base TEXT NOT NULL, job_id TEXT NOT NULL, path TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS workers (
    idx INTEGER PRIMARY KEY, pid INTEGER NOT NULL, heartbeat REAL NOT NULL, job_id TEXT, steps_per_second REAL);
"""

JSON_COLUMNS = {"error", "hyperparameters", "method", "metadata", "result_files", "data", "metrics"}


def new_id(prefix: str) -> str:
    """A fresh unguessable id such as file-3f2a...; ids double as blob names, so hex only."""
    return f"{prefix}-{secrets.token_hex(12)}"


def now() -> int:
    """Unix time in whole seconds, as the OpenAI API reports it."""
    return int(time.time())


def _decode(row: sqlite3.Row | None) -> dict[str, Any] | None:
    if row is None:
        return None
    out = dict(row)
    for key in JSON_COLUMNS & out.keys():
        if isinstance(out[key], str):
            out[key] = json.loads(out[key])
    return out


def encode(value: Any) -> str | None:
    """A value for a JSON column (None stays NULL)."""
    return None if value is None else json.dumps(value)


class Store:
    """Connections to one SQLite database file; creates the schema on construction."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
        # Key hashes and metadata: private to the user, also when `lmtune keys` creates it (no umask set);
        # SQLite gives the -wal and -shm files the database file's mode.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE))
        self.path.chmod(PRIVATE_FILE)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")  # persistent: stored in the database file
            db.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA synchronous=FULL")  # per connection: fsync the WAL at every commit
        db.execute("PRAGMA busy_timeout=30000")
        return db

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction taken at once (BEGIN IMMEDIATE), committed when the block succeeds."""
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    def execute(self, sql: str, params: tuple = ()) -> int:
        """Run one write statement in its own transaction; returns the number of rows changed."""
        with self.tx() as db:
            return db.execute(sql, params).rowcount

    def one(self, sql: str, params: tuple = ()) -> dict[str, Any] | None:
        """The first row of a query as a dict (JSON columns decoded), or None."""
        db = self._connect()
        try:
            return _decode(db.execute(sql, params).fetchone())
        finally:
            db.close()

    def all(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        """Every row of a query as dicts."""
        db = self._connect()
        try:
            return [_decode(r) for r in db.execute(sql, params).fetchall()]  # type: ignore[misc]
        finally:
            db.close()

    def insert(self, table: str, row: dict[str, Any]) -> None:
        """Insert one row (dict and list values are stored as JSON)."""
        values = [encode(v) if isinstance(v, (dict, list)) else v for v in row.values()]
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        self.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", tuple(values))  # noqa: S608 - fixed names

    def page(
        self, table: str, where: str, params: tuple, after: str | None, limit: int, order: str = "desc"
    ) -> tuple[list[dict[str, Any]], bool]:
        """One page of `table` rows matching `where`, after the row with id `after`; (rows, has_more).

        Raises KeyError when `after` names no matching row (a cursor from another list or project).
        """
        desc = order == "desc"
        sql_where, args = where, list(params)
        if after is not None:
            cursor = self.one(f"SELECT seq FROM {table} WHERE id=? AND {where}", (after, *params))  # noqa: S608
            if cursor is None:
                raise KeyError(after)
            sql_where += " AND seq " + ("<" if desc else ">") + " ?"
            args.append(cursor["seq"])
        direction = "DESC" if desc else "ASC"
        rows = self.all(f"SELECT * FROM {table} WHERE {sql_where} ORDER BY seq {direction} LIMIT ?",  # noqa: S608
                        (*args, limit + 1))
        return rows[:limit], len(rows) > limit

    def add_event(self, job_id: str, message: str, level: str = "info", kind: str = "message",
                  data: dict[str, Any] | None = None, db: sqlite3.Connection | None = None) -> None:
        """Append an event to a job's log (inside the transaction `db` when given)."""
        sql = "INSERT INTO events (id, job_id, created_at, level, message, type, data) VALUES (?, ?, ?, ?, ?, ?, ?)"
        params = (new_id("ftevent"), job_id, now(), level, message, kind, encode(data))
        if db is not None:
            db.execute(sql, params)
        else:
            self.execute(sql, params)
