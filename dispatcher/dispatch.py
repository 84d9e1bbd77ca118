"""The dispatcher: the database, not the broker, decides what runs.

One pass (``dispatch_once``) does two things:

- A ``running`` job whose lease expired (its worker was killed, froze, or lost the
  database for longer than the lease) goes back to ``queued`` and is published
  again, to resume after its last recorded epoch; after ``max_attempts`` such
  endings it is ``failed``. A job that was being cancelled ends ``cancelled``.
- A ``queued`` job whose message is in no broker queue (a broker restarted without
  persistence, a publish that failed) is published again once it has waited
  ``FITQ_REQUEUE_SECONDS``. A duplicate message is harmless: a worker claims a
  job only while it is ``queued``.

``fitq dispatcher`` runs passes forever; ``fitq up`` runs one beside the API.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import Celery
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.db import transaction
from core.settings import Settings
from models.states import JobStatus, StopReason, move
from models.tables import Job, JobEvent, utcnow
from queueing.broker import job_devices, publish_job
from queueing.devices import routed_queue
from queueing.names import TASK_RUN_JOB
from storage.retention import after_end

log = logging.getLogger("fitq.dispatcher")
DEFAULT_MAX_ATTEMPTS = 3


@dataclass
class Pass:
    """What one dispatcher pass did."""

    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    republished: list[str] = field(default_factory=list)


def _job_id_of(raw: bytes | str) -> str | None:
    try:
        message = json.loads(raw)
        if isinstance(message, list):  # Redis' unacked entries: [message, exchange, key]
            message = message[0]
        if message.get("headers", {}).get("task") != TASK_RUN_JOB:
            return None
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return str(args[0])
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None


def broker_job_ids(settings: Settings, queues: set[str]) -> set[str] | None:
    """Ids of the jobs with a message waiting or reserved; None if the broker can't tell."""
    raws: list[bytes | str]
    try:
        if settings.broker_is_embedded:
            folder = settings.broker_folder / "queue"
            raws = [p.read_bytes() for p in Path(folder).glob("*.msg")]
        elif settings.resolved_broker_url.startswith(("redis://", "rediss://")):
            import redis

            client = redis.Redis.from_url(settings.resolved_broker_url, socket_timeout=5)
            raws = [raw for q in queues for raw in client.lrange(q, 0, -1)]
            raws += list(client.hvals("unacked"))
        else:
            return None
    except Exception as exc:  # noqa: BLE001 - an unreadable broker is reported, not fatal
        log.warning("could not list the broker's messages: %s", exc)
        return None
    return {job_id for raw in raws if (job_id := _job_id_of(raw))}


def _reap(session: Session, now: dt.datetime) -> tuple[Pass, list[tuple[str, str, int]]]:
    done = Pass()
    publish: list[tuple[str, str, int]] = []
    expired = session.execute(
        select(
            Job.id, Job.queue, Job.attempts, Job.failed_attempts, Job.spec, Job.cancel_requested
        ).where(Job.status == JobStatus.RUNNING, Job.lease_expires_at < now)
    ).all()
    for job_id, queue, attempts, failures, spec, cancel in expired:
        fence = (
            (Job.id == job_id)
            & (Job.status == JobStatus.RUNNING)
            & (Job.attempts == attempts)
            & (Job.lease_expires_at < now)
        )
        max_attempts = int(spec.get("max_attempts", DEFAULT_MAX_ATTEMPTS))
        common = {"updated_at": now, "lease_expires_at": None, "worker": None}
        why = (
            f"attempt {attempts} stopped renewing its lease (its worker died, froze or lost "
            "the database)"
        )
        if cancel:
            values: dict[str, Any] = {
                **common,
                **move(JobStatus.RUNNING, JobStatus.CANCELLED, StopReason.CANCELLED),
                "finished_at": now,
            }
            kind, bucket = "cancelled", done.cancelled
        elif failures + 1 >= max_attempts:
            values = {
                **common,
                **move(JobStatus.RUNNING, JobStatus.FAILED, StopReason.ERROR),
                "finished_at": now,
                "failed_attempts": failures + 1,
                "error_type": "AttemptsExhausted",
                "error_message": f"{why}; that is {failures + 1} of max_attempts={max_attempts}",
                "error_traceback": "",
            }
            kind, bucket = "failed", done.failed
        else:
            values = {
                **common,
                **move(JobStatus.RUNNING, JobStatus.QUEUED),
                "failed_attempts": failures + 1,
                "dispatched_at": now,
            }
            kind, bucket = "lease_expired", done.requeued
        if session.execute(update(Job).where(fence).values(**values)).rowcount:  # type: ignore[attr-defined]
            message = why if kind != "failed" else values["error_message"]
            if kind == "lease_expired":
                message += f"; queued again (attempt {failures + 1} of {max_attempts} lost)"
            session.add(
                JobEvent(job_id=job_id, kind=kind, at=now, attempt=attempts, message=message)
            )
            bucket.append(job_id)
            if kind == "lease_expired":
                publish.append((job_id, queue, job_devices(spec)))
    return done, publish


