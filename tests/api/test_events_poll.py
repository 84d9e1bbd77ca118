"""The event stream's poll on a real database: a job event for every change of the job,
none while nothing changes."""

from __future__ import annotations

import json

from fastapi.encoders import jsonable_encoder
from sqlalchemy import select

from api.routes.events import _Cursor, _poll
from core.db import make_engine, make_session_factory
from core.settings import Settings
from models.tables import Checkpoint, EpochMetric, Job, utcnow
from tests.conftest import Backend
from tests.dispatcher.test_dispatch import add_job


def test_the_job_is_sent_when_any_of_its_columns_changes(migrated_backend: Backend) -> None:
    factory = make_session_factory(make_engine(migrated_backend.database_url))
    job_id = add_job(factory, "running")
    settings = Settings()
    cur = _Cursor(epoch=0)

    def poll() -> list[str]:
        _poll(factory, settings, job_id, cur)
        items, cur.items = cur.items, []
        return [kind for kind, _, _ in items]

    def change(**values: object) -> None:  # as a writer would, but updated_at untouched
        with factory() as s, s.begin():
            job = s.get(Job, job_id)
            assert job is not None
            for key, value in values.items():
                setattr(job, key, value)

    assert poll() == ["job"]
    assert poll() == []
    change(cancel_requested=True)
    assert poll() == ["job"]
    change(progress_epoch=1, progress_step=3, progress_steps=10)
    assert poll() == ["job"]
    assert poll() == []
    change(worker="w2")  # a column the job's JSON does not show: no event
    assert poll() == []
    change(status="succeeded", stop_reason="completed")
    assert poll() == ["job"]
    factory.kw["bind"].dispose()


def test_a_checkpoint_that_stops_being_the_best_is_sent_again(migrated_backend: Backend) -> None:
    factory = make_session_factory(make_engine(migrated_backend.database_url))
    job_id = add_job(factory, "running")
    settings = Settings()
    cur = _Cursor(epoch=0)

    def poll() -> list[tuple[str, bool | None]]:
        _poll(factory, settings, job_id, cur)
        items, cur.items = cur.items, []
        return [(kind, data.is_best if kind == "checkpoint" else None) for kind, data, _ in items]

    def write(**values: object) -> None:  # a checkpoint write, as the worker's: the row and a touch
        with factory() as s, s.begin():
            s.add(Checkpoint(job_id=job_id, size_bytes=1, monitor="val_loss", **values))
            job = s.get(Job, job_id)
            assert job is not None
            job.updated_at = utcnow()
            if values["is_best"]:
                for old in s.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id)):
                    old.is_best = old.path == values["path"]

    write(epoch=1, path="a.keras", value=0.5, is_best=True)
    assert poll() == [("checkpoint", True), ("job", None)]
    # A better one: the job's JSON shows nothing new, but a.keras is no longer the best.
    write(epoch=2, path="b.keras", value=0.4, is_best=True)
    assert sorted(poll()) == [("checkpoint", False), ("checkpoint", True)]
    assert poll() == []
    factory.kw["bind"].dispose()


def test_each_event_is_encoded_as_fastapis_encoder_gives_it(migrated_backend: Backend) -> None:
    """Events are encoded once, when read, by pydantic's serializer: the JSON is what
    FastAPI's ``jsonable_encoder`` gives for the same job, epoch and checkpoint."""
    factory = make_session_factory(make_engine(migrated_backend.database_url))
    job_id = add_job(factory, "running")
    with factory() as s, s.begin():
        metrics = {"loss": 0.1 + 1 / 3, "val_loss": 1e-05, "accuracy": None, "tiny": 5e-324}
        s.add(EpochMetric(job_id=job_id, epoch=1, metrics=metrics, lr=1e-3, duration_s=0.25))
        s.add(
            Checkpoint(
                job_id=job_id,
                epoch=1,
                path="é.keras",
                monitor="val_loss",
                value=1e-05,
                is_best=True,
                size_bytes=7,
            )
        )
        job = s.get(Job, job_id)
        assert job is not None
        job.progress_epoch, job.latest_metrics = 2, metrics
    cur = _Cursor(epoch=0, log_offset=-1)
    _poll(factory, Settings(), job_id, cur)
    assert sorted(kind for kind, _, _ in cur.items) == ["checkpoint", "epoch", "job"]
    for kind, data, encoded in cur.items:
        assert encoded.event == kind
        assert json.loads(encoded.raw_data or "") == jsonable_encoder(data)
    epoch = next(data for kind, data, _ in cur.items if kind == "epoch")
    assert epoch.metrics["val_loss"] == 1e-05 and epoch.metrics["tiny"] == 5e-324
    factory.kw["bind"].dispose()
