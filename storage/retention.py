"""What a job keeps of its files once it has ended, and deleting them on request.

Once a job has ended (succeeded, failed, stopped or cancelled; whichever process
records that: the worker, the dispatcher that fails a job whose attempts ran out, the
API that cancels a queued one), ``after_end`` removes its resume backups, and the
checkpoints its ``output.retention`` does not keep (``models.spec.RetentionSpec``).
``delete_artifacts`` removes every file of a finished job but its training log. Both
mark the rows first (``removed_at``, ``removed_reason``), record an event saying
what went, and only then remove the files, through the artifact store
(``storage.removal``), in the bucket as in the folder.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from checks.compile_args import output_names
from checks.monitor import Direction, UndecidedDirection, direction, metric_directions
from core.errors import Conflict
from core.settings import Settings
from models.spec import JobSpec, ModelCheckpointSpec, RetentionSpec
from models.states import FINISHED, JobStatus
from models.tables import Checkpoint, Job, JobEvent, utcnow
from storage.artifacts import artifact_store
from storage.removal import JobRemoval

RETENTION = "retention"
DELETED = "deleted"


@dataclass(frozen=True)
class Removed:
    """What was removed: checkpoint rows marked, and the bytes of the files freed."""

    checkpoints: int = 0
    bytes: int = 0


def default_retention(settings: Settings) -> RetentionSpec | None:
    """The server's retention for a spec that gives none; None keeps every checkpoint."""
    best, last = settings.keep_best_checkpoints, settings.keep_last_checkpoints
    if best is None and last is None:
        return None
    return RetentionSpec(keep_best=best or 0, keep_last=last or 0)


def retention_of(spec: Mapping[str, Any]) -> RetentionSpec | None:
    """The retention a stored spec asks for (the server's default already filled in
    when the job was queued); None keeps every checkpoint."""
    output = spec.get("output")
    raw = output.get("retention") if isinstance(output, dict) else None
    return RetentionSpec.model_validate(raw) if raw is not None else None


def kept(
    rows: Sequence[Checkpoint], rule: RetentionSpec, ways: Mapping[str, Direction]
) -> set[int]:
    """The ids of the checkpoints ``rule`` keeps: the ``keep_last`` newest (by epoch,
    then as written) and, per monitored metric whose direction is known (``ways``),
    the ``keep_best`` best values (the earlier checkpoint first on a tie)."""
    if rule.keep_all:
        return {r.id for r in rows}
    newest = sorted(rows, key=lambda r: (r.epoch, r.id), reverse=True)
    keep = {r.id for r in newest[: rule.keep_last]}
    groups: dict[str, list[Checkpoint]] = defaultdict(list)
    for r in rows:
        if r.monitor is not None and r.monitor in ways and _finite(r.value):
            groups[r.monitor].append(r)
    for monitor, group in groups.items():
        sign = 1.0 if ways[monitor] == "min" else -1.0
        ranked = sorted(group, key=lambda r: (sign * (r.value or 0.0), r.epoch, r.id))
        keep |= {r.id for r in ranked[: rule.keep_best]}
    return keep


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def monitor_ways(spec: JobSpec) -> dict[str, Direction]:
    """Which way each ModelCheckpoint's monitor improves, as the worker ranked them
    (``checks.monitor.direction``); a monitor Keras cannot decide is left out."""
    directions = metric_directions(spec.compile, output_names(spec.model.keras_config))
    ways: dict[str, Direction] = {}
    for cb in spec.callbacks:
        if isinstance(cb, ModelCheckpointSpec) and cb.monitor not in ways:
            try:
                ways[cb.monitor] = direction(cb.monitor, cb.mode, directions)
            except UndecidedDirection:
                continue
    return ways


def after_end(session: Session, settings: Settings, job_id: str) -> Removed:
    """Removes an ended job's backups and the checkpoints its retention does not keep;
    records an event when anything went. Does nothing for a job that has not ended."""
    job = session.get(Job, job_id)
    if job is None or JobStatus(job.status) not in FINISHED:
        return Removed()
    removal = JobRemoval(artifact_store(settings), job_id)
    doomed = _retired(session, job)
    backup_bytes = removal.backup_bytes()
    if not doomed and not removal.has_backups():
        return Removed()
    now = utcnow()
    for row in doomed:
        row.removed_at, row.removed_reason = now, RETENTION
    message = _retention_message(job, doomed, backup_bytes)
    session.add(JobEvent(job_id=job_id, kind=RETENTION, at=now, message=message))
    session.commit()
    freed = removal.remove([row.path for row in doomed], backups=True)
    return Removed(len(doomed), freed)


def _retired(session: Session, job: Job) -> list[Checkpoint]:
    """The checkpoints still on disk that the job's retention does not keep."""
    rule = retention_of(job.spec) if job.kind == "fit" else None
    if rule is None or not rule.removes:
        return []
    rows = session.scalars(
        select(Checkpoint).where(Checkpoint.job_id == job.id, Checkpoint.removed_at.is_(None))
    ).all()
    ways = monitor_ways(JobSpec.model_validate(job.spec)) if rule.keep_best else {}
    keep = kept(rows, rule, ways)
    return [r for r in rows if r.id not in keep]


def _retention_message(job: Job, doomed: Sequence[Checkpoint], backup_bytes: int) -> str:
    parts = []
    if doomed:
        epochs = sorted({r.epoch for r in doomed})
        shown = ", ".join(map(str, epochs[:20])) + (", ..." if len(epochs) > 20 else "")
        rule = retention_of(job.spec)
        parts.append(
            f"removed {len(doomed)} checkpoint(s) of epochs {shown} "
            f"({sum(r.size_bytes for r in doomed)} bytes) by output.retention "
            f"{rule.model_dump(exclude_defaults=True) if rule else {}}"
        )
    if backup_bytes:
        parts.append(f"removed the resume backups ({backup_bytes} bytes)")
    return "; ".join(parts) or "removed the resume backups"


def delete_artifacts(session: Session, settings: Settings, job: Job) -> Removed:
    """Removes every file of a finished job but its training log: checkpoints, the
    trained model and SavedModel, TensorBoard and CSV logs, predictions, backups.

    Raises:
        Conflict: The job has not ended, or queued or running jobs use its model or
            checkpoints (runs of it, warm starts from it).
    """
    if JobStatus(job.status) not in FINISHED:
        raise Conflict(
            f"job {job.id} is {job.status}; its artifacts can be deleted once it has "
            "ended (cancel it, or wait for it to finish)"
        )
    users = session.scalars(
        select(Job.id).where(
            Job.parent_job_id == job.id, Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING))
        )
    ).all()
    if users:
        raise Conflict(
            f"queued or running jobs {sorted(users)} use the model or checkpoints of job "
            f"{job.id}; cancel them or wait for them to finish"
        )
    now = utcnow()
    rows = session.scalars(
        select(Checkpoint).where(Checkpoint.job_id == job.id, Checkpoint.removed_at.is_(None))
    ).all()
    for row in rows:
        row.removed_at, row.removed_reason = now, DELETED
    job.artifacts_removed_at = job.artifacts_removed_at or now
    removal = JobRemoval(artifact_store(settings), job.id)
    size = removal.all_bytes()
    session.add(
        JobEvent(
            job_id=job.id,
            kind="artifacts_deleted",
            at=now,
            message=f"deleted the job's artifacts: {len(rows)} checkpoint(s), {size} bytes "
            "in all (the training log is kept)",
        )
    )
    session.commit()
    return Removed(len(rows), removal.remove_all())
