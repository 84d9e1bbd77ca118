"""the trained model of a succeeded job: model.keras's size and SHA-256

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 00:40:00.000000

Jobs that finished before this revision saved no model; their columns stay null.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("model_size_bytes", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("model_sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("model_sha256")
        batch_op.drop_column("model_size_bytes")
