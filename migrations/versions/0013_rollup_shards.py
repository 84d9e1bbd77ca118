"""metric rollups spread over shards, so that a fleet's writes do not queue on one row

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 10:30:00.000000

Migration 0011's triggers add every claim, requeue and ending of a queue's jobs to
the same two ``jobs`` rollup rows, and every epoch row of that queue to the same
``epoch_duration`` bucket row: in PostgreSQL each such write holds that row's lock
until it commits, so the workers of one queue wrote one at a time. ``shard`` (0 to
15 in PostgreSQL, a hash of the job's id; always 0 in SQLite, which has one writer
at a time anyway) spreads each figure over up to 16 rows; ``GET /metrics`` sums them.
The rows there are keep shard 0.
"""

from __future__ import annotations

import importlib

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

rollups = importlib.import_module("migrations.versions.0011_metric_rollups")
KEY = ["metric", "queue", "status", "bucket"]


def upgrade() -> None:
    rollups.drop_triggers()
    with op.batch_alter_table("metric_rollups", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("shard", sa.SmallInteger(), nullable=False, server_default="0")
        )
        batch_op.drop_constraint("pk_metric_rollups", type_="primary")
        batch_op.create_primary_key("pk_metric_rollups", [*KEY, "shard"])
    rollups.install_triggers(sharded=True)


def downgrade() -> None:
    rollups.drop_triggers()
    op.execute(
        "CREATE TABLE metric_rollups_merged AS SELECT metric, queue, status, bucket, "
        "sum(n) AS n, sum(total) AS total FROM metric_rollups "
        "GROUP BY metric, queue, status, bucket"
    )
    op.execute("DELETE FROM metric_rollups")
    with op.batch_alter_table("metric_rollups", schema=None) as batch_op:
        batch_op.drop_constraint("pk_metric_rollups", type_="primary")
        batch_op.drop_column("shard")
        batch_op.create_primary_key("pk_metric_rollups", KEY)
    op.execute(
        "INSERT INTO metric_rollups (metric, queue, status, bucket, n, total) "
        "SELECT metric, queue, status, bucket, n, total FROM metric_rollups_merged"
    )
    op.drop_table("metric_rollups_merged")
    rollups.install_triggers()
