"""A job's changes as server-sent events: the job, new epochs, checkpoints and log text."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.responses import StreamingResponse
from sqlalchemy import inspect, select
from sqlalchemy.orm import Session, sessionmaker

from api import jobs as store
from api.deps import PrincipalDep, SessionDep, SettingsDep
from api.job_view import job_out
from api.schemas import ERRORS, CheckpointOut, EpochOut
from core.settings import Settings
from models.tables import FINISHED, Checkpoint, EpochMetric, Job

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=ERRORS)
POLL_SECONDS = 0.25
KEEPALIVE_SECONDS = 15.0
LOG_CHUNK_BYTES = 64 * 1024
EPOCHS_PER_POLL = 1000
MAX_INT = 2**31 - 1
_JOB_COLUMNS = [attr.key for attr in inspect(Job).column_attrs]


@dataclass
class _Cursor:
    """What the client already has."""

    epoch: int
    checkpoint: int = 0
    log_offset: int = -1
    job_etag: str = ""
    job_row: tuple[Any, ...] | None = None  # the job row's values when last sent
    best: dict[int, bool] = field(default_factory=dict)  # is_best of checkpoints sent
    items: list[tuple[str, str | None, Any]] = field(default_factory=list)


def _frame(event: str, data: Any, event_id: str | None = None) -> str:
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(jsonable_encoder(data), separators=(",", ":")))
    return "\n".join(lines) + "\n\n"


def _poll(factory: sessionmaker[Session], settings: Settings, job_id: str, cur: _Cursor) -> bool:
    """Adds what changed since ``cur`` to ``cur.items``; returns whether the job finished."""
    with factory() as session:
        job = session.get(Job, job_id)
        if job is None:
            return True
        rows = session.scalars(
            select(EpochMetric)
            .where(EpochMetric.job_id == job_id, EpochMetric.epoch > cur.epoch)
            .order_by(EpochMetric.epoch)
            .limit(EPOCHS_PER_POLL)
        ).all()
        for row in rows:
            cur.items.append(("epoch", str(row.epoch), EpochOut.of(row)))
            cur.epoch = row.epoch
        for ck in session.scalars(
            select(Checkpoint)
            .where(Checkpoint.job_id == job_id, Checkpoint.id > cur.checkpoint)
            .order_by(Checkpoint.id)
        ):
            cur.items.append(("checkpoint", None, CheckpointOut.of(ck)))
            cur.checkpoint = ck.id
            cur.best[ck.id] = ck.is_best
        if cur.log_offset >= 0:
            text = _log_since(settings, job_id, cur)
            if text:
                cur.items.append(("log", None, {"text": text, "log_offset": cur.log_offset}))
        # Every write to the job (the worker's included, a checkpoint's too) changes its
        # row, updated_at at least; an unchanged row needs no job_out(), no encoding, no
        # hash and no look at the checkpoints' is_best.
        values = tuple(getattr(job, key) for key in _JOB_COLUMNS)
        if values != cur.job_row:
            cur.job_row = values
            _best_changes(session, job_id, cur)
            out = job_out(session, job)
            etag = store.etag_of(jsonable_encoder(out))
            if etag != cur.job_etag:
                cur.job_etag = etag
                cur.items.append(("job", None, out))
        return job.status in FINISHED and len(rows) < EPOCHS_PER_POLL


def _best_changes(session: Session, job_id: str, cur: _Cursor) -> None:
    """Sends again the checkpoints sent earlier whose is_best has changed since."""
    changed = [
        ck_id
        for ck_id, is_best in session.execute(
            select(Checkpoint.id, Checkpoint.is_best).where(
                Checkpoint.job_id == job_id, Checkpoint.id <= cur.checkpoint
            )
        )
        if ck_id in cur.best and cur.best[ck_id] != is_best
    ]
    for ck in session.scalars(select(Checkpoint).where(Checkpoint.id.in_(changed))):
        cur.items.append(("checkpoint", None, CheckpointOut.of(ck)))
        cur.best[ck.id] = ck.is_best


def _log_since(settings: Settings, job_id: str, cur: _Cursor) -> str:
    path = settings.job_dir(job_id) / "train.log"
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            if size < cur.log_offset:
                cur.log_offset = 0
            f.seek(cur.log_offset)
            data = f.read(LOG_CHUNK_BYTES)
    except FileNotFoundError:
        return ""
    cur.log_offset += len(data)
    return data.decode("utf-8", errors="replace")


@router.get(
    "/{job_id}/events",
    response_model=None,
    responses={
        200: {
            "description": "A `text/event-stream`. Events: `job` (the job, whenever it "
            "changes, first at once), `epoch` (each new epoch's metrics; its `id` is the "
            "epoch, so a reconnecting client resumes with `Last-Event-ID`), `checkpoint` "
            "(a new checkpoint, or one sent before whose `is_best` changed), `log` (new "
            "training log text, with `log_offset`), and `end` once a finished job's "
            "events are all sent.",
            "content": {
                "text/event-stream": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "event": {
                                "type": "string",
                                "enum": ["job", "epoch", "checkpoint", "log", "end"],
                            },
                            "data": {"type": "string", "description": "The payload, as JSON."},
                            "id": {"type": "string"},
                            "retry": {"type": "integer"},
                        },
                    }
                }
            },
        }
    },
)
async def job_events(
    job_id: str,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    after_epoch: Annotated[
        int, Query(ge=0, le=MAX_INT, description="Send epochs after this one.")
    ] = 0,
    after_checkpoint: Annotated[
        int, Query(ge=0, le=MAX_INT, description="Send checkpoints with a larger id.")
    ] = 0,
    log_offset: Annotated[
        int,
        Query(ge=-1, le=2**62, description="Send the log from this byte; -1 sends no log."),
    ] = -1,
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
) -> StreamingResponse:
    """Follow a job live: what changed is pushed within a fraction of a second.

    The stream of an unfinished job closes after `FITQ_EVENTS_MAX_SECONDS`; reconnect
    with `Last-Event-ID` (or the `after_*` parameters) to continue.
    """
    store.get_job(session, job_id, principal)
    epoch = after_epoch
    if last_event_id and last_event_id.isdigit():
        epoch = max(epoch, int(last_event_id))
    cur = _Cursor(epoch=epoch, checkpoint=after_checkpoint, log_offset=log_offset)
    factory: sessionmaker[Session] = request.app.state.session_factory

    async def stream() -> AsyncIterator[str]:
        quiet_since = started = time.monotonic()
        yield "retry: 1000\n\n"
        while not await request.is_disconnected():
            if time.monotonic() - started > settings.events_max_seconds:
                return  # the client reconnects where it left off
            finished = await run_in_threadpool(_poll, factory, settings, job_id, cur)
            items, cur.items = cur.items, []
            for event, event_id, data in items:
                yield _frame(event, data, event_id)
            if finished:
                yield _frame("end", {"job_id": job_id, "log_offset": cur.log_offset})
                return
            if items:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
                quiet_since = time.monotonic()
                yield ": keep-alive\n\n"
            await asyncio.sleep(POLL_SECONDS)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
