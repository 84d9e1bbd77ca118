"""The API's reads and writes of jobs (the worker has its own, in worker/jobstore.py)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import secrets
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.model_sources import ModelSources
from api.tokens import Principal
from checks.advice import advise
from checks.datasets import BUILTIN_PREFIX
from checks.model_source import StoredArchitecture
from checks.validation import check_spec
from core.errors import Conflict, NotFound, TooManyJobs
from core.settings import Settings
from models.spec import JobSpec, RetentionSpec
from models.states import FINISHED, JobStatus, StopReason, move
from models.tables import Dataset, Job, JobDataset, JobEvent, utcnow
from storage.retention import after_end, default_retention

log = logging.getLogger("fitq.api")


def spec_hash(spec: JobSpec) -> str:
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def create_job(
    session: Session,
    spec: JobSpec,
    settings: Settings,
    idempotency_key: str | None,
    principal: Principal,
) -> tuple[Job, bool]:
    """Validates and stores a job for ``principal``; returns it and whether it is new.

    With an ``idempotency_key`` the same owner already used for the same spec,
    returns that job; for another spec, raises ``Conflict``; keys of different owners
    never meet. Raises ``TooManyJobs`` when the owner has ``max_jobs_in_flight``
    queued and running jobs.
    """
    digest = spec_hash(spec)
    key_owner = principal.owner or ""
    if idempotency_key is not None:
        existing = keyed_job(session, key_owner, idempotency_key)
        if existing is not None:
            return same_spec(existing, digest, idempotency_key), False
    sources = ModelSources(session, settings, principal)
    data = check_spec(
        spec, settings, lambda ds_id: dataset_info(session, ds_id, principal), sources
    )
    warnings = advise(spec, data)
    check_in_flight(session, settings, principal)
    job = _new_job(
        spec,
        principal,
        warnings,
        idempotency_key,
        digest,
        sources.found,
        default_retention(settings),
    )
    used = {
        ref.dataset
        for ref in (spec.data.train, spec.data.validation, spec.data.test)
        if ref is not None and ref.dataset and not ref.dataset.startswith(BUILTIN_PREFIX)
    }
    session.add(job)
    session.add(
        JobEvent(
            job_id=job.id, kind="created", message=f"queued on {spec.queue!r}", at=job.created_at
        )
    )
    try:
        session.flush()
        session.add_all(JobDataset(job_id=job.id, dataset_id=d) for d in sorted(used))
        session.commit()
    except IntegrityError:
        session.rollback()
        if idempotency_key is None:
            raise
        existing = keyed_job(session, key_owner, idempotency_key)
        if existing is None:
            raise
        return same_spec(existing, digest, idempotency_key), False
    return job, True


def check_in_flight(session: Session, settings: Settings, principal: Principal) -> None:
    """Raises ``TooManyJobs`` when the owner has ``max_jobs_in_flight`` queued and running."""
    in_flight = (
        session.scalar(
            select(func.count())
            .select_from(Job)
            .where(
                Job.owner.is_(None) if principal.owner is None else Job.owner == principal.owner,
                Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING)),
            )
        )
        or 0
    )
    if in_flight >= settings.max_jobs_in_flight:
        raise TooManyJobs(
            f"{in_flight} jobs are queued or running for this owner; at most "
            f"{settings.max_jobs_in_flight} (FITQ_MAX_JOBS_IN_FLIGHT) are allowed; "
            "wait for some to finish"
        )


def _new_job(
    spec: JobSpec,
    principal: Principal,
    warnings: list[str],
    idempotency_key: str | None,
    digest: str,
    source: StoredArchitecture | None = None,
    retention: RetentionSpec | None = None,
) -> Job:
    """The queued job row for ``spec``, its seed drawn if the spec has none, a warm
    start's checkpoint (``best``, ``last``) resolved to the one it names now, and the
    server's ``retention`` recorded if the spec gives none."""
    model = spec.model
    if source is not None and source.checkpoint is not None:
        model = model.model_copy(update={"checkpoint": source.checkpoint})
    output = spec.output
    if output.retention is None and retention is not None:
        output = output.model_copy(update={"retention": retention})
    stored = spec.model_copy(
        update={
            "seed": spec.seed if spec.seed is not None else secrets.randbelow(2**31),
            "model": model,
            "output": output,
        }
    )
    return queued_row(
        principal,
        idempotency_key,
        digest,
        parent_job_id=model.from_job,
        model_id=model.uploaded,
        name=spec.name,
        queue=spec.queue,
        spec=stored.model_dump(mode="json"),
        warnings=warnings,
    )


def queued_row(
    principal: Principal, idempotency_key: str | None, digest: str, **columns: Any
) -> Job:
    """A new queued job's row for ``principal``: a training job's or a run's ``columns``
    (name, queue, spec, ...) with what every new job has."""
    now = utcnow()
    return Job(
        id=uuid.uuid4().hex,
        owner=principal.owner,
        status=JobStatus.QUEUED,
        idempotency_key=idempotency_key,
        idempotency_owner=(principal.owner or "") if idempotency_key is not None else None,
        spec_hash=digest,
        created_at=now,
        updated_at=now,
        dispatched_at=now,
        attempts=0,
        cancel_requested=False,
        **columns,
    )


