"""The worker's writes to the job database: claim, progress, epochs, checkpoints, outcome.

Every write after the claim names the attempt that made it, so a write from an
attempt that no longer owns the job changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select, update
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
    """This attempt no longer owns the job (it was cancelled, reaped or finished)."""


@dataclass(frozen=True)
class Claim:
    job_id: str
    attempt: int
    spec: dict[str, Any]


def _upsert(engine: Engine, table: Any) -> Any:
    return (postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert)(table)


class JobStore:
    """Database access for one job, from the process that trains it."""

    def __init__(self, factory: sessionmaker[Session], job_id: str) -> None:
        self.factory = factory
        self.job_id = job_id
        self.attempt = 0

    def _engine(self) -> Engine:
        bind = self.factory.kw["bind"]
        assert isinstance(bind, Engine)
        return bind

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
                    started_at=now,
                    updated_at=now,
                    worker=worker,
                )
                .returning(Job.attempts, Job.spec)
            ).first()
            if res is None:
                return None
            self.attempt = int(res[0])
            s.add(
                JobEvent(
                    job_id=self.job_id,
                    kind="started",
                    attempt=self.attempt,
                    message=f"attempt {self.attempt} on {worker}",
                )
            )
            return Claim(self.job_id, self.attempt, dict(res[1]))

    def _owned(self) -> Any:
        return (Job.id == self.job_id) & (Job.status == RUNNING) & (Job.attempts == self.attempt)

    def progress(self, epoch: int, step: int | None, steps: int | None) -> bool:
        """Records in-epoch progress; returns whether a cancel was requested."""
        with transaction(self.factory) as s:
            row = s.execute(
                update(Job)
                .where(self._owned())
                .values(
                    progress_epoch=epoch,
                    progress_step=step,
                    progress_steps=steps,
                    updated_at=utcnow(),
                )
                .returning(Job.cancel_requested)
            ).first()
            if row is None:
                raise LostOwnership(self.job_id)
            return bool(row[0])

    def record_epoch(
        self,
        epoch: int,
        metrics: dict[str, float | None],
        lr: float | None,
        duration_s: float,
        best: dict[str, Any] | None,
    ) -> bool:
        """Upserts one epoch's row and the job's summary; returns whether cancel was asked."""
        with transaction(self.factory) as s:
            now = utcnow()
            row = s.execute(
                update(Job)
                .where(self._owned())
                .values(
                    latest_metrics=metrics,
                    best=best,
                    progress_epoch=epoch,
                    progress_step=Job.progress_steps,
                    updated_at=now,
                )
                .returning(Job.cancel_requested)
            ).first()
            if row is None:
                raise LostOwnership(self.job_id)
            stmt = _upsert(self._engine(), EpochMetric).values(
                job_id=self.job_id,
                epoch=epoch,
                metrics=metrics,
                lr=lr,
                duration_s=duration_s,
                recorded_at=now,
            )
            s.execute(
                stmt.on_conflict_do_update(
                    index_elements=["job_id", "epoch"],
                    set_={
                        "metrics": metrics,
                        "lr": lr,
                        "duration_s": duration_s,
                        "recorded_at": now,
                    },
                )
            )
            return bool(row[0])

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
            if s.execute(select(Job.id).where(self._owned())).first() is None:
                raise LostOwnership(self.job_id)
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

    def event(self, kind: str, message: str) -> None:
        with transaction(self.factory) as s:
            s.add(JobEvent(job_id=self.job_id, kind=kind, message=message, attempt=self.attempt))

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
