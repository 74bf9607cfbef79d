"""The service's metadata: projects, API keys, files, jobs, events, checkpoints, models, rate usage.

Usage:
    store = Store(cfg.database)                # a SQLite file path, or postgresql://user@host/db
    with store.tx() as db:                     # one write transaction, committed when the block succeeds
        db.execute("UPDATE jobs SET status=? WHERE id=?", ("queued", job_id))
    store.one("SELECT * FROM jobs WHERE id=?", (job_id,))      # a dict, or None
    rows, has_more = store.page("jobs", "project=?", (p,), after=None, limit=20, order="desc")

SQL is written once, with `?` placeholders, in the SQL both backends speak; SQLAlchemy 2 Core
runs it on SQLite (the default: the data folder's file, nothing to set up) or PostgreSQL (several
replicas on one database; `pip install lmtune[cluster]`). The schema is versioned by Alembic
(lmtune.serve.migrations), upgraded when a Store is made.

SQLite: WAL lets the server read while a worker writes; synchronous=FULL makes every commit durable
before the response that acknowledges it; a write transaction takes the write lock at once (BEGIN
IMMEDIATE), which also serialises job claims. PostgreSQL: commits are durable by default; pooled
connections are checked before use, so a restarted server is reconnected to transparently, and a
server that is down raises sqlalchemy.exc.OperationalError (the API answers 503).
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.pool import NullPool

from lmtune.serve.config import PRIVATE_DIR, PRIVATE_FILE

JSON_COLUMNS = {"error", "hyperparameters", "method", "metadata", "result_files", "data", "metrics"}
BUSY_TIMEOUT_MS = 30_000  # SQLite: how long a writer waits for the write lock
CONNECT_TIMEOUT_S = 5  # PostgreSQL: a server that does not answer fails the request fast (503), not after minutes


def new_id(prefix: str) -> str:
    """A fresh unguessable id such as file-3f2a...; ids double as blob names, so hex only."""
    return f"{prefix}-{secrets.token_hex(12)}"


def now() -> int:
    """Unix time in whole seconds, as the OpenAI API reports it."""
    return int(time.time())


def _decode(row: Any) -> dict[str, Any] | None:
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


def database_url(target: str | Path) -> str:
    """The SQLAlchemy URL of a SQLite file path or a postgresql:// URL (psycopg 3 as the driver)."""
    text = str(target)
    if text.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + text.split("://", 1)[1]
    if "://" in text:
        return text  # already a SQLAlchemy URL (sqlite:///..., postgresql+psycopg://...)
    return f"sqlite:///{Path(text).expanduser().resolve()}"


def _driver_sql(sql: str, paramstyle: str) -> str:
    """`?` placeholders in the driver's style: SQLite takes them as they are, psycopg wants %s (and %%)."""
    if paramstyle == "qmark":
        return sql
    out, quoted = [], False
    for ch in sql:
        if ch == "'":
            quoted = not quoted
        out.append("%%" if ch == "%" else "%s" if ch == "?" and not quoted else ch)
    return "".join(out)


class Result:
    """What Tx.execute returns: the rows (as read-only mappings) and how many rows a write changed."""

    def __init__(self, result: CursorResult):
        self.rowcount = result.rowcount
        self._rows = list(result.mappings()) if result.returns_rows else []

    def fetchone(self) -> Any:
        """The first row (row["col"]), or None."""
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[Any]:
        """Every row."""
        return list(self._rows)


class Tx:
    """One open transaction: execute(sql, params) with `?` placeholders, as sqlite3's connection takes them."""

    def __init__(self, conn: Connection, paramstyle: str):
        self.conn, self.paramstyle = conn, paramstyle
        self.dialect = conn.dialect.name

    def execute(self, sql: str, params: tuple = ()) -> Result:
        """Run one statement inside the transaction."""
        return Result(self.conn.exec_driver_sql(_driver_sql(sql, self.paramstyle), tuple(params)))


