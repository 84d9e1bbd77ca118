"""A job's life as a type: its statuses, why it stopped, and the moves between them.

Every write of a job's ``status`` goes through ``move()``, so that no module sets a
status by hand and a move that does not exist (a finished job started again, a
succeeded job cancelled) is refused where it is written, not found later.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class JobStatus(StrEnum):
    """Where a job is: waiting, training, or finished one of three ways."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED


class StopReason(StrEnum):
    """Why a finished job stopped training."""

    COMPLETED = "completed"  # every epoch ran
    EARLY_STOPPING = "early_stopping"  # EarlyStopping stopped it
    CANCELLED = "cancelled"  # someone cancelled it
    MAX_RUNTIME = "max_runtime"  # it ran past max_runtime_seconds
    NAN_LOSS = "nan_loss"  # the loss became NaN (TerminateOnNaN, or divergence)
    ERROR = "error"  # an error: a bad input found late, a crash, too many lost attempts


STATUSES = tuple(JobStatus)
FINISHED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})

# The moves that exist, from each status; a finished job never moves again.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    # A worker claims it; it is cancelled before it starts; its message cannot be
    # delivered or it cannot be started at all.
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED, JobStatus.FAILED}),
    # It finishes; or its attempt ends without an outcome (lease expired, worker
    # stopped) and it waits to resume after its last recorded epoch.
    JobStatus.RUNNING: frozenset(
        {JobStatus.QUEUED, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}

# The stop reasons each finished status may carry.
REASONS: dict[JobStatus, frozenset[StopReason]] = {
    JobStatus.SUCCEEDED: frozenset({StopReason.COMPLETED, StopReason.EARLY_STOPPING}),
    JobStatus.FAILED: frozenset({StopReason.ERROR, StopReason.MAX_RUNTIME, StopReason.NAN_LOSS}),
    JobStatus.CANCELLED: frozenset({StopReason.CANCELLED}),
}


class IllegalMove(ValueError):
    """A status change that the job's life does not have."""


def move(
    current: JobStatus | str, to: JobStatus | str, reason: StopReason | str | None = None
) -> dict[str, Any]:
    """The column values that move a job from ``current`` to ``to``.

    Args:
        current: The status the job is in (the write's WHERE clause should say so too,
            so that two writers cannot both move it).
        to: The status it moves to.
        reason: Why it stopped; required for a finished status, refused otherwise.

    Raises:
        IllegalMove: for a move that does not exist, or a reason that does not fit.
    """
    frm, dest = JobStatus(current), JobStatus(to)
    if dest not in TRANSITIONS[frm]:
        allowed = sorted(TRANSITIONS[frm]) or "none: it is finished"
        raise IllegalMove(f"a {frm} job cannot become {dest}; expected one of {allowed}")
    if not dest.finished:
        if reason is not None:
            raise IllegalMove(f"a {dest} job has no stop reason; received {reason!r}")
        return {"status": dest.value, "stop_reason": None}
    why = StopReason(reason) if reason is not None else None
    if why not in REASONS[dest]:
        raise IllegalMove(
            f"a {dest} job stops for one of {sorted(REASONS[dest])}; received {reason!r}"
        )
    return {"status": dest.value, "stop_reason": why.value}
