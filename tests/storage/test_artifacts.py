"""The artifact store on both backends: the filesystem, and a real S3-compatible server
(moto's server mode, a separate process) through boto3 as fitq configures it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.settings import Settings
from storage.artifacts import (
    ArtifactError,
    ArtifactStore,
    JobFiles,
    artifact_store,
    clean_key,
    job_key,
    parse_url,
    store_unavailable,
)
from tests.conftest import S3Server


@pytest.fixture(params=["filesystem", "s3"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ArtifactStore]:
    url = None
    if request.param == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        url = f"s3://{server.new_bucket()}/some/prefix"
    yield artifact_store(Settings(data_dir=tmp_path / "data", artifacts_url=url))


def test_put_fetch_list_read_and_delete(store: ArtifactStore, tmp_path: Path) -> None:
    source = tmp_path / "written"
    source.mkdir()
    (source / "a.bin").write_bytes(b"a" * 3_000_000)
    (source / "sub").mkdir()
    (source / "sub" / "b.txt").write_bytes(b"hello")
    (source / "skipped.txt").write_bytes(b"no")

    assert store.put_tree(source, "jobs/j1", skip=lambda rel: rel == "skipped.txt") == 2
    assert [(e.key, e.size) for e in store.list("jobs/j1")] == [
        ("jobs/j1/a.bin", 3_000_000),
        ("jobs/j1/sub/b.txt", 5),
    ]
    assert store.exists("jobs/j1/sub/b.txt") and not store.exists("jobs/j1/skipped.txt")
    assert store.size("jobs/j1/a.bin") == 3_000_000 and store.size("jobs/j1/nope") is None
    assert store.read_bytes("jobs/j1/sub/b.txt") == b"hello"
    assert b"".join(store.iter_bytes("jobs/j1/a.bin")) == b"a" * 3_000_000
    assert b"".join(store.iter_bytes("jobs/j1/sub/b.txt", 3)) == b"lo"
    with pytest.raises(FileNotFoundError):
        store.read_bytes("jobs/j1/nope")

    # A host without the files fetches them into its folder (the store's own, or its cache).
    for path in store.root.rglob("*"):
        if store.remote and path.is_file():
            path.unlink()
    folder = store.fetch_tree("jobs/j1")
    assert folder is not None and (folder / "sub" / "b.txt").read_bytes() == b"hello"
    assert store.fetch_file("jobs/j1/nope") is None and store.fetch_tree("jobs/none") is None

    store.delete("jobs/j1/sub/b.txt")
    assert not store.exists("jobs/j1/sub/b.txt") and not (folder / "sub" / "b.txt").exists()
    store.put_file(source / "sub" / "b.txt", "jobs/j2/b.txt")
    store.delete_prefix("jobs/j1")
    assert store.list("jobs/j1") == [] and not folder.exists()
    assert [e.key for e in store.list("jobs")] == ["jobs/j2/b.txt"]


def test_a_job_files_backups_follow_the_folder(store: ArtifactStore) -> None:
    files = JobFiles(store, "job1")
    backups = files.folder / "backup"
    backups.mkdir(parents=True)
    for epoch in (1, 2, 3):
        path = backups / f"epoch-{epoch:06d}.bin"
        path.write_bytes(bytes([epoch]) * 10)
        if epoch == 3:
            (backups / "epoch-000001.bin").unlink()  # the writer keeps the last few
        files.put_backup(path)
    stored = [e.key for e in store.list(job_key("job1", "backup"))]
    assert stored == ["jobs/job1/backup/epoch-000002.bin", "jobs/job1/backup/epoch-000003.bin"]

    # A checkpoint is staged (copied) for a remote store, since Keras may rewrite it.
    checkpoint = files.folder / "checkpoints" / "last.keras"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"v1")
    staged = files.stage(checkpoint)
    assert (staged is not None) == store.remote
    checkpoint.write_bytes(b"v2")
    if staged is not None:
        files.put_staged(staged, "checkpoints/last.keras")
        assert not staged.exists()
    assert store.read_bytes("jobs/job1/checkpoints/last.keras") == (
        b"v1" if store.remote else b"v2"
    )
    (files.folder / "model.keras").write_bytes(b"model")
    (files.folder / "model.partial-1.keras").write_bytes(b"half")
    files.put_all()
    assert store.read_bytes("jobs/job1/model.keras") == b"model"
    # A half-written file is never uploaded (in a folder store it is just there).
    assert store.exists("jobs/job1/model.partial-1.keras") == (not store.remote)


def test_a_running_job_s_growing_files_are_stored_when_they_change(
    store: ArtifactStore,
) -> None:
    files = JobFiles(store, "job1")
    files.folder.mkdir(parents=True)
    log = files.folder / "train.log"
    log.write_bytes(b"Epoch 1/3\n")
    events = files.folder / "tensorboard" / "train" / "events.out.tfevents.1"
    events.parent.mkdir(parents=True)
    events.write_bytes(b"e1")
    (files.folder / "checkpoints").mkdir()
    (files.folder / "checkpoints" / "a.keras").write_bytes(b"c")  # stored as it is written
    if not store.remote:  # the folder is the store: nothing to do
        assert files.put_live() == 0
        return
    assert files.put_live() == 2
    assert files.put_live() == 0  # nothing changed
    with open(log, "ab") as f:
        f.write(b"Epoch 2/3\n")
    assert files.put_live() == 1
    assert store.read_bytes("jobs/job1/train.log") == b"Epoch 1/3\nEpoch 2/3\n"
    assert store.read_bytes("jobs/job1/tensorboard/train/events.out.tfevents.1") == b"e1"
    assert not store.exists("jobs/job1/checkpoints/a.keras")
    assert not any((files.folder / ".staging").iterdir())


@pytest.mark.parametrize("key", ["../x", "/etc/passwd", "jobs/../../x", "", "."])
def test_keys_stay_inside_the_root(key: str) -> None:
    with pytest.raises(ArtifactError):
        clean_key(key)


def test_the_url_names_a_bucket() -> None:
    assert parse_url("s3://bucket") == ("bucket", "")
    assert parse_url("s3://bucket/a/b/") == ("bucket", "a/b")
    with pytest.raises(ArtifactError, match="expected s3://bucket"):
        parse_url("gs://bucket")
    with pytest.raises(ValueError, match="artifacts_url"):
        Settings(artifacts_url="/some/folder")


def test_migrate_creates_the_bucket(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    bucket = f"made-{os.getpid()}"
    store = artifact_store(Settings(data_dir=tmp_path, artifacts_url=f"s3://{bucket}/p"))
    store.ensure_ready()
    store.ensure_ready()  # a second time finds it
    names = [b["Name"] for b in s3_server.client().list_buckets()["Buckets"]]
    assert bucket in names


def test_a_store_that_does_not_answer_is_told_from_a_request_it_refuses() -> None:
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import ClientError, EndpointConnectionError

    def answer(status: int, code: str) -> ClientError:
        response: Any = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
        return ClientError(response, "PutObject")

    def wrapped(cause: BaseException) -> S3UploadFailedError:
        try:
            raise S3UploadFailedError("Failed to upload") from cause
        except S3UploadFailedError as exc:
            return exc

    assert store_unavailable(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))
    assert store_unavailable(answer(503, "SlowDown"))
    assert store_unavailable(wrapped(answer(500, "InternalError")))
    assert not store_unavailable(answer(403, "AccessDenied"))
    assert not store_unavailable(wrapped(answer(404, "NoSuchBucket")))
    assert not store_unavailable(FileNotFoundError("staged copy"))


def test_the_live_upload_interval_is_a_number_of_seconds_not_below_zero(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pydantic

    for bad in ("-1", "often", "nan"):
        monkeypatch.setenv("FITQ_LIVE_SYNC_SECONDS", bad)
        with pytest.raises(pydantic.ValidationError, match="live_sync_seconds"):
            Settings()
    monkeypatch.setenv("FITQ_LIVE_SYNC_SECONDS", "0")  # uploads only when the job ends
    assert Settings().live_sync_seconds == 0
