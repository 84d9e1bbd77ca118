"""The background writer on a real database of each kind: an outage is waited out, any
other error fails the job at once."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from core.db import make_engine, make_session_factory
from models.tables import EpochMetric, Job
from tests.conftest import Backend
from tests.dispatcher.test_dispatch import add_job
from worker.jobstore import JobStore
from worker.writer import JobWriter


def claimed(backend: Backend) -> tuple[Any, JobStore]:
    factory = make_session_factory(make_engine(backend.database_url))
    job_id = add_job(factory, "queued", attempts=0)
    store = JobStore(factory, job_id, lease_seconds=30)
    assert store.claim("w1") is not None
    return factory, store


def within(seconds: float, call: Any) -> BaseException | str:
    """What ``call`` raised, run in a thread; a message when it did not end in time."""
    box: dict[str, BaseException] = {}

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["raised"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        return f"still waiting after {seconds}s"
    return box.get("raised", "returned without an error")


def test_a_write_that_is_not_a_database_error_fails_at_once_and_the_outcome_still_lands(
    migrated_backend: Backend, tmp_path: Path
) -> None:
    factory, store = claimed(migrated_backend)
    # A file where a folder should be: what a backup met when a file took its name.
    (tmp_path / "backup").write_text("not a folder")
    writer = JobWriter(store, heartbeat_seconds=0.1, retry_seconds=0.05)
    try:
        writer.save_backup(lambda: (tmp_path / "backup").mkdir(exist_ok=True))
        writer.record_epoch(1, {"loss": 1.0}, None, 0.1, None)
        # Waiting for the writes ends at once with the error, not after retries that
        # never end (as if the database were away).
        raised = within(5, lambda: writer.call(lambda: None))
        assert isinstance(raised, FileExistsError), raised
        # The next report raises it in the training loop, which stops.
        with pytest.raises(FileExistsError):
            writer.progress(1, 3, 10)
        with pytest.raises(FileExistsError):
            writer.record_epoch(2, {"loss": 0.5}, None, 0.1, None)
        with pytest.raises(FileExistsError):
            writer.call(lambda: store.finish("succeeded", "completed"))
        # The job's outcome is still written, with that error.
        error = ("FileExistsError", "the backup folder is a file", "")
        assert writer.call(lambda: store.finish("failed", "error", error=error), final=True)
    finally:
        writer.close()
    with factory() as s:
        job = s.get(Job, store.job_id)
        assert job is not None
        assert (job.status, job.stop_reason, job.error_type) == ("failed", "error", error[0])
        # The epoch queued behind the failed backup was never recorded without it.
        assert s.execute(select(EpochMetric)).first() is None


def test_a_database_error_is_retried_until_the_database_answers(
    migrated_backend: Backend,
) -> None:
    factory, store = claimed(migrated_backend)
    failures = {"left": 3}

    def flaky() -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise OperationalError("SELECT 1", {}, ConnectionRefusedError("refused"))

    writer = JobWriter(store, heartbeat_seconds=0.1, retry_seconds=0.05)
    try:
        writer.save_backup(flaky)
        writer.record_epoch(1, {"loss": 1.0}, None, 0.1, None)
        writer.call(lambda: None)
        assert failures["left"] == 0 and writer.error is None and writer.outage_seconds > 0
    finally:
        writer.close()
    with factory() as s:
        assert s.execute(select(EpochMetric.epoch)).scalars().all() == [1]


def test_a_final_write_waits_for_a_failing_one_ahead_of_it_and_still_runs(
    migrated_backend: Backend,
) -> None:
    factory, store = claimed(migrated_backend)
    release = threading.Event()

    def slow_then_broken() -> None:
        release.wait(5)
        raise ValueError("a value the write cannot take")

    writer = JobWriter(store, heartbeat_seconds=0.1, retry_seconds=0.05)
    try:
        writer.save_backup(slow_then_broken)
        box: dict[str, Any] = {}
        final = threading.Thread(
            target=lambda: box.setdefault(
                "done", writer.call(lambda: store.finish("cancelled", "cancelled"), final=True)
            )
        )
        final.start()
        time.sleep(0.2)
        release.set()
        final.join(10)
        assert box.get("done") is True
        with pytest.raises(ValueError, match="cannot take"):
            writer.record_class_weight({0: 1.0})
    finally:
        writer.close()
    with factory() as s:
        job = s.get(Job, store.job_id)
        assert job is not None and job.status == "cancelled"
