"""jobs have a kind (fit, evaluate, predict)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 01:00:00.000000

Every job stored before is a training job: ``kind`` is ``fit`` for it. A run's parent
is ``parent_job_id``, which 0009 added for warm starts.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("kind", sa.String(length=16), server_default="fit", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("kind")
