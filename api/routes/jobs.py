"""Jobs: submit, list, read, follow metrics, checkpoints, logs, cancel."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import select

from api import jobs as store
from api.deps import CeleryDep, PrincipalDep, SessionDep, SettingsDep
from api.files import GONE, not_removed, send_artifact
from api.job_view import job_out, job_outs
from api.schemas import (
    ERRORS,
    CheckpointList,
    CheckpointOut,
    EpochOut,
    EventList,
    EventOut,
    JobList,
    JobOut,
    MetricsList,
    Validation,
)
from core.errors import NotFound
from core.settings import Settings
from models.file_names import LOG_FILE
from models.runs import JobKind
from models.spec import JobSpec
from models.states import JobStatus
from models.tables import Checkpoint, EpochMetric, Job, JobEvent
from queueing.broker import publish_job
from storage.artifacts import artifact_store, job_key

MAX_INT = 2**31 - 1
router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=ERRORS)
log = logging.getLogger("fitq.api")
LOG_TAIL_BYTES = 256 * 1024


def _cached(request: Request, payload: object) -> Response:
    """The payload as JSON with an ETag; 304 when the client already has it."""
    body = jsonable_encoder(payload)
    etag = store.etag_of(body)
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers={"ETag": etag})
    return JSONResponse(body, headers={"ETag": etag})


@router.post(
    "",
    status_code=201,
    response_model=JobOut,
    responses={
        200: {
            "model": JobOut,
            "description": "The job an earlier request with this Idempotency-Key created.",
        },
        409: {"description": "The Idempotency-Key was used with another spec."},
        422: {"description": "The spec is invalid; `detail` lists each field path and why."},
    },
    openapi_extra={
        "requestBody": {
            "content": {"application/yaml": {"schema": {"$ref": "#/components/schemas/JobSpec"}}}
        }
    },
)
def submit_job(
    spec: JobSpec,
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    celery: CeleryDep,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JobOut:
    """Validate a job spec completely, store it as `queued` and wake a worker."""
    job, created = store.create_job(session, spec, settings, idempotency_key, principal)
    answer_queued(job, created, celery, response)
    return job_out(session, job)


def answer_queued(job: Job, created: bool, celery: CeleryDep, response: Response) -> None:
    """Wakes a worker for a job just stored; one an Idempotency-Key found answers 200.

    A publish that fails is logged: the job is stored, the dispatcher publishes it later.
    """
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    if not created:
        response.status_code = 200
        return
    try:
        publish_job(celery, job.id, job.queue)
    except Exception:  # noqa: BLE001 - the job is stored; it is published again later
        log.exception("could not publish job %s to queue %s", job.id, job.queue)


@router.post(
    "/validate",
    response_model=Validation,
    openapi_extra={
        "requestBody": {
            "content": {"application/yaml": {"schema": {"$ref": "#/components/schemas/JobSpec"}}}
        }
    },
)
def validate_job(
    spec: JobSpec, session: SessionDep, principal: PrincipalDep, settings: SettingsDep
) -> Validation:
    """Check a spec as a submission would (422 if it is refused) without queueing it."""
    return Validation(warnings=store.validate_spec(session, spec, settings, principal))


@router.get("", response_model=JobList, responses={304: {"description": "Not modified"}})
def list_jobs(
    session: SessionDep,
    principal: PrincipalDep,
    request: Request,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this status.")] = None,
    queue: Annotated[str | None, Query(max_length=64)] = None,
    name: Annotated[str | None, Query(max_length=200)] = None,
    kind: Annotated[JobKind | None, Query(description="Only jobs of this kind.")] = None,
    parent: Annotated[
        str | None,
        Query(max_length=32, description="Only the runs that used this job's model."),
    ] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    """List jobs, newest first, a page at a time; `If-None-Match` gives 304 when unchanged."""
    filters = {"status": status, "queue": queue, "name": name, "parent": parent}
    page = jobs_page(session, principal, cursor, limit, kinds=(kind,) if kind else (), **filters)
    return _cached(request, page)


def jobs_page(
    session: SessionDep, principal: PrincipalDep, cursor: str | None, limit: int, **filters: Any
) -> JobList:
    """A page of jobs (``api.jobs.list_jobs``' filters); 422 for a cursor not of fitq's."""
    try:
        rows, next_cursor = store.list_jobs(
            session, cursor=cursor, limit=limit, principal=principal, **filters
        )
    except ValueError as exc:
        raise HTTPException(
            422, [{"loc": ["query", "cursor"], "msg": str(exc), "type": "value_error"}]
        ) from exc
    return JobList(items=job_outs(session, rows), next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobOut, responses={304: {"description": "Not modified"}})
def get_job(
    job_id: str, session: SessionDep, principal: PrincipalDep, request: Request
) -> Response:
    """One job; send `If-None-Match` with its last ETag to get 304 while nothing changed."""
    return _cached(request, job_out(session, store.get_job(session, job_id, principal)))


@router.get(
    "/{job_id}/metrics",
    response_model=MetricsList,
    responses={304: {"description": "Not modified"}},
)
def get_metrics(
    job_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    request: Request,
    after_epoch: Annotated[int, Query(ge=0, le=MAX_INT, description="Only epochs after this.")] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> Response:
    """Each recorded epoch's metrics, ordered by epoch."""
    store.get_job(session, job_id, principal)
    rows = session.scalars(
        select(EpochMetric)
        .where(EpochMetric.job_id == job_id, EpochMetric.epoch > after_epoch)
        .order_by(EpochMetric.epoch)
        .limit(limit)
    ).all()
    items = [EpochOut.model_validate(r) for r in rows]
    return _cached(
        request,
        MetricsList(items=items, last_epoch=items[-1].epoch if items else (after_epoch or None)),
    )


@router.get("/{job_id}/checkpoints", response_model=CheckpointList)
def list_checkpoints(job_id: str, session: SessionDep, principal: PrincipalDep) -> CheckpointList:
    """The files ModelCheckpoint wrote for this job; the best one is marked. A file
    fitq removed (the job's `output.retention`, or `DELETE /v1/jobs/{id}/artifacts`)
    stays listed with `removed_at` and `removed_reason`."""
    store.get_job(session, job_id, principal)
    rows = session.scalars(
        select(Checkpoint)
        .where(Checkpoint.job_id == job_id)
        .order_by(Checkpoint.epoch, Checkpoint.id)
    ).all()
    return CheckpointList(items=[CheckpointOut.model_validate(r) for r in rows])


@router.get(
    "/{job_id}/checkpoints/{checkpoint_id}/file",
    response_model=None,
    responses={
        **GONE,
        200: {
            "description": "The file's bytes.",
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        },
    },
)
def download_checkpoint(
    job_id: str,
    checkpoint_id: Annotated[int, PathParam(ge=1, le=MAX_INT)],
    session: SessionDep,
    settings: SettingsDep,
    principal: PrincipalDep,
) -> Response:
    """Download one recorded checkpoint file."""
    store.get_job(session, job_id, principal)
    row = session.scalar(
        select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.id == checkpoint_id)
    )
    if row is None:
        raise NotFound("checkpoint", f"{job_id}/{checkpoint_id}")
    not_removed(row)
    return send_artifact(settings, job_id, row.path, Path(row.path).name, "checkpoint file")


