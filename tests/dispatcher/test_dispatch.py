"""The dispatcher on a real database: expired leases, attempts used up, lost messages."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import select

from core.db import make_engine, make_session_factory
from core.settings import Settings
from dispatcher.dispatch import broker_job_ids, dispatch_once
from models.tables import Job, JobEvent, utcnow
from queueing.broker import make_celery, publish_job
from tests.conftest import Backend
from tests.factories import digits_spec


def setup(backend: Backend, tmp_path: Path) -> tuple[Any, Any, Settings]:
    # The embedded broker, whatever the database: the test reads its queue folder.
    settings = Settings(data_dir=tmp_path, database_url=backend.database_url, requeue_seconds=5)
    factory = make_session_factory(make_engine(backend.database_url))
    return factory, make_celery(settings), settings


def add_job(
    factory: Any,
    status: str,
    *,
    lease_ago: float | None = None,
    attempts: int = 1,
    failures: int = 0,
    dispatched_ago: float = 0,
    cancel: bool = False,
    max_attempts: int = 3,
) -> str:
    now = utcnow()
    job_id = uuid.uuid4().hex
    with factory() as s, s.begin():
        s.add(
            Job(
                id=job_id,
                name=None,
                queue="default",
                status=status,
                spec={**digits_spec(), "max_attempts": max_attempts, "seed": 1},
                warnings=[],
                spec_hash="h",
                created_at=now,
                updated_at=now,
                attempts=attempts,
                failed_attempts=failures,
                cancel_requested=cancel,
                lease_expires_at=None
                if lease_ago is None
                else now - dt.timedelta(seconds=lease_ago),
                dispatched_at=now - dt.timedelta(seconds=dispatched_ago),
            )
        )
    return job_id


def test_expired_leases_are_requeued_then_failed_and_cancels_finish(
    migrated_backend: Backend, tmp_path: Path
) -> None:
    factory, celery, settings = setup(migrated_backend, tmp_path)
    alive = add_job(factory, "running", lease_ago=-30)
    expired = add_job(factory, "running", lease_ago=1)
    exhausted = add_job(factory, "running", lease_ago=1, attempts=3, failures=2)
    cancelling = add_job(factory, "running", lease_ago=1, attempts=2, cancel=True)

    done = dispatch_once(factory, celery, settings)
    assert done.requeued == [expired] and done.failed == [exhausted]
    assert done.cancelled == [cancelling]
    with factory() as s:
        jobs = {j.id: j for j in s.scalars(select(Job))}
        kinds = {e.job_id: e.kind for e in s.scalars(select(JobEvent))}
    assert jobs[alive].status == "running"
    assert jobs[expired].status == "queued" and jobs[expired].failed_attempts == 1
    assert jobs[exhausted].status == "failed" and jobs[exhausted].error_type == "AttemptsExhausted"
    assert "max_attempts=3" in (jobs[exhausted].error_message or "")
    assert jobs[cancelling].status == "cancelled"
    assert kinds[expired] == "lease_expired"
    assert broker_job_ids(settings, {"default"}) == {expired}
    # A second pass changes nothing.
    again = dispatch_once(factory, celery, settings)
    assert (again.requeued, again.failed, again.cancelled, again.republished) == ([], [], [], [])


def test_queued_jobs_without_a_message_are_published_again(
    migrated_backend: Backend, tmp_path: Path
) -> None:
    factory, celery, settings = setup(migrated_backend, tmp_path)
    fresh = add_job(factory, "queued", attempts=0, dispatched_ago=1)
    waiting = add_job(factory, "queued", attempts=0, dispatched_ago=60)
    lost = add_job(factory, "queued", attempts=0, dispatched_ago=61, failures=1)
    publish_job(celery, waiting, "default")  # its message is still in the broker

    done = dispatch_once(factory, celery, settings)
    assert done.republished == [lost]
    assert broker_job_ids(settings, {"default"}) == {waiting, lost}
    assert fresh not in done.republished


def test_jobs_the_dispatcher_ends_lose_their_backups_and_requeued_ones_keep_them(
    migrated_backend: Backend, tmp_path: Path
) -> None:
    factory, celery, settings = setup(migrated_backend, tmp_path)
    expired = add_job(factory, "running", lease_ago=1)
    exhausted = add_job(factory, "running", lease_ago=1, attempts=3, failures=2)
    cancelling = add_job(factory, "running", lease_ago=1, attempts=2, cancel=True)
    for job_id in (expired, exhausted, cancelling):
        backup = settings.job_dir(job_id) / "backup"
        backup.mkdir(parents=True)
        (backup / "epoch-000002.bin").write_bytes(b"b" * 64)

    done = dispatch_once(factory, celery, settings)
    assert (done.requeued, done.failed, done.cancelled) == ([expired], [exhausted], [cancelling])
    assert (settings.job_dir(expired) / "backup" / "epoch-000002.bin").is_file()
    assert not (settings.job_dir(exhausted) / "backup").exists()
    assert not (settings.job_dir(cancelling) / "backup").exists()
    with factory() as s:
        retention = {
            e.job_id: e.message for e in s.scalars(select(JobEvent)) if e.kind == "retention"
        }
    assert retention == {
        exhausted: "removed the resume backups (64 bytes)",
        cancelling: "removed the resume backups (64 bytes)",
    }
