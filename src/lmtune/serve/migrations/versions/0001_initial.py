"""The store as lmtune made it before migrations: projects, keys, files, jobs, events, checkpoints, models, workers."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None

# SQLite: AUTOINCREMENT, as the unversioned store declared it (a deleted row's seq is never reused).
SEQ = {"sqlite_autoincrement": True}


def _seq() -> sa.Column:
    return sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True)


def _id() -> sa.Column:
    return sa.Column("id", sa.Text, nullable=False, unique=True)


def _time(name: str = "created_at", nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.BigInteger, nullable=nullable)


def upgrade() -> None:
    """Create the tables of the first schema."""
    op.create_table("projects", sa.Column("name", sa.Text, primary_key=True), _time())
    op.create_table("keys", sa.Column("id", sa.Text, primary_key=True),
                    sa.Column("project", sa.Text, sa.ForeignKey("projects.name"), nullable=False),
                    sa.Column("hash", sa.Text, nullable=False, unique=True), _time(),
                    sa.Column("revoked", sa.Integer, nullable=False, server_default="0"))
    op.create_table("files", _seq(), _id(), sa.Column("project", sa.Text, nullable=False),
                    sa.Column("filename", sa.Text, nullable=False), sa.Column("purpose", sa.Text, nullable=False),
                    sa.Column("bytes", sa.BigInteger, nullable=False), _time(),
                    sa.Column("path", sa.Text, nullable=False),
                    sa.Column("status", sa.Text, nullable=False, server_default="processed"),
                    sa.Column("deleted", sa.Integer, nullable=False, server_default="0"), **SEQ)
    op.create_table("jobs", _seq(), _id(), sa.Column("project", sa.Text, nullable=False),
                    sa.Column("model", sa.Text, nullable=False), sa.Column("training_file", sa.Text, nullable=False),
                    sa.Column("validation_file", sa.Text), sa.Column("status", sa.Text, nullable=False), _time(),
                    _time("started_at", True), _time("finished_at", True), sa.Column("fine_tuned_model", sa.Text),
                    sa.Column("trained_tokens", sa.BigInteger), sa.Column("error", sa.Text),
                    sa.Column("hyperparameters", sa.Text, nullable=False), sa.Column("method", sa.Text, nullable=False),
                    sa.Column("seed", sa.BigInteger, nullable=False), sa.Column("suffix", sa.Text),
                    sa.Column("metadata", sa.Text),
                    sa.Column("result_files", sa.Text, nullable=False, server_default="[]"),
                    sa.Column("run_dir", sa.Text), sa.Column("worker", sa.Integer),
                    sa.Column("metrics_step", sa.Integer, nullable=False, server_default="0"),
                    sa.Column("pause_step", sa.Integer), **SEQ)
    op.create_index("jobs_status", "jobs", ["status", "seq"])
    op.create_table("events", _seq(), _id(), sa.Column("job_id", sa.Text, nullable=False), _time(),
                    sa.Column("level", sa.Text, nullable=False), sa.Column("message", sa.Text, nullable=False),
                    sa.Column("type", sa.Text, nullable=False), sa.Column("data", sa.Text), **SEQ)
    op.create_index("events_job", "events", ["job_id", "seq"])
    op.create_table("checkpoints", _seq(), _id(), sa.Column("job_id", sa.Text, nullable=False), _time(),
                    sa.Column("step", sa.Integer, nullable=False), sa.Column("metrics", sa.Text, nullable=False),
                    sa.Column("model_name", sa.Text, nullable=False), sa.UniqueConstraint("job_id", "step"), **SEQ)
    op.create_table("models", _seq(), _id(), sa.Column("project", sa.Text, nullable=False), _time(),
                    sa.Column("base", sa.Text, nullable=False), sa.Column("job_id", sa.Text, nullable=False),
                    sa.Column("path", sa.Text, nullable=False),
                    sa.Column("deleted", sa.Integer, nullable=False, server_default="0"), **SEQ)
    op.create_table("workers", sa.Column("idx", sa.Integer, primary_key=True, autoincrement=False),
                    sa.Column("pid", sa.Integer, nullable=False), sa.Column("heartbeat", sa.Float, nullable=False),
                    sa.Column("job_id", sa.Text), sa.Column("steps_per_second", sa.Float))
