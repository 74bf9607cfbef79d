"""Fair sharing and replicas: which replica runs a job, per-project queue index, per-key rate usage."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    """Add jobs.replica, the per-project indexes of the fair claim and the rate_usage table."""
    with op.batch_alter_table("jobs") as batch:
        # The replica (host and data folder) whose worker claimed the job: a restarting replica takes
        # back its own running jobs only, never those another replica is training.
        batch.add_column(sa.Column("replica", sa.Text))
    op.create_index("jobs_project_status", "jobs", ["project", "status"])  # the fair claim's per-project reads
    op.create_index("jobs_project_started", "jobs", ["project", "started_at"])
    # Requests and tokens of one key in one minute (unix time // 60): shared by every replica.
    op.create_table("rate_usage", sa.Column("key_id", sa.Text, primary_key=True),
                    sa.Column("minute", sa.BigInteger, primary_key=True, autoincrement=False),
                    sa.Column("requests", sa.Integer, nullable=False, server_default="0"),
                    sa.Column("tokens", sa.BigInteger, nullable=False, server_default="0"))
