"""A job's files as the API serves them: one file, or a folder as a .tar.gz.

Every path comes from the job's row or from fitq's own names, never from the
request; it is still resolved and checked to lie inside the job's folder, so that a
link placed there cannot serve a file from elsewhere.

With a remote artifact store (``FITQ_ARTIFACTS_URL``) the API streams the object's
body from the store through itself, a chunk at a time, rather than redirecting to a
presigned URL: the client needs no route to the store (often a private endpoint),
the answer is the same (status, ``ETag``, ``Content-Length``, file name) on either
store, and access stays checked on every request instead of by a URL that works
for anyone until it expires.
"""

from __future__ import annotations

import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import Response
from fastapi.responses import FileResponse, StreamingResponse

from api.schemas import ErrorOut
from core.errors import Gone, NotFound
from core.settings import Settings
from models.tables import Checkpoint, Job
from storage.artifacts import ArtifactError, ArtifactStore, Entry, artifact_store, job_key

CHUNK = 1 << 20
BLOCK = tarfile.BLOCKSIZE
OCTET_STREAM = "application/octet-stream"
GZIP = "application/gzip"


def inside_job(settings: Settings, job_id: str, relative: str, what: str) -> Path:
    """``relative`` in the job's folder, resolved.

    Raises:
        NotFound: It resolves outside the folder, or is not there.
    """
    root = settings.job_dir(job_id).resolve()
    path = (root / relative).resolve()
    if root not in path.parents or not path.exists():
        raise NotFound(what, relative, f"it is not in the artifact folder of job {job_id!r}")
    return path


GONE: dict[int | str, dict[str, Any]] = {
    410: {
        "model": ErrorOut,
        "description": "Removed on purpose: the job's artifacts were deleted "
        "(`DELETE /v1/jobs/{id}/artifacts`), or the checkpoint was removed by the job's "
        "`output.retention`; `detail` says which and when.",
    }
}


def not_deleted(job: Job, what: str) -> None:
    """Raises ``Gone`` when the job's artifacts were deleted."""
    if job.artifacts_removed_at is not None:
        raise Gone(
            f"the {what} of job {job.id} was removed: its artifacts were deleted at "
            f"{job.artifacts_removed_at.isoformat()} (DELETE /v1/jobs/{job.id}/artifacts)"
        )


def not_removed(row: Checkpoint) -> None:
    """Raises ``Gone`` when the checkpoint's file was removed."""
    if row.removed_at is None:
        return
    why = (
        "by the job's output.retention once the job ended"
        if row.removed_reason == "retention"
        else f"when the job's artifacts were deleted (DELETE /v1/jobs/{row.job_id}/artifacts)"
    )
    raise Gone(
        f"checkpoint {row.id} of job {row.job_id} (epoch {row.epoch}, {row.path}) was "
        f"removed at {row.removed_at.isoformat()}, {why}"
    )


def _stored(settings: Settings, job_id: str, relative: str, what: str) -> tuple[ArtifactStore, str]:
    """The remote store and the key of ``relative`` in the job's artifacts."""
    try:
        key = job_key(job_id, relative)
    except ArtifactError:
        key = ""
    if not key.startswith(f"{job_key(job_id)}/"):
        raise NotFound(what, relative, f"it is not in the artifact folder of job {job_id!r}")
    return artifact_store(settings), key


def send_artifact(
    settings: Settings,
    job_id: str,
    relative: str,
    filename: str,
    what: str,
    etag: str | None = None,
) -> Response:
    """The job's file ``relative`` as a download named ``filename``: from the job's
    folder, or streamed from the remote artifact store."""
    if not artifact_store(settings).remote:
        return send_file(inside_job(settings, job_id, relative, what), filename, what, etag=etag)
    store, key = _stored(settings, job_id, relative, what)
    size = store.size(key)
    if size is None:
        raise NotFound(what, relative, f"it is not in the artifact store of job {job_id!r}")
    headers = {
        "Content-Disposition": f'attachment; filename="{filename}"',
        "Content-Length": str(size),
    }
    if etag:
        headers["ETag"] = f'"{etag}"'
    return StreamingResponse(store.iter_bytes(key), media_type=OCTET_STREAM, headers=headers)


