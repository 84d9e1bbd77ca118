"""metric rollups kept by triggers; indexes for the jobs list's filters and cursor

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 03:20:00.000000

``GET /metrics`` used to count every job and bucket every epoch row at each scrape,
so its cost grew with history (3.4 s at 1,000,000 epoch rows). ``metric_rollups``
holds those figures instead, one row per (metric, queue, status, bucket), and
triggers on ``jobs`` and ``epoch_metrics`` keep it up to date in the transaction of
every write, whichever process writes (the API, a worker, the dispatcher):

- ``jobs``: jobs by queue and status (``bucket`` 0, ``total`` unused);
- ``job_duration``: finished jobs with a start and an end, by queue and final status;
  ``bucket`` is the index of the first of ``JOB_BUCKETS`` the duration fits in (13 for
  none: +Inf only), ``total`` the sum of the seconds;
- ``epoch_duration``: epoch rows by their job's queue (``status`` is ''), bucketed by
  ``EPOCH_BUCKETS`` the same way (14 for none).

The buckets are copied here from ``api/metrics.py``: changing them there needs a
migration that rewrites these triggers (a test compares the rollups with a full
recount). On SQLite, a later ``batch_alter_table`` on ``jobs`` or ``epoch_metrics``
recreates the table and drops its triggers: such a migration must call
``install_triggers`` again. The upgrade fills the rollups from the rows there are.

In PostgreSQL each trigger applies its changes in the order of the rollup rows' keys,
so that two transactions moving jobs in opposite directions (a claim and a requeue)
take the rows' locks in the same order.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

JOB_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
EPOCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
FINISHED = "('succeeded', 'failed', 'cancelled')"
UPSERT = (
    "ON CONFLICT (metric, queue, status, bucket) DO UPDATE SET "
    "n = metric_rollups.n + excluded.n, total = metric_rollups.total + excluded.total"
)
JOB_INDEXES = {
    "ix_jobs_status_created_at_id": ["status", "created_at", "id"],
    "ix_jobs_owner_created_at_id": ["owner", "created_at", "id"],
    "ix_jobs_owner_status_created_at_id": ["owner", "status", "created_at", "id"],
    "ix_jobs_status_queue_created_at": ["status", "queue", "created_at"],
}


def _bucket(value: str, buckets: tuple[float, ...]) -> str:
    whens = " ".join(f"WHEN {value} <= {b} THEN {i}" for i, b in enumerate(buckets))
    return f"(CASE {whens} ELSE {len(buckets)} END)"


def _seconds(dialect: str, row: str) -> str:
    if dialect == "postgresql":
        return f"extract(epoch FROM {row}.finished_at - {row}.started_at)"
    # julianday() is a double of days: about 50 µs of error today, so rounded to ms.
    return f"round((julianday({row}.finished_at) - julianday({row}.started_at)) * 86400.0, 3)"


def _job_deltas(dialect: str, row: str, sign: int, source: str = "") -> list[str]:
    """SELECTs of the rollup changes a job row makes (``sign`` 1) or unmakes (-1).

    ``source`` is empty in a trigger (``row`` is NEW or OLD) and a FROM clause for
    the backfill.
    """
    secs = _seconds(dialect, row)
    done = (
        f"{row}.status IN {FINISHED} AND {row}.started_at IS NOT NULL "
        f"AND {row}.finished_at IS NOT NULL"
    )
    return [
        f"SELECT 'jobs' AS metric, {row}.queue AS queue, {row}.status AS status, "
        f"0 AS bucket, {sign} AS n, 0.0 AS total {source} WHERE 1 = 1",
        f"SELECT 'job_duration', {row}.queue, {row}.status, {_bucket(secs, JOB_BUCKETS)}, "
        f"{sign}, {sign} * {secs} {source} WHERE {done}",
    ]


def _epoch_deltas(row: str, sign: int, source: str = "") -> list[str]:
    return [
        f"SELECT 'epoch_duration' AS metric, jobs.queue AS queue, '' AS status, "
        f"{_bucket(f'{row}.duration_s', EPOCH_BUCKETS)} AS bucket, {sign} AS n, "
        f"{sign} * {row}.duration_s AS total FROM {source or ''} jobs "
        f"WHERE jobs.id = {row}.job_id"
    ]


def _apply(deltas: list[str]) -> str:
    """One statement adding the deltas, summed by key and taken in the keys' order."""
    if len(deltas) == 1:  # an epoch row written or deleted: one key, nothing to sum
        return (
            "INSERT INTO metric_rollups (metric, queue, status, bucket, n, total) "
            f"{deltas[0]} {UPSERT}"
        )
    union = " UNION ALL ".join(deltas)
    return (
        "INSERT INTO metric_rollups (metric, queue, status, bucket, n, total) "
        "SELECT metric, queue, status, bucket, sum(n), sum(total) "
        f"FROM ({union}) AS d WHERE 1 = 1 GROUP BY metric, queue, status, bucket "
        f"HAVING sum(n) <> 0 OR sum(total) <> 0 ORDER BY metric, queue, status, bucket {UPSERT}"
    )


