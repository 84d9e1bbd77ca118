"""A job's changes as server-sent events: the job, new epochs, checkpoints and log text.

A stream holds no database connection while it waits: the change feed
(``api/changefeed.py``) reads all followed jobs' markers in one query a tick, reads a
job that changed once for all its streams, and each stream sends what it lacks.
FastAPI's ``EventSourceResponse`` writes the events, and a ``: ping`` comment after 15
quiet seconds; a dependency authorises the caller and counts its stream, and holds no
session while the stream is open.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel
from sqlalchemy import bindparam, func, inspect, select
from sqlalchemy.orm import Session, sessionmaker

from api import jobs as store
from api.changefeed import TICK_SECONDS, ChangeFeed, Follower
from api.deps import PrincipalDep, SettingsDep
from api.job_view import job_out
from api.schemas import ERRORS, CheckpointOut, EpochOut
from api.tokens import Principal
from core.settings import Settings
from models.file_names import LOG_FILE
from models.states import FINISHED
from models.tables import Checkpoint, EpochMetric, Job
from storage.artifacts import artifact_store, job_key


def _json_error(description: str) -> dict[str, Any]:
    """An error response, in JSON: the route's own media type is the event stream's."""
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}},
    }


log = logging.getLogger("fitq.api")
router = APIRouter(
    prefix="/v1/jobs",
    tags=["jobs"],
    responses={code: _json_error(error["description"]) for code, error in ERRORS.items()},
)
POLL_SECONDS = TICK_SECONDS
RETRY_MS = 1000  # how long a client waits before it reconnects
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
    # What was read, each as (event, payload, the event encoded once for every stream).
    items: list[tuple[str, Any, ServerSentEvent]] = field(default_factory=list)

    def add(self, event: str, data: Any, event_id: str | None = None) -> None:
        self.items.append((event, data, _event(event, data, event_id)))


def _event(event: str, data: Any, event_id: str | None = None) -> ServerSentEvent:
    """The event, its payload encoded as compact JSON: a response model by pydantic's own
    serializer (what a job, an epoch and a checkpoint are), anything else through
    ``jsonable_encoder``."""
    if isinstance(data, BaseModel):
        payload = data.model_dump_json()
    else:
        payload = json.dumps(jsonable_encoder(data), separators=(",", ":"))
    return ServerSentEvent(event=event, id=event_id, raw_data=payload)


# Built once: a poll runs them with the job's id and the cursor's place as parameters.
_NEW_EPOCHS = (
    select(EpochMetric)
    .where(EpochMetric.job_id == bindparam("job_id"), EpochMetric.epoch > bindparam("after"))
    .order_by(EpochMetric.epoch)
    .limit(EPOCHS_PER_POLL)
)
_NEW_CHECKPOINTS = (
    select(Checkpoint)
    .where(Checkpoint.job_id == bindparam("job_id"), Checkpoint.id > bindparam("after"))
    .order_by(Checkpoint.id)
)
_CHECKPOINTS_SENT = select(Checkpoint.id, Checkpoint.is_best).where(
    Checkpoint.job_id == bindparam("job_id"), Checkpoint.id <= bindparam("upto")
)


def _poll(factory: sessionmaker[Session], settings: Settings, job_id: str, cur: _Cursor) -> bool:
    """Adds what changed since ``cur`` to ``cur.items``; returns whether the job finished."""
    with factory() as session:
        job = session.get(Job, job_id)
        if job is None:
            return True
        rows = session.scalars(_NEW_EPOCHS, {"job_id": job_id, "after": cur.epoch}).all()
        for row in rows:
            cur.add("epoch", EpochOut.model_validate(row), str(row.epoch))
            cur.epoch = row.epoch
        for ck in session.scalars(_NEW_CHECKPOINTS, {"job_id": job_id, "after": cur.checkpoint}):
            cur.add("checkpoint", CheckpointOut.model_validate(ck))
            cur.checkpoint = ck.id
            cur.best[ck.id] = ck.is_best
        if cur.log_offset >= 0:
            text = _log_since(settings, job_id, cur, fresh=job.status in FINISHED)
            if text:
                cur.add("log", {"text": text, "log_offset": cur.log_offset})
        # Every write to the job (the worker's included, a checkpoint's too) changes its
        # row, updated_at at least; an unchanged row needs no job_out(), no encoding, no
        # hash and no look at the checkpoints' is_best.
        values = tuple(getattr(job, key) for key in _JOB_COLUMNS)
        if values != cur.job_row:
            cur.job_row = values
            _best_changes(session, job_id, cur)
            out = job_out(session, job)
            encoded = _event("job", out)
            etag = hashlib.sha256((encoded.raw_data or "").encode()).hexdigest()
            if etag != cur.job_etag:
                cur.job_etag = etag
                cur.items.append(("job", out, encoded))
        return job.status in FINISHED and len(rows) < EPOCHS_PER_POLL


def _best_changes(session: Session, job_id: str, cur: _Cursor) -> None:
    """Sends again the checkpoints sent earlier whose is_best has changed since."""
    if not cur.best:
        return  # none sent: none to send again
    changed = [
        ck_id
        for ck_id, is_best in session.execute(
            _CHECKPOINTS_SENT, {"job_id": job_id, "upto": cur.checkpoint}
        )
        if ck_id in cur.best and cur.best[ck_id] != is_best
    ]
    if not changed:
        return
    for ck in session.scalars(select(Checkpoint).where(Checkpoint.id.in_(changed))):
        cur.add("checkpoint", CheckpointOut.model_validate(ck))
        cur.best[ck.id] = ck.is_best


def _log_since(settings: Settings, job_id: str, cur: _Cursor, fresh: bool = False) -> str:
    path = settings.job_dir(job_id) / LOG_FILE
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            if size < cur.log_offset:
                cur.log_offset = 0
            f.seek(cur.log_offset)
            data = f.read(LOG_CHUNK_BYTES)
    except FileNotFoundError:
        data = _stored_log_since(settings, job_id, cur, fresh)
    cur.log_offset += len(data)
    return data.decode("utf-8", errors="replace")


def _stored_log_since(settings: Settings, job_id: str, cur: _Cursor, fresh: bool) -> bytes:
    """A job that trains on another host: its log as last uploaded to the store.

    ``fresh``: ask the store for the size rather than take the one read for another
    stream in the last interval (once the job has ended, for its last lines). A store
    that does not answer gives nothing this time; the stream asks again.
    """
    try:
        size = _stored_log_size(settings, job_id, fresh)
        if 0 <= size < cur.log_offset and not fresh:
            # Older than what the client has (another replica, ``/logs``), or a new
            # attempt's shorter log: only the store itself can tell.
            size = _stored_log_size(settings, job_id, fresh=True)
        if size < 0:
            return b""
        if size < cur.log_offset:  # a new attempt's log, on another host
            cur.log_offset = 0
        length = min(LOG_CHUNK_BYTES, size - cur.log_offset)
        if length <= 0:
            return b""
        key = job_key(job_id, LOG_FILE)
        return artifact_store(settings).read_range(key, cur.log_offset, length)
    except Exception:  # noqa: BLE001 - the store is away or the object changed; later
        log.warning("job %s: could not read its log from the store", job_id, exc_info=True)
        return b""


# The sizes of logs in a remote store, read at most once per FITQ_LIVE_SYNC_SECONDS
# (how often a worker uploads them) for all the streams following a job.
_STORED_SIZES: dict[str, tuple[float, int]] = {}
_STORED_SIZES_MAX = 4096


def _stored_log_size(settings: Settings, job_id: str, fresh: bool = False) -> int:
    """The size of the job's log in a remote store; -1 without one or without a log."""
    now = time.monotonic()
    known = _STORED_SIZES.get(job_id)
    if not fresh and known is not None and now - known[0] < max(1.0, settings.live_sync_seconds):
        return known[1]
    stored = artifact_store(settings)
    size = stored.size(job_key(job_id, LOG_FILE)) if stored.remote else None
    if len(_STORED_SIZES) >= _STORED_SIZES_MAX:
        _STORED_SIZES.clear()
    _STORED_SIZES[job_id] = (now, -1 if size is None else size)
    return -1 if size is None else size


