"""``GET /metrics`` reads rollups kept by triggers, never the history, and they are exact.

The rollups (migrations 0011 and 0013) must equal a full recount of the rows after any sequence
of writes (inserts, claims, requeues, endings, epoch upserts) and after the migration's
own backfill, on SQLite and PostgreSQL; and a scrape must not read the epoch rows
beyond the last minute's.
"""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from prometheus_client import CollectorRegistry
from sqlalchemy import create_engine, event, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from api.metrics import EPOCH_BUCKETS, JOB_BUCKETS, JobsCollector
from core.settings import Settings
from migrations.migrate import alembic_config, upgrade
from models.states import FINISHED
from models.tables import EpochMetric, Job
from tests.conftest import make_backend

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _job(
    i: int, status: str, queue: str, started: float | None, ran: float | None
) -> dict[str, Any]:
    start = T0 + dt.timedelta(seconds=started) if started is not None else None
    end = start + dt.timedelta(seconds=ran) if start is not None and ran is not None else None
    return {
        "id": f"j{i:05d}",
        "queue": queue,
        "status": status,
        "spec": {},
        "warnings": [],
        "spec_hash": "x",
        "created_at": T0 + dt.timedelta(seconds=i),
        "updated_at": T0 + dt.timedelta(seconds=i),
        "started_at": start,
        "finished_at": end,
    }


def _epoch(job_id: str, epoch: int, duration: float) -> dict[str, Any]:
    return {"job_id": job_id, "epoch": epoch, "metrics": {}, "duration_s": duration}


def _first_rows(engine: Engine) -> None:
    jobs = [
        _job(0, "queued", "default", None, None),
        _job(1, "running", "default", 0, None),
        _job(2, "succeeded", "default", 0, 0.5),
        _job(3, "succeeded", "gpu", 10, 400),
        _job(4, "failed", "gpu", 20, 90_000),
        _job(5, "cancelled", "default", 5, 15),
    ]
    durations = [0.01, 0.05, 0.3, 1.0, 7.5, 2000.0]
    epochs = [
        _epoch(f"j{i:05d}", e, durations[(i + e) % 6]) for i in (1, 2, 3, 4) for e in range(5)
    ]
    with engine.begin() as conn:
        conn.execute(insert(Job), jobs)
        conn.execute(insert(EpochMetric), epochs)


def _later_writes(engine: Engine) -> None:
    """What the service does: submit, claim, record epochs (again), requeue, finish."""
    ins = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    with engine.begin() as conn:
        conn.execute(insert(Job), [_job(10, "queued", "gpu", None, None)])
        conn.execute(
            update(Job)
            .where(Job.id == "j00000")
            .values(status="running", started_at=T0, updated_at=T0)
        )
        conn.execute(insert(EpochMetric), [_epoch("j00000", 0, 0.2), _epoch("j00010", 0, 3.0)])
        again = ins(EpochMetric).values(_epoch("j00001", 1, 45.0))
        conn.execute(
            again.on_conflict_do_update(
                index_elements=["job_id", "epoch"], set_={"duration_s": again.excluded.duration_s}
            )
        )
        conn.execute(update(Job).where(Job.id == "j00001").values(status="queued"))
    with engine.begin() as conn:
        end = T0 + dt.timedelta(seconds=7200)
        conn.execute(
            update(Job).where(Job.id == "j00000").values(status="succeeded", finished_at=end)
        )
        conn.execute(update(Job).where(Job.id == "j00001").values(progress_epoch=3))


def _scraped(engine: Engine, settings: Settings) -> dict[tuple[str, tuple[Any, ...]], float]:
    with Session(engine) as session:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(JobsCollector(session, settings))
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in registry.collect()
            for s in family.samples
            if s.name.startswith(("fitq_jobs", "fitq_job_duration", "fitq_epoch_duration"))
        }


def _histogram(
    out: dict[Any, float],
    name: str,
    labels: dict[str, str],
    values: list[float],
    buckets: tuple[float, ...],
) -> None:
    key = tuple(sorted(labels.items()))
    out[(f"{name}_count", key)] = len(values)
    out[(f"{name}_sum", key)] = pytest.approx(sum(values), abs=1e-2)  # SQLite: to the ms
    for b in (*buckets, float("inf")):
        le = "+Inf" if b == float("inf") else str(float(b))
        out[(f"{name}_bucket", tuple(sorted({**labels, "le": le}.items())))] = sum(
            v <= b for v in values
        )