JOB_CHANGED = (
    "OLD.queue IS NOT NEW.queue OR OLD.status IS NOT NEW.status "
    "OR OLD.started_at IS NOT NEW.started_at OR OLD.finished_at IS NOT NEW.finished_at"
)
EPOCH_CHANGED = "OLD.job_id IS NOT NEW.job_id OR OLD.duration_s IS NOT NEW.duration_s"


def _sqlite_triggers() -> list[str]:
    out = []
    for table, deltas, changed in (
        ("jobs", lambda r, s: _job_deltas("sqlite", r, s), JOB_CHANGED),
        ("epoch_metrics", _epoch_deltas, EPOCH_CHANGED),
    ):
        name = f"rollup_{table}"
        out += [
            f"CREATE TRIGGER {name}_insert AFTER INSERT ON {table} BEGIN "
            f"{_apply(deltas('NEW', 1))}; END",
            f"CREATE TRIGGER {name}_delete AFTER DELETE ON {table} BEGIN "
            f"{_apply(deltas('OLD', -1))}; END",
            f"CREATE TRIGGER {name}_update AFTER UPDATE ON {table} WHEN {changed} BEGIN "
            f"{_apply(deltas('OLD', -1) + deltas('NEW', 1))}; END",
        ]
    return out


def _postgres_triggers() -> list[str]:
    out = []
    for table, deltas, changed in (
        ("jobs", lambda r, s: _job_deltas("postgresql", r, s), JOB_CHANGED),
        ("epoch_metrics", _epoch_deltas, EPOCH_CHANGED),
    ):
        name = f"rollup_{table}"
        changed = changed.replace(" IS NOT ", " IS DISTINCT FROM ")
        out += [
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF TG_OP = 'INSERT' THEN {_apply(deltas('NEW', 1))}; "
            f"ELSIF TG_OP = 'DELETE' THEN {_apply(deltas('OLD', -1))}; "
            f"ELSE {_apply(deltas('OLD', -1) + deltas('NEW', 1))}; END IF; "
            "RETURN NULL; END $$",
            f"CREATE TRIGGER {name}_insert_delete AFTER INSERT OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {name}()",
            f"CREATE TRIGGER {name}_update AFTER UPDATE ON {table} FOR EACH ROW "
            f"WHEN ({changed}) EXECUTE FUNCTION {name}()",
        ]
    return out


def install_triggers() -> None:
    """Creates the triggers that keep ``metric_rollups`` (after dropping any there are)."""
    drop_triggers()
    dialect = op.get_bind().dialect.name
    for ddl in _postgres_triggers() if dialect == "postgresql" else _sqlite_triggers():
        op.execute(ddl)


def drop_triggers() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for table in ("jobs", "epoch_metrics"):
        name = f"rollup_{table}"
        if postgres:
            op.execute(f"DROP FUNCTION IF EXISTS {name}() CASCADE")
        else:
            for event in ("insert", "delete", "update"):
                op.execute(f"DROP TRIGGER IF EXISTS {name}_{event}")


def _backfill() -> None:
    dialect = op.get_bind().dialect.name
    deltas = _job_deltas(dialect, "j", 1, "FROM jobs AS j") + _epoch_deltas(
        "e", 1, "epoch_metrics AS e,"
    )
    op.execute(
        "INSERT INTO metric_rollups (metric, queue, status, bucket, n, total) "
        "SELECT metric, queue, status, bucket, sum(n), sum(total) "
        f"FROM ({' UNION ALL '.join(deltas)}) AS d GROUP BY metric, queue, status, bucket"
    )


def upgrade() -> None:
    op.create_table(
        "metric_rollups",
        sa.Column("metric", sa.String(length=32), nullable=False),
        sa.Column("queue", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint(
            "metric", "queue", "status", "bucket", name=op.f("pk_metric_rollups")
        ),
    )
    _backfill()
    install_triggers()
    with op.batch_alter_table("jobs", schema=None, recreate="never") as batch_op:
        for name, columns in JOB_INDEXES.items():
            batch_op.create_index(name, columns, unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None, recreate="never") as batch_op:
        for name in JOB_INDEXES:
            batch_op.drop_index(name)
    drop_triggers()
    op.drop_table("metric_rollups")
