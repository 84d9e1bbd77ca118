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

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

JOB_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
EPOCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
FINISHED = "('succeeded', 'failed', 'cancelled')"
KEY = "metric, queue, status, bucket"
SHARDED_KEY = f"{KEY}, shard"
# Migration 0013 spreads each figure over this many rows in PostgreSQL (``shard``, by a
# hash of the job's id), so that concurrent claims and epoch writes of one queue do not
# all wait for the same row's lock.
SHARDS = 16


def _upsert(key: str) -> str:
    return (
        f"ON CONFLICT ({key}) DO UPDATE SET "
        "n = metric_rollups.n + excluded.n, total = metric_rollups.total + excluded.total"
    )


def _shard(dialect: str, job_id: str, sharded: bool) -> str:
    """The rollup row's shard for a job's change: '' before 0013, 0 on SQLite."""
    if not sharded:
        return ""
    if dialect == "postgresql":
        return f", (hashtext({job_id}) & {SHARDS - 1}) AS shard"
    return ", 0 AS shard"


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


def _job_deltas(
    dialect: str, row: str, sign: int, source: str = "", sharded: bool = False
) -> list[str]:
    """SELECTs of the rollup changes a job row makes (``sign`` 1) or unmakes (-1).

    ``source`` is empty in a trigger (``row`` is NEW or OLD) and a FROM clause for
    the backfill; ``sharded`` (migration 0013 on) adds the ``shard`` column.
    """
    secs = _seconds(dialect, row)
    shard = _shard(dialect, f"{row}.id", sharded)
    done = (
        f"{row}.status IN {FINISHED} AND {row}.started_at IS NOT NULL "
        f"AND {row}.finished_at IS NOT NULL"
    )
    return [
        f"SELECT 'jobs' AS metric, {row}.queue AS queue, {row}.status AS status, "
        f"0 AS bucket{shard}, {sign} AS n, 0.0 AS total {source} WHERE 1 = 1",
        f"SELECT 'job_duration', {row}.queue, {row}.status, {_bucket(secs, JOB_BUCKETS)}"
        f"{shard}, {sign}, {sign} * {secs} {source} WHERE {done}",
    ]


def _epoch_deltas(
    row: str, sign: int, source: str = "", dialect: str = "", sharded: bool = False
) -> list[str]:
    shard = _shard(dialect, f"{row}.job_id", sharded)
    return [
        f"SELECT 'epoch_duration' AS metric, jobs.queue AS queue, '' AS status, "
        f"{_bucket(f'{row}.duration_s', EPOCH_BUCKETS)} AS bucket{shard}, {sign} AS n, "
        f"{sign} * {row}.duration_s AS total FROM {source or ''} jobs "
        f"WHERE jobs.id = {row}.job_id"
    ]


def _apply(deltas: list[str], sharded: bool = False) -> str:
    """One statement adding the deltas, summed by key and taken in the keys' order."""
    key = SHARDED_KEY if sharded else KEY
    if len(deltas) == 1:  # an epoch row written or deleted: one key, nothing to sum
        return f"INSERT INTO metric_rollups ({key}, n, total) {deltas[0]} {_upsert(key)}"
    union = " UNION ALL ".join(deltas)
    return (
        f"INSERT INTO metric_rollups ({key}, n, total) "
        f"SELECT {key}, sum(n), sum(total) "
        f"FROM ({union}) AS d WHERE 1 = 1 GROUP BY {key} "
        f"HAVING sum(n) <> 0 OR sum(total) <> 0 ORDER BY {key} {_upsert(key)}"
    )


JOB_CHANGED = (
    "OLD.queue IS NOT NEW.queue OR OLD.status IS NOT NEW.status "
    "OR OLD.started_at IS NOT NEW.started_at OR OLD.finished_at IS NOT NEW.finished_at"
)
EPOCH_CHANGED = "OLD.job_id IS NOT NEW.job_id OR OLD.duration_s IS NOT NEW.duration_s"


def _tables(dialect: str, sharded: bool) -> list[tuple[str, Any, str]]:
    """Each table with rollup triggers, its deltas ``(row, sign)`` and when an update counts."""
    return [
        ("jobs", lambda r, s: _job_deltas(dialect, r, s, sharded=sharded), JOB_CHANGED),
        (
            "epoch_metrics",
            lambda r, s: _epoch_deltas(r, s, dialect=dialect, sharded=sharded),
            EPOCH_CHANGED,
        ),
    ]


def _sqlite_triggers(sharded: bool) -> list[str]:
    out = []
    for table, deltas, changed in _tables("sqlite", sharded):
        name = f"rollup_{table}"
        out += [
            f"CREATE TRIGGER {name}_insert AFTER INSERT ON {table} BEGIN "
            f"{_apply(deltas('NEW', 1), sharded)}; END",
            f"CREATE TRIGGER {name}_delete AFTER DELETE ON {table} BEGIN "
            f"{_apply(deltas('OLD', -1), sharded)}; END",
            f"CREATE TRIGGER {name}_update AFTER UPDATE ON {table} WHEN {changed} BEGIN "
            f"{_apply(deltas('OLD', -1) + deltas('NEW', 1), sharded)}; END",
        ]
    return out


def _postgres_triggers(sharded: bool) -> list[str]:
    out = []
    for table, deltas, changed in _tables("postgresql", sharded):
        name = f"rollup_{table}"
        changed = changed.replace(" IS NOT ", " IS DISTINCT FROM ")
        out += [
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF TG_OP = 'INSERT' THEN {_apply(deltas('NEW', 1), sharded)}; "
            f"ELSIF TG_OP = 'DELETE' THEN {_apply(deltas('OLD', -1), sharded)}; "
            f"ELSE {_apply(deltas('OLD', -1) + deltas('NEW', 1), sharded)}; END IF; "
            "RETURN NULL; END $$",
            f"CREATE TRIGGER {name}_insert_delete AFTER INSERT OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {name}()",
            f"CREATE TRIGGER {name}_update AFTER UPDATE ON {table} FOR EACH ROW "
            f"WHEN ({changed}) EXECUTE FUNCTION {name}()",
        ]
    return out


def install_triggers(sharded: bool = False) -> None:
    """Creates the triggers that keep ``metric_rollups`` (after dropping any there are).

    ``sharded``: the table has migration 0013's ``shard`` column (every migration from
    0013 on passes True).
    """
    drop_triggers()
    postgres = op.get_bind().dialect.name == "postgresql"
    for ddl in _postgres_triggers(sharded) if postgres else _sqlite_triggers(sharded):
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
        "e", 1, "epoch_metrics AS e,", dialect
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