def _read_all(
    factory: sessionmaker[Session], settings: Settings, job_id: str, cur: _Cursor
) -> bool:
    """Polls until no full page of epochs is left; returns whether the job finished."""
    while True:
        before = len(cur.items)
        finished = _poll(factory, settings, job_id, cur)
        if sum(1 for kind, _, _ in cur.items[before:] if kind == "epoch") < EPOCHS_PER_POLL:
            return finished


@dataclass
class _Change:
    """What one read of a job found, each item with its event encoded once for all."""

    items: list[tuple[str, Any, ServerSentEvent]]  # (event, payload, encoded)
    job_etag: str
    finished: bool


class _JobReader:
    """The change feed's reader of one job: a cursor of its own, shared by its streams."""

    def __init__(self, factory: sessionmaker[Session], settings: Settings, job_id: str) -> None:
        self.factory = factory
        self.settings = settings
        self.job_id = job_id
        self.cur = _Cursor(epoch=0)

    def baseline(self) -> None:
        with self.factory() as session:
            last = session.scalar(
                select(func.max(EpochMetric.epoch)).where(EpochMetric.job_id == self.job_id)
            )
            self.cur.epoch = last or 0
            for ck_id, is_best in session.execute(
                select(Checkpoint.id, Checkpoint.is_best).where(Checkpoint.job_id == self.job_id)
            ):
                self.cur.best[ck_id] = is_best
                self.cur.checkpoint = max(self.cur.checkpoint, ck_id)

    def read(self) -> _Change:
        finished = _read_all(self.factory, self.settings, self.job_id, self.cur)
        items, self.cur.items = self.cur.items, []
        return _Change(items, self.cur.job_etag, finished)


