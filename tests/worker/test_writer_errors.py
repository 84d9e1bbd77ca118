"""The background writer on a real database of each kind, and on a real S3-compatible
server: an outage of either is waited out, any other error fails the job at once."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from core.db import make_engine, make_session_factory
from migrations.migrate import upgrade
from models.tables import EpochMetric, Job
from storage.artifacts import JobFiles, S3ArtifactStore
from tests.conftest import Backend, S3Server, make_backend
from tests.dispatcher.test_dispatch import add_job
from tests.e2e.test_faults import OutageProxy
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


def test_an_epoch_row_supersedes_progress_inside_that_epoch_still_unwritten(
    migrated_backend: Backend,
) -> None:
    factory, store = claimed(migrated_backend)
    writer = JobWriter(store, heartbeat_seconds=30, retry_seconds=0.05)
    release = threading.Event()
    try:
        writer.progress(3, 1, 10)
        writer.flush()
        # The writer is busy (a slow backup) while the epoch's last progress and then
        # the epoch's row arrive.
        writer.save_backup(lambda: release.wait(5))
        writer.progress(3, 5, 10)
        writer.record_epoch(3, {"loss": 0.5}, None, 0.1, None)
        release.set()
        writer.flush()
        assert writer.call(lambda: store.finish("succeeded", "completed"))
        writer.flush()
    finally:
        writer.close()
    assert not writer.lost  # no progress write came after the job ended
    with factory() as s:
        job = s.get(Job, store.job_id)
        assert job is not None
        # The epoch shows complete, not at the step of the progress it superseded.
        assert (job.progress_epoch, job.progress_step, job.progress_steps) == (3, 10, 10)


def behind_proxy(
    s3_server: S3Server, tmp_path: Path, job_id: str
) -> tuple[OutageProxy, JobFiles, str]:
    """The job's files in a fresh bucket of the real server, reached through a proxy
    that a test can cut off."""
    import boto3
    from botocore.config import Config

    proxy = OutageProxy(int(s3_server.endpoint.rsplit(":", 1)[1]))
    env = s3_server.env()
    client = boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_REGION"],
    ).client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{proxy.port}",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5),
    )
    bucket = s3_server.new_bucket()
    return (
        proxy,
        JobFiles(S3ArtifactStore(tmp_path / "cache", bucket, "fitq", client), job_id),
        bucket,
    )


def test_an_artifact_store_that_does_not_answer_is_waited_out(
    s3_server: S3Server, tmp_path: Path
) -> None:
    """A real S3-compatible server behind a proxy that refuses every connection for a
    while: the checkpoint's upload, and its row queued behind it, are retried until the
    store answers again; nothing fails, nothing is lost."""
    backend = make_backend("sqlite", tmp_path, "unused")
    upgrade(backend.database_url)
    factory, store = claimed(backend)
    proxy, files, bucket = behind_proxy(s3_server, tmp_path, store.job_id)
    checkpoint = files.folder / "checkpoints" / "epoch01.keras"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"weights")
    writer = JobWriter(store, heartbeat_seconds=0.2, retry_seconds=0.1, files=files)
    try:
        proxy.outage()
        writer.record_checkpoint(1, "checkpoints/epoch01.keras", "loss", 1.0, True, 7)
        writer.record_epoch(1, {"loss": 1.0}, None, 0.1, None)
        time.sleep(1.5)  # several puts refused meanwhile
        assert writer.error is None
        with factory() as s:
            assert s.execute(select(EpochMetric)).first() is None  # its checkpoint first
        proxy.restore()
        writer.flush()
        assert writer.error is None and writer.outage_seconds > 1.0
    finally:
        writer.close()
    stored = s3_server.client().get_object(
        Bucket=bucket, Key=f"fitq/jobs/{store.job_id}/checkpoints/epoch01.keras"
    )
    assert stored["Body"].read() == b"weights"
    with factory() as s:
        assert s.execute(select(EpochMetric.epoch)).scalars().all() == [1]


def test_a_running_job_s_live_files_are_skipped_while_the_store_does_not_answer(
    s3_server: S3Server, tmp_path: Path
) -> None:
    """The log and TensorBoard uploads of a running job are optional: one that fails is
    skipped, not retried ahead of the epoch rows, and fails nothing; a later one sends
    the files."""
    backend = make_backend("sqlite", tmp_path, "unused")
    upgrade(backend.database_url)
    factory, store = claimed(backend)
    proxy, files, bucket = behind_proxy(s3_server, tmp_path, store.job_id)
    files.folder.mkdir(parents=True)
    (files.folder / "train.log").write_text("Epoch 1/3\n")
    writer = JobWriter(
        store, heartbeat_seconds=0.2, retry_seconds=0.1, files=files, live_seconds=0.01
    )
    try:
        proxy.outage()
        time.sleep(0.02)
        writer.record_epoch(1, {"loss": 1.0}, None, 0.1, None)  # a live upload falls due
        writer.flush()
        assert writer.error is None and writer.outage_seconds == 0
        with factory() as s:
            assert s.execute(select(EpochMetric.epoch)).scalars().all() == [1]
        proxy.restore()
        time.sleep(0.02)
        writer.record_epoch(2, {"loss": 0.9}, None, 0.1, None)
        writer.flush()
        assert writer.error is None
    finally:
        writer.close()
    stored = s3_server.client().get_object(Bucket=bucket, Key=f"fitq/jobs/{store.job_id}/train.log")
    assert stored["Body"].read() == b"Epoch 1/3\n"
