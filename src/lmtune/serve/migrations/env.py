"""Alembic's environment: migrations run on the connection the Store passes in (never a URL of their own)."""

from __future__ import annotations

from alembic import context

conn = context.config.attributes["connection"]
context.configure(connection=conn, transactional_ddl=True, render_as_batch=conn.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