def _take(cur: _Cursor, change: _Change) -> list[ServerSentEvent]:
    """The events of ``change`` that the stream at ``cur`` lacks; moves ``cur`` past them."""
    events: list[ServerSentEvent] = []
    for event, data, encoded in change.items:
        if event == "epoch":
            if data.epoch <= cur.epoch:
                continue
            cur.epoch = data.epoch
        elif event == "checkpoint":
            if data.id > cur.checkpoint:
                cur.checkpoint = data.id
            elif cur.best.get(data.id, data.is_best) == data.is_best:
                continue  # sent already as it is, or never sent (before after_checkpoint)
            cur.best[data.id] = data.is_best
        elif event == "job":
            if change.job_etag == cur.job_etag:
                continue
            cur.job_etag = change.job_etag
        events.append(encoded)
    return events


def _log_size(settings: Settings, job_id: str) -> int:
    """The size of the job's log here; -1 where this host has none (a remote store's
    is read with the log, in a thread)."""
    try:
        return os.stat(settings.job_dir(job_id) / LOG_FILE).st_size
    except FileNotFoundError:
        return -1


class EventStreams:
    """The event streams open in this API process, counted per owner to cap them.

    Args:
        max_per_owner: Streams one owner may hold open (``FITQ_EVENTS_MAX_STREAMS_PER_OWNER``).
    """

    def __init__(self, max_per_owner: int) -> None:
        self.max_per_owner = max_per_owner
        self.open_by_owner: Counter[str | None] = Counter()
        self.log_reads = anyio.CapacityLimiter(2)  # log files are read off the event loop

    def open(self, owner: str | None) -> None:
        """Counts a new stream of ``owner``; 429 when the owner has the most allowed."""
        held = self.open_by_owner[owner]
        if held >= self.max_per_owner:
            who = f"owner {owner!r}" if owner is not None else "the API (auth is off: one owner)"
            raise HTTPException(
                429,
                f"{who} already holds {held} open event streams, the most "
                f"FITQ_EVENTS_MAX_STREAMS_PER_OWNER={self.max_per_owner} allows; close one, "
                "or poll GET /v1/jobs/{id} with If-None-Match",
                headers={"Retry-After": "5"},
            )
        self.open_by_owner[owner] += 1

    def close(self, owner: str | None) -> None:
        self.open_by_owner[owner] -= 1
        if self.open_by_owner[owner] <= 0:
            del self.open_by_owner[owner]


