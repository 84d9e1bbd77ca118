"""retention: checkpoints fitq removed, and jobs whose artifacts were deleted

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 03:20:00.000000

A removed checkpoint keeps its row, marked with when and why it was removed
(``retention`` after the job ended, ``deleted`` by ``DELETE /v1/jobs/{id}/artifacts``);
a job whose artifacts were deleted says when. Rows from before this revision are
all still on disk: their columns stay null.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import models.tables

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("removed_at", models.tables.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("removed_reason", sa.String(length=16), nullable=True))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "artifacts_removed_at", models.tables.UTCDateTime(timezone=True), nullable=True
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("artifacts_removed_at")
    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.drop_column("removed_reason")
        batch_op.drop_column("removed_at")
