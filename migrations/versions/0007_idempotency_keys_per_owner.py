"""idempotency keys unique per owner; a revoked token's name can be issued again;
datasets' class histograms bounded

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 20:03:27.616754

Keys were stored as ``"<owner>:<key>"`` in one unique column, so that owner ``team``
with key ``ml:K`` and owner ``team:ml`` with key ``K`` shared a job. They are now the
key as sent, and the owner beside it ("" while auth is off), unique together. A key
stored before owners existed (no ``"<owner>:"`` prefix) keeps no owner: no request
could find it before this migration, and none can after.

A dataset's metadata held a histogram as long as its largest label (a label of
20 000 000 made a 40 MB row). Histograms longer than ``FITQ_MAX_LABEL_CLASSES`` give
way to the labels' range, which the histogram itself tells.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from core.settings import get_settings

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

ACTIVE = sa.text("revoked_at IS NULL")
# Metadata this long may hold a histogram past the cap; shorter rows cannot.
LONG_INFO = 4096


def upgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_api_tokens_name"), type_="unique")
        batch_op.create_index(
            "uq_api_tokens_active_name",
            ["name"],
            unique=True,
            sqlite_where=ACTIVE,
            postgresql_where=ACTIVE,
        )

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("idempotency_owner", sa.String(length=100), nullable=True))
        batch_op.drop_constraint(batch_op.f("uq_jobs_idempotency_key"), type_="unique")

    op.execute(
        "UPDATE jobs SET idempotency_owner = COALESCE(owner, ''), "
        "idempotency_key = SUBSTR(idempotency_key, LENGTH(COALESCE(owner, '')) + 2) "
        "WHERE idempotency_key IS NOT NULL "
        "AND SUBSTR(idempotency_key, 1, LENGTH(COALESCE(owner, '')) + 1) "
        "= COALESCE(owner, '') || ':'"
    )

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_unique_constraint(
            "uq_jobs_idempotency_owner_idempotency_key", ["idempotency_owner", "idempotency_key"]
        )

    _bound_class_histograms(get_settings().max_label_classes)


def _bound_class_histograms(max_classes: int) -> None:
    datasets = sa.table("datasets", sa.column("id", sa.String), sa.column("info", sa.JSON))
    conn = op.get_bind()
    long_rows = conn.scalars(
        sa.select(datasets.c.id).where(
            sa.func.length(sa.cast(datasets.c.info, sa.Text)) > LONG_INFO
        )
    ).all()
    for dataset_id in long_rows:
        info = conn.scalar(sa.select(datasets.c.info).where(datasets.c.id == dataset_id))
        changed = False
        for part in (info or {}).values():
            counts = part.get("class_counts")
            # Image archives name their classes; the worker needs every folder's count.
            if counts and len(counts) > max_classes and "class_names" not in part:
                present = [i for i, count in enumerate(counts) if count]
                part.update(
                    n_classes=None,
                    class_counts=None,
                    y_min=present[0] if present else None,
                    y_max=present[-1] if present else None,
                )
                changed = True
        if changed:
            conn.execute(sa.update(datasets).where(datasets.c.id == dataset_id).values(info=info))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint("uq_jobs_idempotency_owner_idempotency_key", type_="unique")

    op.execute(
        "UPDATE jobs SET idempotency_key = idempotency_owner || ':' || idempotency_key "
        "WHERE idempotency_owner IS NOT NULL AND idempotency_key IS NOT NULL"
    )

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_unique_constraint(
            batch_op.f("uq_jobs_idempotency_key"), ["idempotency_key"]
        )
        batch_op.drop_column("idempotency_owner")

    # The old schema allows one row per name: keep each name's newest token.
    op.execute(
        "DELETE FROM api_tokens WHERE id NOT IN (SELECT MAX(id) FROM api_tokens GROUP BY name)"
    )
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_api_tokens_active_name", sqlite_where=ACTIVE, postgresql_where=ACTIVE
        )
        batch_op.create_unique_constraint(batch_op.f("uq_api_tokens_name"), ["name"])
