"""uploaded models; a job's parent job and uploaded model

Revision ID: 0009
Revises: 0007
Create Date: 2026-12-07 00:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import models.tables

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=100), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("created_at", models.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("info", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_models")),
    )
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_models_owner"), ["owner"], unique=False)

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parent_job_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("model_id", sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f("ix_jobs_parent_job_id"), ["parent_job_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_jobs_model_id"), ["model_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_model_id"))
        batch_op.drop_index(batch_op.f("ix_jobs_parent_job_id"))
        batch_op.drop_column("model_id")
        batch_op.drop_column("parent_job_id")

    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_models_owner"))

    op.drop_table("models")