def dispatch_once(factory: sessionmaker[Session], celery: Celery, settings: Settings) -> Pass:
    """One pass over expired leases and lost messages; publishes after committing."""
    now = utcnow()
    with transaction(factory) as s:
        done, publish = _reap(s, now)
    _retire(factory, settings, done.failed + done.cancelled)
    stale_before = now - dt.timedelta(seconds=settings.requeue_seconds)
    with factory() as s:
        waiting = s.execute(
            select(Job.id, Job.queue, Job.spec).where(
                Job.status == JobStatus.QUEUED,
                or_(
                    Job.dispatched_at < stale_before,
                    Job.dispatched_at.is_(None) & (Job.created_at < stale_before),
                ),
            )
        ).all()
    if waiting:
        # A job that needs several devices may wait in its base queue or, forwarded
        # by a smaller worker, in the queue of workers with that many.
        queues = {q for _, q, _ in waiting} | {
            routed_queue(q, job_devices(spec)) for _, q, spec in waiting
        }
        present = broker_job_ids(settings, queues)
        lost = [
            (j, q, job_devices(spec))
            for j, q, spec in waiting
            if present is None or j not in present
        ]
        with transaction(factory) as s:
            for job_id, queue, devices in lost:
                changed = s.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
                    .values(dispatched_at=now)
                ).rowcount  # type: ignore[attr-defined]
                if changed:
                    s.add(
                        JobEvent(
                            job_id=job_id,
                            kind="republished",
                            at=now,
                            message="no message for this job in the broker; published again",
                        )
                    )
                    publish.append((job_id, queue, devices))
                    done.republished.append(job_id)
    for job_id, queue, devices in publish:
        try:
            publish_job(celery, job_id, queue, devices)
        except Exception as exc:  # noqa: BLE001 - the next pass publishes it again
            log.warning("could not publish job %s: %s", job_id, exc)
    return done


def _retire(factory: sessionmaker[Session], settings: Settings, ended: list[str]) -> None:
    """Applies retention to the jobs this pass ended (their backups, their checkpoints)."""
    for job_id in ended:
        try:
            with factory() as s:
                after_end(s, settings, job_id)
        except Exception as exc:  # noqa: BLE001 - files left are retried by nobody, logged
            log.warning("could not apply retention to job %s: %s", job_id, exc)


def run_forever(
    factory: sessionmaker[Session],
    celery: Celery,
    settings: Settings,
    stop: threading.Event | None = None,
) -> None:
    """Dispatcher passes every ``FITQ_DISPATCHER_INTERVAL`` seconds until ``stop`` is set."""
    stop = stop or threading.Event()
    log.info("dispatcher: a pass every %.1fs", settings.dispatcher_interval)
    while not stop.is_set():
        try:
            done = dispatch_once(factory, celery, settings)
            for kind in ("requeued", "failed", "cancelled", "republished"):
                for job_id in getattr(done, kind):
                    log.warning("dispatcher: job %s %s", job_id, kind)
        except Exception as exc:  # noqa: BLE001 - the database may be down; try again
            log.warning("dispatcher pass failed: %s: %s", type(exc).__name__, exc)
        stop.wait(settings.dispatcher_interval)
