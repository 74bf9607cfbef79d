"""The store's schema, versioned with Alembic: each file in versions/ is one step, applied in order.

Usage:
    upgrade(conn)            # inside a transaction: bring the database to the newest version

A database made before the schema was versioned (lmtune's SQLite file with the 0001 tables and no
alembic_version table) is stamped 0001 first, then upgraded like any other, so nothing is lost.
New steps: add versions/NNNN_what.py with `revision`, `down_revision` and `upgrade()`.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

BASELINE = "0001"  # the schema of the unversioned SQLite store
MIGRATION_LOCK = 0x6C6D74756E65  # "lmtune": the PostgreSQL advisory lock key held while migrating


def alembic_config(conn: sa.Connection | None = None) -> Config:
    """Alembic's settings for the migrations shipped in this package (no alembic.ini needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent))
    cfg.attributes["connection"] = conn
    return cfg


def upgrade(conn: sa.Connection) -> None:
    """Bring the database on `conn` to the newest schema version (a no-op when it is there)."""
    if conn.dialect.name == "postgresql":
        # Replicas starting together: one migrates, the others wait here, then find the schema current.
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
    tables = set(sa.inspect(conn).get_table_names())
    cfg = alembic_config(conn)
    if "jobs" in tables and "alembic_version" not in tables:
        command.stamp(cfg, BASELINE)
    command.upgrade(cfg, "head")


def current_version(conn: sa.Connection) -> str | None:
    """The database's schema version (None before the first migration)."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()