def keyed_job(session: Session, key_owner: str, key: str) -> Job | None:
    """The job an owner ("" while auth is off) submitted with Idempotency-Key ``key``."""
    return session.scalar(
        select(Job).where(Job.idempotency_owner == key_owner, Job.idempotency_key == key)
    )


def validate_spec(
    session: Session, spec: JobSpec, settings: Settings, principal: Principal
) -> list[str]:
    """The warnings a submission of ``spec`` would get; raises ``SpecError`` as it would."""
    data = check_spec(
        spec,
        settings,
        lambda ds_id: dataset_info(session, ds_id, principal),
        ModelSources(session, settings, principal),
    )
    return advise(spec, data)


def dataset_info(session: Session, dataset_id: str, principal: Principal) -> dict[str, Any] | None:
    row = session.get(Dataset, dataset_id) if len(dataset_id) <= 32 else None
    return dict(row.info) if row is not None and principal.sees(row.owner) else None


def same_spec(job: Job, digest: str, key: str) -> Job:
    if job.spec_hash != digest:
        raise Conflict(
            f"Idempotency-Key {key!r} was used for job {job.id} with a different "
            "spec; use a new key for a new job"
        )
    return job


def get_job(session: Session, job_id: str, principal: Principal) -> Job:
    """The job, if ``principal`` may see it; another owner's job is "not found"."""
    job = session.get(Job, job_id) if len(job_id) <= 32 else None
    if job is None or not principal.sees(job.owner):
        raise NotFound("job", job_id)
    return job


def encode_cursor(job: Job) -> str:
    raw = f"{job.created_at.isoformat()}|{job.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, job_id = raw.split("|", 1)
        return dt.datetime.fromisoformat(created), job_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"received cursor={cursor!r}, expected a next_cursor from a previous page"
        ) from exc


def list_jobs(
    session: Session,
    *,
    cursor: str | None,
    limit: int,
    principal: Principal,
    status: str | None = None,
    queue: str | None = None,
    name: str | None = None,
    kinds: Sequence[str] = (),
    parent: str | None = None,
) -> tuple[list[Job], str | None]:
    """Newest first; ``cursor`` continues after the last job of the previous page.

    ``kinds`` keeps the jobs of those kinds (all when empty); ``parent`` the jobs whose
    ``parent_job_id`` is ``parent`` (the runs that used its model).
    """
    query = select(Job)
    if not principal.admin:
        query = query.where(Job.owner == principal.owner)
    if status:
        query = query.where(Job.status == status)
    if queue:
        query = query.where(Job.queue == queue)
    if name:
        query = query.where(Job.name == name)
    if kinds:
        query = query.where(Job.kind.in_(list(kinds)))
    if parent:
        query = query.where(Job.parent_job_id == parent)
    if cursor:
        created, job_id = decode_cursor(cursor)
        # The range on created_at alone lets both databases seek the index
        # (created_at, id) or (status | owner, created_at, id) to the cursor; the OR
        # only sorts out the jobs created in the cursor's own instant.
        query = query.where(
            Job.created_at <= created,
            or_(Job.created_at < created, and_(Job.created_at == created, Job.id < job_id)),
        )
    rows = list(
        session.scalars(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1))
    )
    next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


def cancel_job(session: Session, job_id: str, principal: Principal, settings: Settings) -> Job:
    """Cancels a queued job at once; asks a running one to stop. Idempotent.

    A queued job that an earlier attempt had started (a worker stopped or was lost)
    has its backups and its retention applied (``storage.retention.after_end``)."""
    job = get_job(session, job_id, principal)
    now = utcnow()
    done = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
        .values(
            **move(JobStatus.QUEUED, JobStatus.CANCELLED, StopReason.CANCELLED),
            finished_at=now,
            updated_at=now,
            cancel_requested=True,
        )
    ).rowcount  # type: ignore[attr-defined]
    if done:
        session.add(
            JobEvent(job_id=job_id, kind="cancelled", message="cancelled while queued", at=now)
        )
    else:
        asked = session.execute(
            update(Job)
            .where(
                Job.id == job_id,
                Job.status == JobStatus.RUNNING,
                Job.cancel_requested.is_(False),
            )
            .values(cancel_requested=True, updated_at=now)
        ).rowcount  # type: ignore[attr-defined]
        if asked:
            session.add(
                JobEvent(
                    job_id=job_id,
                    kind="cancel_requested",
                    at=now,
                    message="cancel requested while running",
                )
            )
    session.commit()
    session.refresh(job)
    if done and job.attempts:
        _retire(session, settings, job)
    if job.status in FINISHED and job.status != JobStatus.CANCELLED:
        raise Conflict(
            f"job {job_id} already {job.status}; only queued or running jobs can be cancelled"
        )
    return job


def _retire(session: Session, settings: Settings, job: Job) -> None:
    """Applies retention to a job the cancel ended; a failure is logged, never the
    answer: the cancel stands, and the files stay listed."""
    try:
        after_end(session, settings, job.id)
    except Exception:  # noqa: BLE001 - the job is cancelled whatever its files
        session.rollback()
        log.exception("job %s: could not apply retention", job.id)
    session.refresh(job)


def etag_of(payload: Any) -> str:
    body = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return '"' + hashlib.sha256(body.encode()).hexdigest()[:32] + '"'
