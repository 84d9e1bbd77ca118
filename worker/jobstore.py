"""The worker's writes to the job database: claim, lease, epochs, checkpoints, outcome.

Every write after the claim is fenced by the attempt that made it: it changes a row
only while the job is ``running`` under that attempt. A write from an attempt that
no longer owns the job (its lease expired and another attempt took over, or the job
was finished) changes nothing and raises ``LostOwnership``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from models.db import transaction
from models.tables import (
    FINISHED,
    QUEUED,
    RUNNING,
    Checkpoint,
    EpochMetric,
    Job,
    JobEvent,
    utcnow,
)


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


def _upsert(engine: Engine, table: Any) -> Any:
    return (postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert)(table)


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
                    Job.id == self.job_id, Job.status == QUEUED, Job.cancel_requested.is_(False)
                )
            ).first()
        return dict(row[0]) if row is not None else None

    def forwarded(self, message: str) -> bool:
        """Records that the job was sent on to larger workers; False if it no longer waits."""
        with transaction(self.factory) as s:
            now = utcnow()
            res = s.execute(
                update(Job)
                .where(Job.id == self.job_id, Job.status == QUEUED)
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
                .where(Job.id == self.job_id, Job.status == QUEUED, Job.cancel_requested.is_(False))
                .values(
                    status=RUNNING,
                    attempts=Job.attempts + 1,
                    started_at=func.coalesce(Job.started_at, now),
                    updated_at=now,
                    lease_expires_at=now + self.lease,
                    worker=worker,
                )
                .returning(Job.attempts, Job.spec)
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
            return Claim(self.job_id, self.attempt, dict(res[1]), last, states)

    def _owned(self) -> Any:
        return (Job.id == self.job_id) & (Job.status == RUNNING) & (Job.attempts == self.attempt)

    def _touch(self, s: Session, **values: Any) -> bool:
        """Updates the job row if this attempt owns it (renewing the lease); returns cancel."""
        now = utcnow()
        row = s.execute(
            update(Job)
            .where(self._owned())
            .values(updated_at=now, lease_expires_at=now + self.lease, **values)
            .returning(Job.cancel_requested)
        ).first()
        if row is None:
            raise LostOwnership(self.job_id)
        return bool(row[0])

    def heartbeat(self) -> bool:
        """Renews this attempt's lease; returns whether a cancel was requested."""
        with transaction(self.factory) as s:
            return self._touch(s)

    def progress(self, epoch: int, step: int | None, steps: int | None) -> bool:
        """Records in-epoch progress; returns whether a cancel was requested."""
        with transaction(self.factory) as s:
            return self._touch(s, progress_epoch=epoch, progress_step=step, progress_steps=steps)

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
        with transaction(self.factory) as s:
            cancel = self._touch(
                s,
                latest_metrics=metrics,
                best=best,
                progress_epoch=epoch,
                progress_step=Job.progress_steps,
            )
            values = {
                "metrics": metrics,
                "lr": lr,
                "duration_s": duration_s,
                "recorded_at": utcnow(),
                "attempt": self.attempt,
                "callback_state": callback_state,
            }
            stmt = _upsert(self._engine(), EpochMetric).values(
                job_id=self.job_id, epoch=epoch, **values
            )
            s.execute(stmt.on_conflict_do_update(index_elements=["job_id", "epoch"], set_=values))
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
        with transaction(self.factory) as s:
            self._touch(s)
            if is_best:
                s.execute(
                    update(Checkpoint)
                    .where(Checkpoint.job_id == self.job_id, Checkpoint.monitor == monitor)
                    .values(is_best=False)
                )
            values = {
                "epoch": epoch,
                "monitor": monitor,
                "value": value,
                "is_best": is_best,
                "size_bytes": size_bytes,
                "created_at": utcnow(),
            }
            stmt = _upsert(self._engine(), Checkpoint).values(
                job_id=self.job_id, path=path, **values
            )
            s.execute(stmt.on_conflict_do_update(index_elements=["job_id", "path"], set_=values))

    def record_class_weight(self, weights: dict[int, float]) -> None:
        with transaction(self.factory) as s:
            self._touch(s, class_weight={str(k): v for k, v in weights.items()})

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
                    status=QUEUED,
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
        status: str,
        stop_reason: str,
        *,
        test_metrics: dict[str, Any] | None = None,
        error: tuple[str, str, str] | None = None,
    ) -> bool:
        """Ends the job; returns False when this attempt no longer owned it."""
        assert status in FINISHED
        with transaction(self.factory) as s:
            now = utcnow()
            values: dict[str, Any] = {
                "status": status,
                "stop_reason": stop_reason,
                "finished_at": now,
                "updated_at": now,
                "lease_expires_at": None,
                "test_metrics": test_metrics,
            }
            if error is not None:
                values.update(error_type=error[0], error_message=error[1], error_traceback=error[2])
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
