"""Where fitq's artifacts live: the filesystem (the embedded default) or an S3 bucket.

Every artifact has a *key*, its path relative to the artifact root with ``/``
between parts: ``jobs/<id>/checkpoints/epoch01.keras``, ``jobs/<id>/model.keras``,
``datasets/<id>/x.npy``, ``models/<id>/config.json``. The database stores keys (a
checkpoint's ``path`` is relative to its job's key), never a host's paths, so that
any host can find an artifact.

Processes always work in a local folder laid out like the keys
(``Settings.resolved_artifacts_dir``): Keras writes there, and what is read is read
from there. With the filesystem store that folder *is* the store, and ``put_file``,
``fetch_file`` and the rest do nothing to files already in place. With
``FITQ_ARTIFACTS_URL=s3://bucket/prefix`` the folder is a cache: a writer puts
what it wrote, a reader fetches what it lacks, and the API streams downloads from
the bucket. boto3 finds the endpoint, region and credentials where it always does
(``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_ACCESS_KEY_ID``, ``~/.aws``, ...).
"""

from __future__ import annotations

import os
import posixpath
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import FitqError
from core.settings import Settings
from models.file_names import BACKUP_DIR, CHECKPOINT_DIR, CSV_DIR, LOG_FILE, TENSORBOARD_DIR

if TYPE_CHECKING:
    from collections.abc import Callable

CHUNK = 1 << 20
STAGING_DIR = ".staging"  # copies of checkpoints waiting for their upload
# A running job's files that grow as it trains, uploaded now and then (``put_live``).
LIVE_FILES = (LOG_FILE, TENSORBOARD_DIR, CSV_DIR)


class ArtifactError(FitqError):
    """A key that would leave the artifact root, or a store that cannot be used."""


@dataclass(frozen=True)
class Entry:
    """One stored file: its key, size in bytes and modification time (Unix seconds)."""

    key: str
    size: int
    mtime: float


def clean_key(key: str) -> str:
    """``key`` normalised; refuses one that is absolute or climbs out with ``..``."""
    norm = posixpath.normpath(key.replace("\\", "/"))
    if norm.startswith(("/", "..")) or norm in ("", "."):
        raise ArtifactError(f"artifact key {key!r} is not inside the artifact root")
    return norm


def job_key(job_id: str, relative: str = "") -> str:
    """The key of ``relative`` (a checkpoint's recorded path, ``model.keras``, ...)
    in a job's artifacts; the job's own prefix when ``relative`` is empty."""
    return clean_key(f"jobs/{job_id}/{relative}" if relative else f"jobs/{job_id}")


