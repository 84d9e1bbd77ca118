"""Insight for jobs, computed from their epoch rows and kept while a job is unchanged."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.insight import Epoch, analyse
from api.schemas import JobOut
from models.tables import EpochMetric, Job

CACHE_SIZE = 4096
_cache: OrderedDict[tuple[str, Any], dict[str, Any]] = OrderedDict()
_lock = threading.Lock()


def insights(session: Session, jobs: Sequence[Job]) -> dict[str, dict[str, Any]]:
    """Each job's insight by id, reading epoch rows only for jobs that changed."""
    out: dict[str, dict[str, Any]] = {}
    stale: list[Job] = []
    with _lock:
        for job in jobs:
            hit = _cache.get(_key(job))
            if hit is None:
                stale.append(job)
            else:
                _cache.move_to_end(_key(job))
                out[job.id] = hit
    if not stale:
        return out
    epochs: dict[str, list[Epoch]] = {job.id: [] for job in stale}
    rows = session.execute(
        select(EpochMetric.job_id, EpochMetric.epoch, EpochMetric.metrics)
        .where(EpochMetric.job_id.in_(list(epochs)))
        .order_by(EpochMetric.job_id, EpochMetric.epoch)
    )
    for job_id, epoch, metrics in rows:
        epochs[job_id].append(Epoch(epoch, metrics or {}))
    with _lock:
        for job in stale:
            found = analyse(job.spec, epochs[job.id], job.status, job.stop_reason, job.best)
            result = found.as_dict()
            out[job.id] = result
            _cache[_key(job)] = result
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return out


def job_out(session: Session, job: Job) -> JobOut:
    """The job as the API returns it, with its insight."""
    return job_outs(session, [job])[0]


def job_outs(session: Session, jobs: Sequence[Job]) -> list[JobOut]:
    """The jobs as the API returns them, each with its insight."""
    found = insights(session, jobs)
    return [JobOut.model_validate(job, context={"insight": found[job.id]}) for job in jobs]


def _key(job: Job) -> tuple[str, Any]:
    return (job.id, (job.updated_at, job.status, job.stop_reason))
