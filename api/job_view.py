"""Insight for jobs, computed from their epoch rows, each row read once.

A job's insight depends on its epochs, its status, stop reason and recorded best. The
API keeps, for each job it has served lately, the epochs it has read (only the metrics
the insight looks at) and the insight it computed: while the job's row is unchanged the
insight is served as it is; once it changes (a progress write, a new epoch, the end),
only the epochs recorded since are read, and the insight is computed again only if an
epoch or one of those fields is new, from the job's ``api.insight.History``, to which
each new epoch is added. So a job training its 200,000th epoch costs one index seek and
a few comparisons per change, not a read and a scan of its whole history. A new attempt
may record again epochs an earlier one recorded: its epochs are read afresh.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from api.insight import Epoch, History, analyse, insight_keys
from api.schemas import JobOut
from models.runs import JobKind
from models.tables import EpochMetric, Job

# Jobs whose epochs are kept, and the epochs kept over all of them (about 200 to 250
# bytes each: at most about 70 MB); the least recently served jobs go first.
CACHE_JOBS = 4096
CACHE_EPOCHS = 300_000


@dataclass
class _History:
    """What the API has read of one job, and the insight computed from it."""

    row_key: tuple[Any, ...]
    history: History = field(default_factory=History)
    facts: tuple[Any, ...] | None = None
    result: dict[str, Any] | None = None

    @property
    def attempts(self) -> int:
        """The attempt whose epochs these are (the last field of ``_row_key``)."""
        return int(self.row_key[-1])

    @property
    def last_epoch(self) -> int:
        return self.history.last_epoch or 0


_histories: OrderedDict[str, _History] = OrderedDict()
_cached_epochs = 0
_lock = threading.Lock()


def insights(session: Session, jobs: Sequence[Job]) -> dict[str, dict[str, Any] | None]:
    """Each job's insight by id, reading only the epoch rows not read before."""
    out: dict[str, dict[str, Any] | None] = {}
    stale: dict[str, tuple[Job, _History, int]] = {}
    with _lock:
        for job in jobs:
            if job.kind != JobKind.FIT:  # a run (evaluate, predict) has no epochs
                out[job.id] = None
                continue
            known = _histories.get(job.id)
            if known is not None and known.row_key == _row_key(job) and known.facts is not None:
                _histories.move_to_end(job.id)
                out[job.id] = known.result
                continue
            if known is None or known.attempts != job.attempts:
                known = _History(_row_key(job))
                _keep(job.id, known)
            _histories.move_to_end(job.id)
            stale[job.id] = (job, known, known.last_epoch)
    if not stale:
        return out
    rows = _new_epochs(session, {job_id: after for job_id, (_, _, after) in stale.items()})
    with _lock:
        _add(rows, stale)
        for job_id, (job, known, _) in stale.items():
            facts = (job.status, job.stop_reason, job.best, known.last_epoch)
            if facts != known.facts:
                known.result = analyse(
                    job.spec, known.history, job.status, job.stop_reason, job.best
                ).as_dict()
                known.facts = facts
            known.row_key = _row_key(job)
            out[job_id] = known.result
        _evict()
    return out


def _new_epochs(session: Session, after: dict[str, int]) -> Sequence[Any]:
    """The epoch rows of each job after the epoch ``after`` gives it, in order."""
    return session.execute(
        select(EpochMetric.job_id, EpochMetric.epoch, EpochMetric.metrics)
        .where(
            or_(
                *(
                    and_(EpochMetric.job_id == job_id, EpochMetric.epoch > last)
                    for job_id, last in after.items()
                )
            )
        )
        .order_by(EpochMetric.job_id, EpochMetric.epoch)
    ).all()


def _add(rows: Sequence[Any], stale: dict[str, tuple[Job, _History, int]]) -> None:
    """Adds the rows read to their jobs' histories, but those another request added."""
    global _cached_epochs
    keys = {job_id: insight_keys(job.spec) for job_id, (job, _, _) in stale.items()}
    for job_id, epoch, metrics in rows:
        known = stale[job_id][1]
        if epoch > known.last_epoch:
            kept = {k: v for k, v in (metrics or {}).items() if k in keys[job_id]}
            known.history.add(Epoch(epoch, kept))
            _cached_epochs += 1 if _histories.get(job_id) is known else 0


def _keep(job_id: str, known: _History) -> None:
    """Stores ``known`` as the job's history, in place of an earlier attempt's."""
    global _cached_epochs
    old = _histories.pop(job_id, None)
    _cached_epochs -= len(old.history.numbers) if old is not None else 0
    _histories[job_id] = known
    _cached_epochs += len(known.history.numbers)


def _evict() -> None:
    """Drops the least recently served jobs while over the limits."""
    global _cached_epochs
    while _histories and (len(_histories) > CACHE_JOBS or _cached_epochs > CACHE_EPOCHS):
        _, dropped = _histories.popitem(last=False)
        _cached_epochs -= len(dropped.history.numbers)


def _row_key(job: Job) -> tuple[Any, ...]:
    return (job.updated_at, job.status, job.stop_reason, job.attempts)


def job_out(session: Session, job: Job) -> JobOut:
    """The job as the API returns it, with its insight."""
    return job_outs(session, [job])[0]


def job_outs(session: Session, jobs: Sequence[Job]) -> list[JobOut]:
    """The jobs as the API returns them, each with its insight."""
    found = insights(session, jobs)
    return [JobOut.model_validate(job, context={"insight": found[job.id]}) for job in jobs]