class ArtifactStore:
    """The filesystem store: keys are files under ``root``; the local folder is the store.

    The S3 store below has the same methods; every writer and reader of artifacts
    goes through one of them.
    """

    remote = False

    def __init__(self, root: Path) -> None:
        self.root = root

    def ensure_ready(self) -> None:
        """Makes sure the store can be written (creates the folder, or the bucket)."""
        self.root.mkdir(parents=True, exist_ok=True)

    def local_path(self, key: str) -> Path:
        """Where ``key`` lives in this host's artifact folder (the store itself, or
        the cache of a remote one)."""
        return self.root / clean_key(key)

    # Writing: what a process wrote in its local folder goes to the store.
    def put_file(self, path: Path, key: str) -> None:
        """Stores the file at ``path`` under ``key``."""
        target = self.local_path(key)
        if path.resolve() == target.resolve():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.part-{uuid.uuid4().hex[:8]}")
        shutil.copyfile(path, partial)
        os.replace(partial, target)

    def put_tree(self, folder: Path, prefix: str, skip: Callable[[str], bool] | None = None) -> int:
        """Stores every regular file under ``folder`` under ``prefix``, except those
        whose path relative to ``folder`` ``skip`` names; returns how many it stored."""
        count = 0
        for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
            rel = path.relative_to(folder).as_posix()
            if path.is_symlink() or not path.is_file() or (skip is not None and skip(rel)):
                continue
            self.put_file(path, f"{clean_key(prefix)}/{rel}")
            count += 1
        return count

    # Reading.
    def fetch_file(self, key: str) -> Path | None:
        """``key`` as a local file (fetched into the cache if needed); None if absent."""
        path = self.local_path(key)
        return path if path.is_file() else None

    def fetch_tree(self, prefix: str) -> Path | None:
        """Everything under ``prefix`` as a local folder; None if there is nothing."""
        folder = self.local_path(prefix)
        return folder if folder.is_dir() else None

    def exists(self, key: str) -> bool:
        return self.local_path(key).is_file()

    def size(self, key: str) -> int | None:
        """The stored file's size in bytes; None if there is none."""
        try:
            return self.local_path(key).stat().st_size
        except OSError:
            return None

    def read_bytes(self, key: str) -> bytes:
        """The whole file (small files only: configs, architectures)."""
        try:
            return self.local_path(key).read_bytes()
        except IsADirectoryError as exc:
            raise FileNotFoundError(key) from exc

    def iter_bytes(self, key: str, start: int = 0) -> Iterator[bytes]:
        """The file's bytes from ``start``, a chunk at a time."""
        with open(self.local_path(key), "rb") as f:
            f.seek(start)
            while chunk := f.read(CHUNK):
                yield chunk

    def read_range(self, key: str, start: int, length: int) -> bytes:
        """At most ``length`` bytes of the file from ``start`` (fewer at its end)."""
        try:
            with open(self.local_path(key), "rb") as f:
                f.seek(start)
                return f.read(length)
        except IsADirectoryError as exc:
            raise FileNotFoundError(key) from exc

    def list(self, prefix: str) -> list[Entry]:
        """The files under ``prefix``, in key order."""
        folder = self.local_path(prefix)
        entries = []
        for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
            if path.is_file() and not path.is_symlink():
                st = path.stat()
                key = path.relative_to(self.root).as_posix()
                entries.append(Entry(key, st.st_size, st.st_mtime))
        return entries

    # Deleting (the one way artifacts are removed: retention, the deletion endpoint).
    def delete(self, key: str) -> None:
        """Removes the file ``key`` (and its cached copy); absent is fine."""
        self.local_path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        """Removes everything under ``prefix`` (and the cached copies)."""
        shutil.rmtree(self.local_path(prefix), ignore_errors=True)