@router.post(
    "/{job_id}/cancel",
    status_code=202,
    response_model=JobOut,
    responses={409: {"description": "The job already succeeded or failed."}},
)
def cancel_job(
    job_id: str, session: SessionDep, principal: PrincipalDep, settings: SettingsDep
) -> JobOut:
    """Cancel a job: a queued one never starts; a running one stops between batches."""
    return job_out(session, store.cancel_job(session, job_id, principal, settings))


@router.get(
    "/{job_id}/logs",
    response_model=None,
    responses={
        200: {
            "description": "The log's last bytes; `X-Log-Size` is the log's size in bytes, "
            "the `log_offset` from which `/events` continues it.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
def get_logs(
    job_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    tail_bytes: Annotated[int, Query(ge=1, le=16 * 1024 * 1024)] = LOG_TAIL_BYTES,
) -> PlainTextResponse:
    """The training log (Keras' output at the spec's `fit.verbose`), its last bytes."""
    store.get_job(session, job_id, principal)
    path = settings.job_dir(job_id) / LOG_FILE
    if not path.is_file():
        # A job on another host: its log as last uploaded (FITQ_LIVE_SYNC_SECONDS).
        return _stored_log(settings, job_id, tail_bytes)
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        f.seek(max(0, size - tail_bytes))
        text = f.read(size - f.tell()).decode("utf-8", errors="replace")
    return PlainTextResponse(text, headers={"X-Log-Size": str(size)})


def _stored_log(settings: Settings, job_id: str, tail_bytes: int) -> PlainTextResponse:
    """The log's last bytes from a remote artifact store; empty where it has none."""
    stored = artifact_store(settings)
    key = job_key(job_id, LOG_FILE)
    size = stored.size(key) if stored.remote else None
    if size is None:
        return PlainTextResponse("", headers={"X-Log-Size": "0"})
    raw = b"".join(stored.iter_bytes(key, max(0, size - tail_bytes)))[:tail_bytes]
    text = raw.decode("utf-8", errors="replace")
    return PlainTextResponse(text, headers={"X-Log-Size": str(size)})


@router.get("/{job_id}/history", response_model=EventList)
def get_history(job_id: str, session: SessionDep, principal: PrincipalDep) -> EventList:
    """What happened to the job: created, started (each attempt), cancel, finished."""
    store.get_job(session, job_id, principal)
    rows = session.scalars(
        select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
    ).all()
    return EventList(items=[EventOut.model_validate(r) for r in rows])
