"""The worker's writes on a real database of each kind: what lands, and the fence."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from core.db import make_engine, make_session_factory
from models.tables import Checkpoint, EpochMetric, Job, utcnow
from tests.conftest import Backend
from tests.dispatcher.test_dispatch import add_job
from worker.jobstore import JobStore, LostOwnership


def test_epoch_progress_and_checkpoint_writes_land_once_and_renew_the_lease(
    migrated_backend: Backend,
) -> None:
    factory = make_session_factory(make_engine(migrated_backend.database_url))
    job_id = add_job(factory, "queued", attempts=0)
    store = JobStore(factory, job_id, lease_seconds=30)
    assert store.claim("w1") is not None
    before = utcnow()

    assert store.progress(1, 7, 40) is False
    with factory() as s:
        job = s.get(Job, job_id)
        assert job is not None
        assert (job.progress_epoch, job.progress_step, job.progress_steps) == (1, 7, 40)
        assert job.lease_expires_at is not None
        assert job.lease_expires_at >= before + dt.timedelta(seconds=29)

    store.record_class_weight({0: 1.5, 1: 0.5})
    best = {"epoch": 1, "monitor": "val_loss", "value": 0.5}
    store.record_epoch(1, {"loss": 0.7, "val_loss": 0.5}, 0.001, 0.25, best, {"0": {"wait": 0}})
    # A second attempt at the same epoch replaces the row, no duplicate; None stays None.
    store.record_epoch(1, {"loss": 0.6, "val_loss": None}, None, 0.2, None, None)
    store.record_epoch(2, {"loss": 0.5, "val_loss": 0.4}, 0.001, 0.3, best)
    store.record_checkpoint(1, "a.keras", "val_loss", 0.5, True, 10)
    store.record_checkpoint(2, "b.keras", "val_loss", 0.4, True, 11)
    store.record_checkpoint(2, "b.keras", "val_loss", 0.4, True, 12)  # rewritten file
    store.record_checkpoint(3, "c.keras", "val_loss", 0.45, False, 13)
    # The best of another monitored metric is its own: val_loss's best stays.
    store.record_checkpoint(3, "d.keras", "val_accuracy", 0.9, True, 14)

    with factory() as s:
        rows = s.execute(select(EpochMetric).order_by(EpochMetric.epoch)).scalars().all()
        assert [(r.epoch, r.metrics, r.lr, r.attempt) for r in rows] == [
            (1, {"loss": 0.6, "val_loss": None}, None, 1),
            (2, {"loss": 0.5, "val_loss": 0.4}, 0.001, 1),
        ]
        assert rows[0].callback_state is None and rows[1].callback_state is None
        job = s.get(Job, job_id)
        assert job is not None
        assert (job.progress_epoch, job.progress_step) == (2, 40)
        assert job.latest_metrics == {"loss": 0.5, "val_loss": 0.4} and job.best == best
        assert job.class_weight == {"0": 1.5, "1": 0.5}
        cps = s.execute(select(Checkpoint).order_by(Checkpoint.path)).scalars().all()
        assert [(c.path, c.epoch, c.is_best, c.size_bytes) for c in cps] == [
            ("a.keras", 1, False, 10),
            ("b.keras", 2, True, 12),
            ("c.keras", 3, False, 13),
            ("d.keras", 3, True, 14),
        ]

    # A cancel request reaches the writer through the job row.
    with factory() as s, s.begin():
        job = s.get(Job, job_id)
        assert job is not None
        job.cancel_requested = True
    assert store.heartbeat() is True


def test_an_attempt_that_lost_the_job_writes_nothing(migrated_backend: Backend) -> None:
    factory = make_session_factory(make_engine(migrated_backend.database_url))
    job_id = add_job(factory, "queued", attempts=0)
    stale = JobStore(factory, job_id)
    assert stale.claim("w1") is not None
    stale.record_epoch(1, {"loss": 1.0}, None, 0.1, None)
    assert stale.requeue("test")
    fresh = JobStore(factory, job_id)
    assert fresh.claim("w2") is not None

    for write in (
        lambda: stale.heartbeat(),
        lambda: stale.progress(2, 1, 10),
        lambda: stale.record_epoch(1, {"loss": 9.0}, None, 0.1, None),
        lambda: stale.record_epoch(2, {"loss": 9.0}, None, 0.1, None),
        lambda: stale.record_checkpoint(2, "x.keras", "loss", 9.0, True, 1),
    ):
        with pytest.raises(LostOwnership):
            write()
    with factory() as s:
        assert s.execute(select(EpochMetric.epoch, EpochMetric.metrics)).all() == [
            (1, {"loss": 1.0})
        ]
        assert s.execute(select(Checkpoint)).first() is None
        job = s.get(Job, job_id)
        assert job is not None and job.progress_epoch == 1 and job.worker == "w2"


def test_a_finished_job_takes_no_more_writes_from_its_own_attempt(
    migrated_backend: Backend,
) -> None:
    factory = make_session_factory(make_engine(migrated_backend.database_url))
    job_id = add_job(factory, "queued", attempts=0)
    store = JobStore(factory, job_id)
    assert store.claim("w1") is not None
    store.record_epoch(1, {"loss": 1.0}, None, 0.1, None)
    assert store.finish("succeeded", "completed")
    with pytest.raises(LostOwnership):
        store.record_epoch(2, {"loss": 0.5}, None, 0.1, None)
    with pytest.raises(LostOwnership):
        store.heartbeat()
    with factory() as s:
        assert s.execute(select(EpochMetric.epoch)).scalars().all() == [1]
        job = s.get(Job, job_id)
        assert job is not None and job.status == "succeeded" and job.lease_expires_at is None