class Store:
    """The service's database (SQLite file or PostgreSQL URL); brings its schema up to date on construction."""

    def __init__(self, target: str | Path):
        self.url = database_url(target)
        self.dialect = sa.make_url(self.url).get_backend_name()
        self.path = Path(sa.make_url(self.url).database or "") if self.dialect == "sqlite" else None
        if self.path is not None:
            self._create_private_file(self.path)
        elif self.dialect == "postgresql" and importlib.util.find_spec("psycopg") is None:
            raise RuntimeError("database_url is a PostgreSQL database: install its driver with "
                               "pip install 'lmtune[cluster]' (psycopg 3)")
        self._pid, self._engine = -1, None
        from lmtune.serve.migrations import upgrade

        with self._engine_for_pid().connect().execution_options(write=True) as conn, conn.begin():
            upgrade(conn)

    @staticmethod
    def _create_private_file(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
        # Key hashes and metadata: private to the user, also when `lmtune keys` creates it (no umask set);
        # SQLite gives the -wal and -shm files the database file's mode.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE))
        path.chmod(PRIVATE_FILE)

    def _engine_for_pid(self) -> sa.Engine:
        """The engine of this process: pooled connections must never cross a fork."""
        if self._engine is None or self._pid != os.getpid():
            if self._engine is not None:
                self._engine.dispose(close=False)  # the parent's connections stay the parent's
            self._engine, self._pid = self._make_engine(), os.getpid()
        return self._engine

    def _make_engine(self) -> sa.Engine:
        if self.dialect == "sqlite":
            # A connection per use, as before: cheap for a file, and safe across threads and processes.
            engine = sa.create_engine(self.url, poolclass=NullPool,
                                      connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "isolation_level": None})

            @sa.event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn: Any, _: Any) -> None:
                dbapi_conn.execute("PRAGMA journal_mode=WAL")  # stored in the file: a no-op after the first time
                dbapi_conn.execute("PRAGMA synchronous=FULL")  # per connection: fsync the WAL at every commit
                dbapi_conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")

            @sa.event.listens_for(engine, "begin")
            def _begin(conn: Connection) -> None:
                # pysqlite would defer BEGIN to the first write; writers take the lock up front instead.
                conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")

            return engine
        return sa.create_engine(self.url, pool_pre_ping=True, pool_size=5, max_overflow=10,
                                connect_args={"connect_timeout": CONNECT_TIMEOUT_S})

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine (for this process)."""
        return self._engine_for_pid()

    @property
    def paramstyle(self) -> str:
        """The driver's placeholder style (qmark for SQLite, pyformat for psycopg)."""
        return self.engine.dialect.paramstyle

    @contextmanager
    def tx(self) -> Iterator[Tx]:
        """A write transaction (SQLite: BEGIN IMMEDIATE), committed when the block succeeds, else rolled back."""
        with self.engine.connect().execution_options(write=True) as conn, conn.begin():
            yield Tx(conn, self.paramstyle)

    @contextmanager
    def read(self) -> Iterator[Tx]:
        """A read-only transaction: one consistent snapshot for several queries."""
        with self.engine.connect() as conn, conn.begin():
            yield Tx(conn, self.paramstyle)

    def execute(self, sql: str, params: tuple = ()) -> int:
        """Run one write statement in its own transaction; returns the number of rows changed."""
        with self.tx() as db:
            return db.execute(sql, params).rowcount

    def one(self, sql: str, params: tuple = ()) -> dict[str, Any] | None:
        """The first row of a query as a dict (JSON columns decoded), or None."""
        with self.read() as db:
            return _decode(db.execute(sql, params).fetchone())

    def all(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        """Every row of a query as dicts."""
        with self.read() as db:
            return [_decode(r) for r in db.execute(sql, params).fetchall()]  # type: ignore[misc]

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
                  data: dict[str, Any] | None = None, db: Tx | None = None) -> None:
        """Append an event to a job's log (inside the transaction `db` when given)."""
        sql = "INSERT INTO events (id, job_id, created_at, level, message, type, data) VALUES (?, ?, ?, ?, ?, ?, ?)"
        params = (new_id("ftevent"), job_id, now(), level, message, kind, encode(data))
        if db is not None:
            db.execute(sql, params)
        else:
            self.execute(sql, params)

    def close(self) -> None:
        """Close this process's pooled connections (a later call opens new ones)."""
        if self._engine is not None and self._pid == os.getpid():
            self._engine.dispose()
        self._engine = None