class S3ArtifactStore(ArtifactStore):
    """Artifacts as objects in ``bucket`` under ``prefix``; ``root`` is the local cache."""

    remote = True

    def __init__(self, root: Path, bucket: str, prefix: str, client: Any) -> None:
        super().__init__(root)
        self.bucket = bucket
        self.prefix = prefix
        self.client = client

    def ensure_ready(self) -> None:
        """Creates the bucket if it is not there (``fitq migrate`` does, once)."""
        super().ensure_ready()
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except self._missing() as exc:
            if not _not_found(exc) and "NoSuchBucket" not in str(exc):
                raise
            self.client.create_bucket(Bucket=self.bucket, **self._location())

    def _location(self) -> dict[str, Any]:
        region = self.client.meta.region_name
        if region in (None, "us-east-1"):
            return {}
        return {"CreateBucketConfiguration": {"LocationConstraint": region}}

    def object_key(self, key: str) -> str:
        key = clean_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_file(self, path: Path, key: str) -> None:
        self.client.upload_file(str(path), self.bucket, self.object_key(key))

    def fetch_file(self, key: str) -> Path | None:
        size = self.size(key)
        return None if size is None else self._download(key, size)

    def fetch_tree(self, prefix: str) -> Path | None:
        entries = self.list(prefix)
        if not entries:
            return None
        for entry in entries:
            self._download(entry.key, entry.size)
        return self.local_path(prefix)

    def _download(self, key: str, size: int) -> Path:
        """``key`` (of ``size`` bytes) in the cache. A cached copy of that size is taken
        as the file: a file is uploaded once, or only grows (a running job's log,
        TensorBoard and CSV files, ``JobFiles.put_live``), and a job's other files are
        read from another host only once it has ended (a warm start, a run) or stopped
        (its backups)."""
        target = self.local_path(key)
        if target.is_file() and target.stat().st_size == size:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.part-{uuid.uuid4().hex[:8]}")
        try:
            self.client.download_file(self.bucket, self.object_key(key), str(partial))
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        return target

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def size(self, key: str) -> int | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except self._missing() as exc:
            if _not_found(exc):
                return None
            raise
        return int(head["ContentLength"])

    def read_bytes(self, key: str) -> bytes:
        body = self._get(key)
        try:
            data: bytes = body.read()
        finally:
            body.close()
        return data

    def iter_bytes(self, key: str, start: int = 0) -> Iterator[bytes]:
        body = self._get(key, start)
        try:
            yield from body.iter_chunks(CHUNK)
        finally:
            body.close()

    def read_range(self, key: str, start: int, length: int) -> bytes:
        body = self._get(key, start, start + length - 1)
        try:
            data: bytes = body.read()
        finally:
            body.close()
        return data

    def list(self, prefix: str) -> list[Entry]:
        base = self.object_key(prefix) + "/"
        strip = len(self.prefix) + 1 if self.prefix else 0
        entries = []
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=base
        )
        for page in pages:
            for item in page.get("Contents", []):
                modified: datetime = item["LastModified"]
                entries.append(Entry(item["Key"][strip:], int(item["Size"]), modified.timestamp()))
        return sorted(entries, key=lambda e: e.key)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))
        super().delete(key)

    def delete_prefix(self, prefix: str) -> None:
        keys = [self.object_key(e.key) for e in self.list(prefix)]
        for start in range(0, len(keys), 1000):  # DeleteObjects takes 1000 at most
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch})
        super().delete_prefix(prefix)

    def _get(self, key: str, start: int = 0, last: int | None = None) -> Any:
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self.object_key(key)}
        if start or last is not None:
            args["Range"] = f"bytes={start}-{'' if last is None else last}"
        try:
            return self.client.get_object(**args)["Body"]
        except self._missing() as exc:
            if _not_found(exc):
                raise FileNotFoundError(key) from exc
            raise

    @staticmethod
    def _missing() -> type[Exception]:
        from botocore.exceptions import ClientError

        missing: type[Exception] = ClientError
        return missing