def send_artifact_folder(
    settings: Settings, job_id: str, relative: str, top: str, what: str
) -> StreamingResponse:
    """The job's folder ``relative`` as ``top.tar.gz`` (see ``send_folder``), from the
    job's folder or from the objects of the remote artifact store."""
    filename = f"{top}.tar.gz"
    if not artifact_store(settings).remote:
        return send_folder(inside_job(settings, job_id, relative, what), top, filename)
    store, key = _stored(settings, job_id, relative, what)
    entries = store.list(key)
    if not entries:
        raise NotFound(what, relative, f"it is not in the artifact store of job {job_id!r}")
    return StreamingResponse(
        _gzip(tar_objects(store, key, entries, top)),
        media_type=GZIP,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def send_file(
    path: Path, filename: str, what: str, media_type: str = OCTET_STREAM, etag: str | None = None
) -> FileResponse:
    """The file at ``path`` as a download named ``filename``, streamed in chunks."""
    if not path.is_file():
        raise NotFound(what, filename, "it is not a file")
    headers = {"ETag": f'"{etag}"'} if etag else None
    return FileResponse(path, filename=filename, media_type=media_type, headers=headers)


def send_folder(folder: Path, top: str, filename: str) -> StreamingResponse:
    """``folder`` as a gzip-compressed tar archive whose entries sit under ``top/``,
    made while it is sent: memory stays at one chunk whatever the folder's size."""
    return StreamingResponse(
        tar_gz(folder, top),
        media_type=GZIP,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def tar_gz(folder: Path, top: str) -> Iterator[bytes]:
    """The bytes of a .tar.gz of ``folder`` (see ``tar``)."""
    return _gzip(tar(folder, top))


def _gzip(pieces: Iterator[bytes]) -> Iterator[bytes]:
    gz = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip framing
    for piece in pieces:
        if out := gz.compress(piece):
            yield out
    yield gz.flush()


def tar(folder: Path, top: str) -> Iterator[bytes]:
    """The bytes of a tar archive of ``folder``'s directories and regular files
    (links are left out), under ``top/``, in name order."""
    for path in [folder, *sorted(folder.rglob("*"))]:
        if path.is_symlink() or not (path.is_dir() or path.is_file()):
            continue
        header, size = _header(path, "/".join([top, *path.relative_to(folder).parts]))
        yield header
        if path.is_file():
            yield from _contents(path, size)
    yield b"\0" * 2 * BLOCK


def tar_objects(
    store: ArtifactStore, prefix: str, entries: list[Entry], top: str
) -> Iterator[bytes]:
    """A tar archive, as ``tar`` makes one, of the stored files ``entries`` under
    ``prefix``: each folder once, before what it holds."""
    made: set[str] = set()
    newest = int(max(e.mtime for e in entries))
    for entry in entries:
        parts = entry.key[len(prefix) + 1 :].split("/")
        for depth in range(len(parts)):
            folder = "/".join([top, *parts[:depth]])
            if folder not in made:
                made.add(folder)
                yield _info(folder, tarfile.DIRTYPE, 0, newest).tobuf(tarfile.PAX_FORMAT)
        name = "/".join([top, *parts])
        yield _info(name, tarfile.REGTYPE, entry.size, int(entry.mtime)).tobuf(tarfile.PAX_FORMAT)
        yield from _padded(store.iter_bytes(entry.key), entry.size)
    yield b"\0" * 2 * BLOCK


def _info(name: str, kind: bytes, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mtime = kind, size, mtime
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


def _header(path: Path, name: str) -> tuple[bytes, int]:
    """The tar header of ``path`` under ``name``, and the size it gives."""
    stat = path.stat()
    info = tarfile.TarInfo(name)
    info.mtime = int(stat.st_mtime)
    if path.is_dir():
        info.type, info.mode = tarfile.DIRTYPE, 0o755
    else:
        info.size, info.mode = stat.st_size, 0o644
    return info.tobuf(tarfile.PAX_FORMAT), info.size


def _contents(path: Path, size: int) -> Iterator[bytes]:
    """``size`` bytes of the file, as tar stores them: padded to whole blocks, and
    to the size its header gave whatever happens to the file meanwhile."""
    with open(path, "rb") as f:
        yield from _padded(iter(lambda: f.read(min(CHUNK, size)), b""), size)


def _padded(chunks: Iterator[bytes], size: int) -> Iterator[bytes]:
    """The first ``size`` bytes of ``chunks``, padded with zeros to ``size`` and then
    to whole blocks."""
    sent = 0
    for block in chunks:
        block = block[: size - sent]
        sent += len(block)
        if block:
            yield block
        if sent >= size:
            break
    yield b"\0" * (size - sent + (-size % BLOCK))
