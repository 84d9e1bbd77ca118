"""Runs one job end to end in the current process: claim, train, record the outcome."""

from __future__ import annotations

import logging
from functools import lru_cache

from sqlalchemy.orm import Session, sessionmaker

from models.db import make_engine, make_session_factory
from models.settings import Settings, get_settings
from models.spec import JobSpec
from worker.jobstore import JobStore, LostOwnership

log = logging.getLogger("fitq.worker")


@lru_cache(maxsize=1)
def session_factory(url: str) -> sessionmaker[Session]:
    return make_session_factory(make_engine(url))


def clip(text: str, head: int = 1000, tail: int = 3000) -> str:
    """Long messages keep both ends: TensorFlow puts the cause at the end."""
    if len(text) <= head + tail:
        return text
    return f"{text[:head]}\n[... {len(text) - head - tail} characters ...]\n{text[-tail:]}"


def execute_job(job_id: str, worker: str, settings: Settings | None = None) -> str:
    """Claims ``job_id`` and trains it; returns what happened, for the worker's log.

    A job that is not ``queued`` (a duplicate delivery, a cancelled job) is left alone.
    Any training error ends the job ``failed`` with its type, message and traceback.
    """
    from worker.training.runner import traceback_tail, train

    settings = settings or get_settings()
    store = JobStore(session_factory(settings.resolved_database_url), job_id)
    claim = store.claim(worker)
    if claim is None:
        log.info("job %s is not queued; nothing to do", job_id)
        return "skipped"
    spec = JobSpec.model_validate(claim.spec)
    try:
        outcome = train(spec, settings.job_dir(job_id), store, settings.progress_interval)
    except LostOwnership:
        log.warning("job %s attempt %s lost its claim; stopping", job_id, claim.attempt)
        return "lost"
    except Exception as exc:  # noqa: BLE001 - every training error fails the job, recorded
        log.exception("job %s failed", job_id)
        store.finish(
            "failed", "error", error=(type(exc).__name__, clip(str(exc)), traceback_tail(exc))
        )
        return "failed"
    if outcome.class_weight is not None:
        store.event("class_weight", f"class_weight used: {outcome.class_weight}")
    store.finish(
        outcome.status, outcome.stop_reason, test_metrics=outcome.test_metrics, error=outcome.error
    )
    return outcome.status
