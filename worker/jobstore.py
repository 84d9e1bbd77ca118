"""The worker's writes to the job database: claim, lease, epochs, checkpoints, outcome.

Every write after the claim is fenced by the attempt that made it: it changes a row
only while the job is ``running`` under that attempt. A write from an attempt that
no longer owns the job (its lease expired and another attempt took over, or the job
was finished) changes nothing and raises ``LostOwnership``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Connection,
    Engine,
    Executable,
    Table,
    bindparam,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.types import TypeEngine

from core.db import transaction
from models.states import JobStatus, StopReason, move
from models.tables import Base, Checkpoint, EpochMetric, Job, JobEvent, utcnow


class LostOwnership(Exception):
    """This attempt no longer owns the job (it was reaped, cancelled or finished)."""


@dataclass(frozen=True)
class Claim:
    """A job taken by this process: its attempt number and what earlier ones left."""

    job_id: str
    attempt: int
    spec: dict[str, Any]
    last_epoch: int | None = None  # the last epoch an earlier attempt recorded
    callback_states: dict[int, dict[str, Any]] = field(default_factory=dict)
    kind: str = "fit"  # models.runs.JobKind: fit, or a run of the parent job's model
    parent_job_id: str | None = None


@dataclass(frozen=True)
class _Statements:
    """The writes a training attempt makes every epoch or second, built once.

    Built with bound parameters, they skip building the statement and its cache key
    on every call, which cost several times the write itself.
    """

    touch: Executable
    progress: Executable
    class_weight: Executable
    epoch_touch: Executable
    epoch_row: Executable
    unset_best: Executable
    checkpoint_row: Executable


def _table(model: type[Base]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


def _param(table: Table, column: str, name: str | None = None) -> BindParameter[Any]:
    return _bind(name or column, type_=table.c[column].type)


def _bind(name: str, type_: TypeEngine[Any] | None = None) -> BindParameter[Any]:
    # update() and insert() reserve the columns' own names for their parameters.
    return bindparam(f"p_{name}", type_=type_)


def _params(**values: object) -> dict[str, object]:
    return {f"p_{name}": value for name, value in values.items()}


@lru_cache(maxsize=4)
def _statements(dialect: str) -> _Statements:
    jobs, epochs, checkpoints = _table(Job), _table(EpochMetric), _table(Checkpoint)
    owned = (
        (Job.id == _bind("job_id"))
        & (Job.status == JobStatus.RUNNING)
        & (Job.attempts == _bind("attempt"))
    )
    lease = {
        "updated_at": _param(jobs, "updated_at"),
        "lease_expires_at": _param(jobs, "lease_expires_at", "lease"),
    }

    def touch(**values: object) -> Executable:
        return update(Job).where(owned).values(**lease, **values).returning(Job.cancel_requested)

    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert

    def upsert(table: Table, key: list[str], columns: list[str]) -> Executable:
        stmt = insert(table).values(
            job_id=_bind("job_id"), **{c: _param(table, c) for c in key + columns}
        )
        return stmt.on_conflict_do_update(
            index_elements=["job_id", *key], set_={c: stmt.excluded[c] for c in columns}
        )

    return _Statements(
        touch=touch(),
        progress=touch(
            progress_epoch=_bind("epoch"),
            progress_step=_bind("step"),
            progress_steps=_bind("steps"),
        ),
        class_weight=touch(class_weight=_param(jobs, "class_weight")),
        epoch_touch=touch(
            latest_metrics=_param(jobs, "latest_metrics"),
            best=_param(jobs, "best"),
            progress_epoch=_bind("epoch"),
            progress_step=Job.progress_steps,
        ),
        epoch_row=upsert(
            epochs,
            ["epoch"],
            ["metrics", "lr", "duration_s", "recorded_at", "attempt", "callback_state"],
        ),
        unset_best=update(Checkpoint)
        .where(
            Checkpoint.job_id == _bind("job_id"),
            Checkpoint.monitor.is_not_distinct_from(_bind("monitor")),
        )
        .values(is_best=False),
        checkpoint_row=upsert(
            checkpoints,
            ["path"],
            ["epoch", "monitor", "value", "is_best", "size_bytes", "created_at"],
        ),
    )


class JobStore:
    """Database access for one job, from the process that trains it.

    Args:
        factory: Sessions on the job database.
        job_id: The job.
        lease_seconds: How long a claim or heartbeat keeps the job this attempt's.
    """

    def __init__(self, factory: sessionmaker[Session], job_id: str, lease_seconds: float = 60.0):
        self.factory = factory
        self.job_id = job_id
        self.lease = dt.timedelta(seconds=lease_seconds)
        self.attempt = 0

    def _engine(self) -> Engine:
        bind = self.factory.kw["bind"]
        assert isinstance(bind, Engine)
        return bind

    def waiting_spec(self) -> dict[str, Any] | None:
        """The job's spec while it waits to be claimed; ``None`` when it does not."""
        with self.factory() as s:
            row = s.execute(
                select(Job.spec).where(
                    Job.id == self.job_id,
                    Job.status == JobStatus.QUEUED,
                    Job.cancel_requested.is_(False),
                )
            ).first()
        return dict(row[0]) if row is not None else None

    def checkpoint_path(self, job_id: str, checkpoint_id: int) -> str | None:
        """Where checkpoint ``checkpoint_id`` of job ``job_id`` is, inside that job's folder."""
        with self.factory() as s:
            path: str | None = s.scalar(
                select(Checkpoint.path).where(
                    Checkpoint.job_id == job_id, Checkpoint.id == checkpoint_id
                )
            )
        return path

    def spec_of(self, job_id: str) -> dict[str, Any]:
        """The stored spec of another job (a run reads its parent's); raises ``KeyError``
        when there is no such job."""
        with self.factory() as s:
            spec = s.scalar(select(Job.spec).where(Job.id == job_id))
        if spec is None:
            raise KeyError(job_id)
        return dict(spec)

    def forwarded(self, message: str) -> bool:
        """Records that the job was sent on to larger workers; False if it no longer waits."""
        with transaction(self.factory) as s:
            now = utcnow()
            res = s.execute(
                update(Job)
                .where(Job.id == self.job_id, Job.status == JobStatus.QUEUED)
                .values(dispatched_at=now, updated_at=now)
            )
            if res.rowcount != 1:  # type: ignore[attr-defined]
                return False
            s.add(JobEvent(job_id=self.job_id, kind="forwarded", at=now, message=message))
            return True

    def claim(self, worker: str) -> Claim | None:
        """Takes a queued job for this process; ``None`` when it is not queued."""
        with transaction(self.factory) as s:
            now = utcnow()
            res = s.execute(
                update(Job)
                .where(
                    Job.id == self.job_id,
                    Job.status == JobStatus.QUEUED,
                    Job.cancel_requested.is_(False),
                )
                .values(
                    **move(JobStatus.QUEUED, JobStatus.RUNNING),
                    attempts=Job.attempts + 1,
                    started_at=func.coalesce(Job.started_at, now),
                    updated_at=now,
                    lease_expires_at=now + self.lease,
                    worker=worker,
                )
                .returning(Job.attempts, Job.spec, Job.kind, Job.parent_job_id)
            ).first()
            if res is None:
                return None
            self.attempt = int(res[0])
            rows = s.execute(
                select(EpochMetric.epoch, EpochMetric.callback_state).where(
                    EpochMetric.job_id == self.job_id
                )
            ).all()
            states = {int(e): dict(st) for e, st in rows if st is not None}
            last = max((int(e) for e, _ in rows), default=None)
            s.add(
                JobEvent(
                    job_id=self.job_id,
                    kind="started",
                    attempt=self.attempt,
                    message=f"attempt {self.attempt} on {worker}"
                    + (f", after epoch {last} was recorded" if last else ""),
                )
            )
            return Claim(self.job_id, self.attempt, dict(res[1]), last, states, str(res[2]), res[3])

    def _owned(self) -> ColumnElement[bool]:
        return (
            (Job.id == self.job_id)
            & (Job.status == JobStatus.RUNNING)
            & (Job.attempts == self.attempt)
        )

    def _renew(self, conn: Connection, stmt: Executable, **params: object) -> bool:
        """Runs a prebuilt update of the job row if this attempt owns it (renewing the
        lease); returns whether a cancel was requested."""
        now = utcnow()
        row = conn.execute(
            stmt,
            _params(
                job_id=self.job_id,
                attempt=self.attempt,
                updated_at=now,
                lease=now + self.lease,
                **params,
            ),
        ).first()
        if row is None:
            raise LostOwnership(self.job_id)
        return bool(row[0])

    def _prebuilt(self) -> _Statements:
        return _statements(self._engine().dialect.name)

    def cancel_requested(self) -> bool:
        """Whether a cancel was asked for the job while this attempt owns it (a read only).

        Raises ``LostOwnership`` when it no longer does.
        """
        with self.factory() as s:
            row = s.execute(select(Job.cancel_requested).where(self._owned())).first()
        if row is None:
            raise LostOwnership(self.job_id)
        return bool(row[0])

    def heartbeat(self) -> bool:
        """Renews this attempt's lease; returns whether a cancel was requested."""
        with self._engine().begin() as conn:
            return self._renew(conn, self._prebuilt().touch)

    def progress(self, epoch: int, step: int | None, steps: int | None) -> bool:
        """Records in-epoch progress; returns whether a cancel was requested."""
        with self._engine().begin() as conn:
            return self._renew(conn, self._prebuilt().progress, epoch=epoch, step=step, steps=steps)

    def record_epoch(
        self,
        epoch: int,
        metrics: dict[str, float | None],
        lr: float | None,
        duration_s: float,
        best: dict[str, Any] | None,
        callback_state: dict[str, Any] | None = None,
    ) -> bool:
        """Upserts one epoch's row and the job's summary; returns whether cancel was asked."""
        stmts = self._prebuilt()
        with self._engine().begin() as conn:
            cancel = self._renew(
                conn, stmts.epoch_touch, latest_metrics=metrics, best=best, epoch=epoch
            )
            conn.execute(
                stmts.epoch_row,
                _params(
                    job_id=self.job_id,
                    epoch=epoch,
                    metrics=metrics,
                    lr=lr,
                    duration_s=duration_s,
                    recorded_at=utcnow(),
                    attempt=self.attempt,
                    callback_state=callback_state,
                ),
            )
            return cancel

    def record_checkpoint(
        self,
        epoch: int,
        path: str,
        monitor: str | None,
        value: float | None,
        is_best: bool,
        size_bytes: int,
    ) -> None:
        stmts = self._prebuilt()
        with self._engine().begin() as conn:
            self._renew(conn, stmts.touch)
            if is_best:
                conn.execute(stmts.unset_best, _params(job_id=self.job_id, monitor=monitor))
            conn.execute(
                stmts.checkpoint_row,
                _params(
                    job_id=self.job_id,
                    path=path,
                    epoch=epoch,
                    monitor=monitor,
                    value=value,
                    is_best=is_best,
                    size_bytes=size_bytes,
                    created_at=utcnow(),
                ),
            )

    def record_class_weight(self, weights: dict[int, float]) -> None:
        with self._engine().begin() as conn:
            self._renew(
                conn,
                self._prebuilt().class_weight,
                class_weight={str(k): v for k, v in weights.items()},
            )

    def event(self, kind: str, message: str) -> None:
        with transaction(self.factory) as s:
            s.add(JobEvent(job_id=self.job_id, kind=kind, message=message, attempt=self.attempt))

    def requeue(self, reason: str) -> bool:
        """Gives the job back to the queue (a graceful stop), to resume elsewhere."""
        with transaction(self.factory) as s:
            now = utcnow()
            res = s.execute(
                update(Job)
                .where(self._owned())
                .values(
                    **move(JobStatus.RUNNING, JobStatus.QUEUED),
                    worker=None,
                    lease_expires_at=None,
                    dispatched_at=now,
                    updated_at=now,
                )
            )
            if res.rowcount != 1:  # type: ignore[attr-defined]
                return False
            s.add(
                JobEvent(job_id=self.job_id, kind="requeued", attempt=self.attempt, message=reason)
            )
            return True

    def finish(
        self,
        status: JobStatus,
        stop_reason: StopReason,
        *,
        test_metrics: dict[str, float | None] | None = None,
        error: tuple[str, str, str] | None = None,
        model_file: tuple[int, str] | None = None,
    ) -> bool:
        """Ends the job; returns False when this attempt no longer owned it.

        ``model_file`` is the size and SHA-256 of the ``model.keras`` the job saved.

        Raises:
            IllegalMove: ``status`` is not a finished one, or ``stop_reason`` does not
                go with it.
        """
        with transaction(self.factory) as s:
            now = utcnow()
            values: dict[str, Any] = {
                **move(JobStatus.RUNNING, status, stop_reason),
                "finished_at": now,
                "updated_at": now,
                "lease_expires_at": None,
                "test_metrics": test_metrics,
            }
            if error is not None:
                values.update(error_type=error[0], error_message=error[1], error_traceback=error[2])
            if model_file is not None:
                values.update(model_size_bytes=model_file[0], model_sha256=model_file[1])
            res = s.execute(update(Job).where(self._owned()).values(**values))
            if res.rowcount != 1:  # type: ignore[attr-defined]
                return False
            message = f"{status} ({stop_reason})" + (f": {error[0]}: {error[1]}" if error else "")
            s.add(
                JobEvent(
                    job_id=self.job_id,
                    kind="finished",
                    attempt=self.attempt,
                    message=message[:2000],
                )
            )
            return True
