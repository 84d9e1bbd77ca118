"""The worker's status writes go through ``models.states.move``, on each kind of database."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.db import make_engine, make_session_factory
from models.states import IllegalMove, JobStatus, StopReason
from models.tables import Job
from tests.conftest import Backend
from tests.dispatcher.test_dispatch import add_job
from worker.jobstore import JobStore


@pytest.fixture
def queued(migrated_backend: Backend) -> tuple[sessionmaker[Session], str, JobStore]:
    """A queued job on each backend, and its worker-side store."""
    factory = make_session_factory(make_engine(migrated_backend.database_url))
    job_id = add_job(factory, "queued", attempts=0)
    return factory, job_id, JobStore(factory, job_id)


def test_a_finish_with_a_reason_that_does_not_fit_its_status_changes_nothing(
    queued: tuple[sessionmaker[Session], str, JobStore],
) -> None:
    factory, job_id, store = queued
    assert store.claim("w1") is not None

    with pytest.raises(IllegalMove, match="succeeded job stops for one of"):
        store.finish(JobStatus.SUCCEEDED, StopReason.NAN_LOSS)
    with pytest.raises(IllegalMove, match="cannot become running"):
        store.finish(JobStatus.RUNNING, StopReason.COMPLETED)
    with factory() as s:
        job = s.get(Job, job_id)
        assert job is not None
        assert (job.status, job.stop_reason, job.finished_at) == ("running", None, None)

    assert store.finish(JobStatus.FAILED, StopReason.NAN_LOSS)
    with factory() as s:
        job = s.get(Job, job_id)
        assert job is not None and (job.status, job.stop_reason) == ("failed", "nan_loss")


def test_claim_and_requeue_move_the_job_between_queued_and_running(
    queued: tuple[sessionmaker[Session], str, JobStore],
) -> None:
    factory, job_id, store = queued

    assert store.claim("w1") is not None
    with factory() as s:
        job = s.get(Job, job_id)
        assert job is not None and (job.status, job.worker) == ("running", "w1")
    assert store.requeue("the worker stopped")
    with factory() as s:
        job = s.get(Job, job_id)
        assert job is not None and (job.status, job.stop_reason, job.worker) == (
            "queued",
            None,
            None,
        )
    assert not store.requeue("again")  # it is no longer running under this attempt