def _recounted(engine: Engine) -> dict[tuple[str, tuple[Any, ...]], Any]:
    """The same figures from all the rows, counted here in Python."""
    with Session(engine) as s:
        jobs = s.execute(
            select(Job.id, Job.queue, Job.status, Job.started_at, Job.finished_at)
        ).all()
        epochs = s.execute(select(EpochMetric.job_id, EpochMetric.duration_s)).all()
    out: dict[tuple[str, tuple[Any, ...]], Any] = {}
    queue_of = {j.id: j.queue for j in jobs}
    for (queue, status), group in itertools.groupby(
        sorted(jobs, key=lambda j: (j.queue, j.status)), key=lambda j: (j.queue, j.status)
    ):
        group = list(group)
        out[("fitq_jobs", (("queue", queue), ("status", status)))] = len(group)
        if status in FINISHED:
            secs = [(j.finished_at - j.started_at).total_seconds() for j in group]
            _histogram(
                out,
                "fitq_job_duration_seconds",
                {"queue": queue, "status": status},
                secs,
                JOB_BUCKETS,
            )
    for queue in sorted(set(queue_of.values())):
        out[("fitq_jobs_created_total", (("queue", queue),))] = sum(
            q == queue for q in queue_of.values()
        )
        secs = [d for job_id, d in epochs if queue_of[job_id] == queue]
        if secs:
            _histogram(out, "fitq_epoch_duration_seconds", {"queue": queue}, secs, EPOCH_BUCKETS)
    return out


def _nonzero(scraped: dict[Any, float]) -> dict[Any, float]:
    return {k: v for k, v in scraped.items() if v or k[0] != "fitq_jobs"}


@pytest.mark.parametrize("backend_name", ["sqlite", "postgres"])
def test_rollups_equal_a_full_recount_after_backfill_and_writes(
    backend_name: str, tmp_path: Path
) -> None:
    backend = make_backend(backend_name, tmp_path, "fitq_rollups")
    settings = Settings(database_url=backend.database_url, data_dir=tmp_path)
    upgrade(backend.database_url, "0010")
    engine = create_engine(backend.database_url)
    _first_rows(engine)
    upgrade(backend.database_url)  # 0011 fills the rollups from these rows
    assert _nonzero(_scraped(engine, settings)) == _recounted(engine)
    _later_writes(engine)
    assert _nonzero(_scraped(engine, settings)) == _recounted(engine)
    # 0013's shards (several per figure in PostgreSQL) merge back into one row on the way
    # down, and spread again on the way up.
    engine.dispose()
    command.downgrade(alembic_config(backend.database_url), "0012")
    assert _nonzero(_scraped(engine, settings)) == _recounted(engine)
    _job_moves(engine, "j00001", "running", "queued")
    upgrade(backend.database_url)
    _job_moves(engine, "j00001", "running", "succeeded")  # 3 s after its start
    assert _nonzero(_scraped(engine, settings)) == _recounted(engine)
    engine.dispose()


def _job_moves(engine: Engine, job_id: str, *statuses: str) -> None:
    for status in statuses:
        ended = {"finished_at": T0 + dt.timedelta(seconds=3)} if status in FINISHED else {}
        with engine.begin() as conn:
            conn.execute(update(Job).where(Job.id == job_id).values(status=status, **ended))


def test_a_scrape_reads_no_epoch_history(tmp_path: Path) -> None:
    backend = make_backend("sqlite", tmp_path, "unused")
    settings = Settings(database_url=backend.database_url, data_dir=tmp_path)
    upgrade(backend.database_url)
    engine = create_engine(backend.database_url)
    _first_rows(engine)
    statements: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(" ".join(statement.split()))

    _scraped(engine, settings)
    assert statements, "the scrape ran no query"
    for sql in statements:
        # The one read of epoch rows is the last minute's, through its index.
        if "epoch_metrics" in sql:
            assert "epoch_metrics.recorded_at >=" in sql, sql
        # Jobs are read only where they wait or run, never all of them.
        if "FROM jobs" in sql:
            assert "jobs.status =" in sql, sql
    engine.dispose()
