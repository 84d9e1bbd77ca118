"""Runs one job end to end in the current process: claim, train, record the outcome."""

from __future__ import annotations

import logging
import traceback
from functools import lru_cache
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from core.db import make_engine, make_session_factory
from core.settings import Settings, get_settings
from models.spec import DEFAULT_QUEUE, JobSpec
from models.states import JobStatus, StopReason
from queueing.broker import job_devices, make_celery, publish_job
from queueing.devices import routed_queue
from storage.uploads import datasets_dir
from worker.cancel_watch import CancelWatch
from worker.jobstore import Claim, JobStore, LostOwnership
from worker.writer import JobWriter

log = logging.getLogger("fitq.worker")
TRACEBACK_TAIL_FRAMES = 8


@lru_cache(maxsize=1)
def session_factory(url: str) -> sessionmaker[Session]:
    return make_session_factory(make_engine(url))


def clip(text: str, head: int = 1000, tail: int = 3000) -> str:
    """Long messages keep both ends: TensorFlow puts the cause at the end."""
    if len(text) <= head + tail:
        return text
    return f"{text[:head]}\n[... {len(text) - head - tail} characters ...]\n{text[-tail:]}"


def traceback_tail(exc: BaseException) -> str:
    """The last frames of ``exc``'s traceback and its first message line."""
    frames = traceback.format_tb(exc.__traceback__)[-TRACEBACK_TAIL_FRAMES:]
    first_line = (str(exc).splitlines() or [""])[0]
    return (
        "Traceback (most recent call last):\n"
        + "".join(frames)
        + (f"{type(exc).__name__}: {first_line}")
    )


def execute_job(job_id: str, worker: str, settings: Settings | None = None) -> str:
    """Claims ``job_id`` and trains it; returns what happened, for the worker's log.

    A job that is not ``queued`` (a duplicate delivery, a cancelled job) is left alone.
    A training error, or a report that could not be written for any reason but the
    database being away, ends the job ``failed`` with its type, message and traceback.
    A cancel asked before ``fit()`` has run a batch ends the job ``cancelled`` and
    this process with it (``worker.cancel_watch``). A lost claim stops the attempt
    without writing. A stopping worker (SIGTERM) puts the job back in the queue, to
    resume after its last recorded epoch.
    """
    # TensorFlow loads here, in the pool process, never in the Celery parent.
    from worker.training.reporting import Preempted

    settings = settings or get_settings()
    store = JobStore(
        session_factory(settings.resolved_database_url), job_id, settings.lease_seconds
    )
    waiting = store.waiting_spec()
    if waiting is not None and _forward_if_too_small(store, waiting, worker, settings):
        return "forwarded"
    claim = store.claim(worker)
    if claim is None:
        log.info("job %s is not queued; nothing to do", job_id)
        return "skipped"
    spec = JobSpec.model_validate(claim.spec)
    writer = JobWriter(store, settings.lease_seconds / 3, settings.db_retry_seconds)
    try:
        return _train(spec, claim, store, writer, settings).value
    except LostOwnership:
        log.warning("job %s attempt %s lost its claim; stopping", job_id, claim.attempt)
        return "lost"
    except Preempted:
        log.warning("job %s: worker stopping; putting it back in the queue", job_id)
        if writer.call(lambda: store.requeue("the worker stopped (SIGTERM); resumes elsewhere")):
            publish_job(make_celery(settings), job_id, spec.queue, spec.resources.gpus)
        return "requeued"
    except Exception as exc:  # noqa: BLE001 - every training error fails the job, recorded
        log.exception("job %s failed", job_id)
        return _failed(store, writer, exc, settings)
    finally:
        writer.close()


def _train(
    spec: JobSpec, claim: Claim, store: JobStore, writer: JobWriter, settings: Settings
) -> JobStatus:
    """Trains the claimed job, watching for a cancel until fit() runs, and records how
    it ended."""
    from worker.training.runner import LOG_FILE, Resume, train

    job_dir = settings.job_dir(store.job_id)
    with CancelWatch(store, settings.progress_interval, job_dir / LOG_FILE) as watch:
        outcome = train(
            spec,
            job_dir,
            writer,
            settings.progress_interval,
            Resume(claim.last_epoch, claim.callback_states),
            datasets_dir(settings),
            settings.worker_memory_budget,
            fitting=watch.stop,
        )
    writer.call(
        lambda: store.finish(
            outcome.status,
            outcome.stop_reason,
            test_metrics=outcome.test_metrics,
            error=_shown(outcome.error, settings),
        )
    )
    return outcome.status


def _shown(error: tuple[str, str, str] | None, settings: Settings) -> tuple[str, str, str] | None:
    """An error as the job shows it: the server's folders by name, not by path."""
    if error is None:
        return None
    kind, message, trace = error
    return kind, settings.hide_paths(message), settings.hide_paths(trace)


def _failed(store: JobStore, writer: JobWriter, exc: Exception, settings: Settings) -> str:
    """Records the job ``failed`` with ``exc``, after every report queued before it."""
    error = _shown((type(exc).__name__, clip(str(exc)), traceback_tail(exc)), settings)
    try:
        writer.call(
            lambda: store.finish(JobStatus.FAILED, StopReason.ERROR, error=error), final=True
        )
    except LostOwnership:
        return "lost"
    return JobStatus.FAILED.value


def _forward_if_too_small(
    store: JobStore, spec: dict[str, Any], worker: str, settings: Settings
) -> bool:
    """Sends a job that needs more devices than this worker has to the queue of workers
    with enough, where it waits for one; returns whether it did."""
    from worker.devices import device_names

    needed, have = job_devices(spec), len(device_names())
    if needed <= have:
        return False
    queue = str(spec.get("queue") or DEFAULT_QUEUE)
    target = routed_queue(queue, needed)
    message = (
        f"{worker} has {have} device(s) and the job asks for resources.gpus={needed}: "
        f"waiting on queue {target!r} for a worker with at least {needed}"
    )
    if store.forwarded(message):
        publish_job(make_celery(settings), store.job_id, queue, needed)
        log.info("job %s: %s", store.job_id, message)
    return True
