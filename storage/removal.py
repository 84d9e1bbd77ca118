"""The one place fitq deletes a job's artifacts: checkpoints, the trained model, its
SavedModel, TensorBoard logs, CSV logs, predictions and resume backups.

Every removal goes through the artifact store (``storage.artifacts``): with the
filesystem store it removes the files of the job's folder; with a remote store it
deletes the objects (``delete``, ``delete_prefix``) and this host's cached copies,
and whatever else of the job's files lies in this host's folder (a worker's copies
of what it wrote). Callers mark the database rows first and remove the files after:
a crash between the two leaves a file nobody lists, never a row that names a file
that is gone.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from models.file_names import BACKUP_DIR, LOG_FILE
from storage.artifacts import ArtifactError, ArtifactStore, job_key

log = logging.getLogger("fitq.storage")


def size_of(path: Path) -> int:
    """Bytes of the file, or of every file under the folder; 0 when it is not there.
    Links are not followed."""
    if path.is_symlink() or not path.is_dir():
        try:
            return path.lstat().st_size
        except FileNotFoundError:
            return 0
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                continue
    return total


def remove_artifacts(paths: Iterable[Path]) -> int:
    """Removes each local file or folder of ``paths`` (a link itself, never its
    target); returns the bytes freed. One that is already gone is skipped; one that
    cannot be removed is logged and left, so that the others still go."""
    freed = 0
    for path in paths:
        size = size_of(path)
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("could not remove artifact %s: %s", path, exc)
            continue
        freed += size
    return freed


def job_artifacts(job_dir: Path) -> list[Path]:
    """Everything in a job's local folder that deleting its artifacts removes: all
    but the training log, which ``/logs`` and the event stream still serve."""
    if not job_dir.is_dir():
        return []
    return sorted(p for p in job_dir.iterdir() if p.name != LOG_FILE)


class JobRemoval:
    """Removes a job's artifacts from the store, and from this host's folder.

    The bytes it counts are the store's: the objects' sizes with a remote store, the
    files' with the filesystem store (a remote store's local copies are a cache).

    Args:
        store: The artifact store (``storage.artifacts.artifact_store``).
        job_id: The job.
    """

    def __init__(self, store: ArtifactStore, job_id: str) -> None:
        self.store = store
        self.job_id = job_id
        self.folder = store.local_path(job_key(job_id))
        self.backups = self.folder / BACKUP_DIR

    def _key(self, relative: str) -> str | None:
        """The key of the job's file ``relative``; None when it would leave the job."""
        try:
            key = job_key(self.job_id, relative)
        except ArtifactError:
            return None
        return key if key.startswith(f"{job_key(self.job_id)}/") else None

    def backup_bytes(self) -> int:
        """Bytes of the job's resume backups."""
        if self.store.remote:
            return sum(e.size for e in self.store.list(job_key(self.job_id, BACKUP_DIR)))
        return size_of(self.backups)

    def has_backups(self) -> bool:
        """Whether the job has resume backups, in the store or in this host's folder."""
        return self.backups.exists() or self.backup_bytes() > 0

    def remove(self, relatives: Iterable[str], backups: bool = False) -> int:
        """Removes the job's files ``relatives`` (checkpoints' recorded paths) and,
        with ``backups``, its resume backups; returns the bytes freed."""
        freed = 0
        for relative in relatives:
            key = self._key(relative)
            if key is None:
                continue
            if self.store.remote:
                freed += self.store.size(key) or 0
                self.store.delete(key)
                remove_artifacts([self.store.local_path(key)])
            else:
                freed += remove_artifacts([self.store.local_path(key)])
        if backups:
            freed += self._remove_folder(BACKUP_DIR)
        return freed

    def _remove_folder(self, relative: str) -> int:
        prefix = job_key(self.job_id, relative)
        if not self.store.remote:
            return remove_artifacts([self.store.local_path(prefix)])
        freed = sum(e.size for e in self.store.list(prefix))
        self.store.delete_prefix(prefix)
        remove_artifacts([self.store.local_path(prefix)])
        return freed

    def _remote_files(self) -> dict[str, int]:
        """The job's objects but its training log, by key, with their sizes."""
        log_key = job_key(self.job_id, LOG_FILE)
        entries = self.store.list(job_key(self.job_id)) if self.store.remote else []
        return {e.key: e.size for e in entries if e.key != log_key}

    def all_bytes(self) -> int:
        """Bytes of every file of the job but its training log."""
        if self.store.remote:
            return sum(self._remote_files().values())
        return sum(size_of(p) for p in job_artifacts(self.folder))

    def remove_all(self) -> int:
        """Removes every file of the job but its training log; returns the bytes freed."""
        if not self.store.remote:
            return remove_artifacts(job_artifacts(self.folder))
        files = self._remote_files()
        top = len(job_key(self.job_id)) + 1
        for name in sorted({key[top:].split("/", 1)[0] for key in files}):
            key = job_key(self.job_id, name)
            if key in files:
                self.store.delete(key)
            else:
                self.store.delete_prefix(key)
        remove_artifacts(job_artifacts(self.folder))
        return sum(files.values())