def store_unavailable(exc: BaseException) -> bool:
    """Whether ``exc``, or an error it was raised from, says the object store did not
    answer (worth trying again): a connection refused, dropped or timed out, or a 5xx or
    throttling answer. An error of the request itself (access denied, no such bucket)
    is not."""
    try:
        from botocore.exceptions import ClientError, HTTPClientError
        from botocore.exceptions import ConnectionError as NoConnection
    except ImportError:  # no boto3: the filesystem store, never unavailable
        return False
    seen: BaseException | None = exc
    for _ in range(8):  # boto3's upload_file wraps ClientError in S3UploadFailedError
        if seen is None:
            return False
        if isinstance(seen, (NoConnection, HTTPClientError)):
            return True
        if isinstance(seen, ClientError):
            status = int(seen.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            code = str(seen.response.get("Error", {}).get("Code", ""))
            return status >= 500 or code in ("SlowDown", "Throttling", "RequestTimeout")
        seen = seen.__cause__ or seen.__context__
    return False


def _not_found(exc: Exception) -> bool:
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


class JobFiles:
    """One job's artifacts: its local folder, and the store its files go to.

    Args:
        store: The artifact store.
        job_id: The job.
    """

    def __init__(self, store: ArtifactStore, job_id: str) -> None:
        self.store = store
        self.job_id = job_id
        self.folder = store.local_path(job_key(job_id))
        self._live: dict[str, tuple[int, int]] = {}  # what put_live stored: (size, mtime)

    def relative(self, path: Path) -> str:
        """``path`` (in the job's folder) as the job's files name it: ``checkpoints/a.keras``."""
        return Path(os.path.relpath(path, self.folder)).as_posix()

    def stage(self, path: Path) -> Path | None:
        """A copy of ``path`` to upload later, for a remote store (Keras may write the
        file again meanwhile); None for the filesystem store, where it is in place."""
        if not self.store.remote:
            return None
        staging = self.folder / STAGING_DIR
        staging.mkdir(parents=True, exist_ok=True)
        copy = staging / uuid.uuid4().hex
        shutil.copyfile(path, copy)
        return copy

    def put(self, path: Path, relative: str | None = None) -> None:
        """Stores ``path`` as the job's file ``relative`` (by default, where it lies)."""
        self.store.put_file(path, job_key(self.job_id, relative or self.relative(path)))

    def put_staged(self, staged: Path, relative: str) -> None:
        """Stores a copy ``stage`` made, then removes the copy. A put that fails leaves
        it, for the writer to try again while the store does not answer."""
        self.put(staged, relative)
        staged.unlink(missing_ok=True)

    def put_live(self) -> int:
        """For a remote store: stores those of a running job's log, TensorBoard and CSV
        files that changed since the last call, each from a copy taken now (they are
        written to while training goes on); returns how many it stored. The store has
        them as of that moment until the job ends and ``put_all`` stores the rest."""
        if not self.store.remote:
            return 0
        stored = 0
        for name in LIVE_FILES:
            top = self.folder / name
            paths = sorted(top.rglob("*")) if top.is_dir() else [top]
            for path in paths:
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                relative, mark = self.relative(path), (stat.st_size, stat.st_mtime_ns)
                if not path.is_file() or self._live.get(relative) == mark:
                    continue
                staged = self.stage(path)
                assert staged is not None  # a remote store always stages
                try:
                    self.put_staged(staged, relative)
                finally:
                    staged.unlink(missing_ok=True)  # the next call copies it again
                self._live[relative] = mark
                stored += 1
        return stored

    def put_backup(self, path: Path) -> None:
        """Stores a backup just written, and removes from the store the backups its
        writer removed from the folder (it keeps the last few)."""
        self.put(path)
        if not self.store.remote:
            return
        for entry in self.store.list(job_key(self.job_id, BACKUP_DIR)):
            if not (self.store.local_path(entry.key)).exists():
                self.store.delete(entry.key)

    def put_all(self, skip: tuple[str, ...] = (BACKUP_DIR, CHECKPOINT_DIR, STAGING_DIR)) -> int:
        """Stores the job's folder (its trained model, export, TensorBoard and CSV logs,
        log, predictions), but the folders in ``skip``, stored as they are written."""
        return self.store.put_tree(
            self.folder,
            job_key(self.job_id),
            lambda rel: rel.split("/", 1)[0] in skip or ".partial-" in rel,
        )

    def fetch(self, relative: str) -> Path | None:
        """The job's file ``relative`` in the local folder, fetched if needed."""
        return self.store.fetch_file(job_key(self.job_id, relative))

    def fetch_folder(self, relative: str) -> Path | None:
        """The job's folder ``relative`` (its backups), fetched if needed."""
        return self.store.fetch_tree(job_key(self.job_id, relative))


def parse_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` as ``(bucket, prefix)``."""
    if not url.startswith("s3://"):
        raise ArtifactError(
            f"FITQ_ARTIFACTS_URL={url!r}: expected s3://bucket or s3://bucket/prefix "
            "(unset: artifacts stay in FITQ_ARTIFACTS_DIR)"
        )
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not bucket:
        raise ArtifactError(f"FITQ_ARTIFACTS_URL={url!r} names no bucket")
    return bucket, prefix.strip("/")


def artifact_store(settings: Settings) -> ArtifactStore:
    """The store ``settings`` name: S3 when ``artifacts_url`` is set, else the folder.

    One per process and configuration (boto3 clients are not shared across a fork).
    """
    return _store(settings.artifacts_url or None, settings.resolved_artifacts_dir, os.getpid())


@lru_cache(maxsize=8)
def _store(url: str | None, root: Path, pid: int) -> ArtifactStore:  # noqa: ARG001 - a key
    if url is None:
        return ArtifactStore(root)
    bucket, prefix = parse_url(url)
    import boto3  # only a deployment that names a bucket needs it

    return S3ArtifactStore(root, bucket, prefix, boto3.session.Session().client("s3"))
