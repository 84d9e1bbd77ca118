"""A job's insight is served from the epochs the API has read, reading only new ones.

On a real database of each kind: after the first read, a change to the job's row reads
only the epochs recorded since (the query asks for epochs after the last one read), and
the insight stays equal to ``analyse`` over the whole history, through new epochs, the
end, and a new attempt that records earlier epochs again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from api.insight import Epoch, analyse
from api.job_view import insights
from api.jobs import create_job
from api.tokens import OPEN
from core.db import make_engine, make_session_factory
from core.settings import Settings
from models.spec import JobSpec
from models.tables import EpochMetric, Job
from tests.conftest import Backend
from tests.factories import digits_spec

EARLY = {"type": "EarlyStopping", "monitor": "val_loss", "patience": 50}


def loss(epoch: int) -> float:
    return 2.0 / epoch


def val_loss(epoch: int) -> float:
    # Lowest at epoch 20, rising after: overfitting once enough validations follow.
    return 1.0 / epoch if epoch <= 20 else 0.05 + 0.01 * (epoch - 20)


class Recorder:
    """The parameters of every query on ``epoch_metrics``."""

    def __init__(self) -> None:
        self.params: list[list[Any]] = []

    def __call__(self, _conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if "FROM epoch_metrics" in statement:
            values = params.values() if isinstance(params, dict) else params
            self.params.append(list(values))


@pytest.fixture
def db(migrated_backend: Backend, tmp_path: Any) -> Iterator[tuple[Session, Recorder]]:
    engine = make_engine(migrated_backend.database_url)
    recorder = Recorder()
    event.listen(engine, "before_cursor_execute", recorder)
    with make_session_factory(engine)() as session:
        yield session, recorder
    engine.dispose()


def add_epochs(session: Session, job: Job, epochs: range, attempt: int = 1) -> None:
    """Records ``epochs`` (again, where an earlier attempt recorded them)."""
    for epoch in epochs:
        metrics = {"loss": loss(epoch) * attempt, "val_loss": val_loss(epoch), "x": 1}
        row = session.scalar(
            select(EpochMetric).where(EpochMetric.job_id == job.id, EpochMetric.epoch == epoch)
        )
        if row is None:
            session.add(EpochMetric(job_id=job.id, epoch=epoch, duration_s=0.1, metrics=metrics))
        else:
            row.metrics = metrics
        session.flush()
    job.updated_at = job.updated_at + dt.timedelta(seconds=1)
    session.commit()


def whole(session: Session, job: Job) -> dict[str, Any]:
    rows = session.scalars(
        select(EpochMetric).where(EpochMetric.job_id == job.id).order_by(EpochMetric.epoch)
    )
    epochs = [Epoch(r.epoch, r.metrics) for r in rows]
    return analyse(job.spec, epochs, job.status, job.stop_reason, job.best).as_dict()


def test_a_change_reads_only_the_epochs_recorded_since(
    db: tuple[Session, Recorder], tmp_path: Any
) -> None:
    session, recorder = db
    spec = JobSpec.model_validate(digits_spec(callbacks=[EARLY]))
    job, _ = create_job(session, spec, Settings(data_dir=tmp_path), None, OPEN)
    job.status, job.attempts = "running", 1
    add_epochs(session, job, range(1, 21))

    first = insights(session, [job])[job.id]
    assert first == whole(session, job)
    assert first is not None and first["findings"] == []

    # A progress write: the row changes, no epoch is new; nothing is read again.
    recorder.params.clear()
    job.progress_step = 3
    job.updated_at = job.updated_at + dt.timedelta(seconds=1)
    session.commit()
    assert insights(session, [job])[job.id] == first
    assert [20 in p for p in recorder.params] == [True], recorder.params

    # Ten new epochs: only those are read, and val_loss' rise is found.
    add_epochs(session, job, range(21, 31))
    recorder.params.clear()
    later = insights(session, [job])[job.id]
    assert [20 in p for p in recorder.params] == [True], recorder.params
    assert later == whole(session, job)
    assert later is not None and [f["kind"] for f in later["findings"]] == ["overfitting"]

    # Unchanged row: served as it is, no query.
    recorder.params.clear()
    assert insights(session, [job])[job.id] == later
    assert recorder.params == []

    # The end, then a new attempt that records epochs 25 to 30 again, differently.
    job.status, job.stop_reason = "succeeded", "completed"
    add_epochs(session, job, range(31, 31))
    assert insights(session, [job])[job.id] == whole(session, job)
    job.status, job.stop_reason, job.attempts = "running", None, 2
    add_epochs(session, job, range(25, 31), attempt=2)
    assert insights(session, [job])[job.id] == whole(session, job)