@dataclass
class _Stream:
    """One open stream: its place in the change feed, once it follows its job."""

    following: list[Follower[_Change]] = field(default_factory=list)


def _authorize(request: Request, job_id: str, principal: Principal) -> None:
    """Raises unless the caller may see the job; the session is closed before streaming."""
    with request.app.state.session_factory() as session:
        store.get_job(session, job_id, principal)


async def _open_stream(
    request: Request, job_id: str, principal: PrincipalDep
) -> AsyncIterator[_Stream]:
    """Authorises the caller and counts its stream (401, 404 or 429 before any event);
    once the stream ends, however it ends, frees its place in the count and the feed."""
    await run_in_threadpool(_authorize, request, job_id, principal)
    streams: EventStreams = request.app.state.event_streams
    feed: ChangeFeed[_Change] = request.app.state.change_feed
    streams.open(principal.owner)
    stream = _Stream()
    try:
        yield stream
    finally:
        streams.close(principal.owner)
        for follower in stream.following:
            feed.leave(follower)


@router.get(
    "/{job_id}/events",
    response_class=EventSourceResponse,
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
                    "itemSchema": {
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
        },
        429: _json_error(
            "The caller's owner holds as many open streams as "
            "`FITQ_EVENTS_MAX_STREAMS_PER_OWNER` allows; `Retry-After` says when to try again."
        ),
    },
)
async def job_events(
    job_id: str,
    request: Request,
    settings: SettingsDep,
    stream: Annotated[_Stream, Depends(_open_stream)],
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
) -> AsyncIterator[ServerSentEvent]:
    """Follow a job live: what changed is pushed within a fraction of a second.

    The stream of an unfinished job closes after `FITQ_EVENTS_MAX_SECONDS`; reconnect
    with `Last-Event-ID` (or the `after_*` parameters) to continue. An owner may hold
    `FITQ_EVENTS_MAX_STREAMS_PER_OWNER` streams open at once (429 beyond).
    """
    started = time.monotonic()
    streams: EventStreams = request.app.state.event_streams
    feed: ChangeFeed[_Change] = request.app.state.change_feed
    factory: sessionmaker[Session] = request.app.state.session_factory
    epoch = after_epoch
    if last_event_id and last_event_id.isdigit():
        epoch = max(epoch, int(last_event_id))
    cur = _Cursor(epoch=epoch, checkpoint=after_checkpoint, log_offset=log_offset)
    yield ServerSentEvent(retry=RETRY_MS)
    follower, finished = await feed.follow(
        job_id,
        partial(_JobReader, factory, settings, job_id),
        partial(_read_all, factory, settings, job_id, cur),
    )
    stream.following.append(follower)
    try:
        events = [encoded for _, _, encoded in cur.items]
        cur.items = []
        while True:
            for event in events:
                yield event
            if finished:
                yield _event("end", {"job_id": job_id, "log_offset": cur.log_offset})
                return
            if await request.is_disconnected():
                return
            if time.monotonic() - started > settings.events_max_seconds:
                return  # the client reconnects where it left off
            events = []
            for change in await follower.changes(POLL_SECONDS):
                events += _take(cur, change)
                finished = finished or change.finished
            events += await _new_log(settings, job_id, cur, streams, finished)
    finally:
        feed.leave(follower)


async def _new_log(
    settings: Settings, job_id: str, cur: _Cursor, streams: EventStreams, finished: bool
) -> list[ServerSentEvent]:
    """The job's log past ``cur.log_offset`` as an event, if it grew (and is followed)."""
    if cur.log_offset < 0:
        return []
    size = _log_size(settings, job_id)
    if size == cur.log_offset or (size == -1 and not settings.artifacts_url):
        return []
    text = await anyio.to_thread.run_sync(
        _log_since, settings, job_id, cur, finished, limiter=streams.log_reads
    )
    return [_event("log", {"text": text, "log_offset": cur.log_offset})] if text else []
