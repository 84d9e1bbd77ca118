"""Checks and stores uploaded ``.npz`` datasets without trusting a byte of them.

A ``.npz`` is a zip of ``.npy`` files. Before any array is read: every member must
be one of the known array names (no folders, no ``..``), its declared size must fit
the caps and its compression ratio must be sane (no zip bombs), its ``.npy`` header
must declare a numeric dtype (no pickled objects) and a shape whose bytes equal the
member's size (no shape bombs). The arrays are then streamed out to ``.npy`` files
that the worker memory-maps, checked for NaN and infinity, and described: samples,
shapes, dtypes, the labels' range and, for class ids, a class histogram.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import uuid
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

import numpy as np

from checks.labels import first_non_finite, label_stats
from core.errors import FitqError
from core.settings import Settings

SPLIT_ARRAYS = {"train": ("x", "y"), "validation": ("x_val", "y_val"), "test": ("x_test", "y_test")}
ARRAY_NAMES = {name for pair in SPLIT_ARRAYS.values() for name in pair}
NUMERIC_KINDS = "biuf"
CHUNK = 1 << 20


class UploadError(FitqError):
    """An upload that fitq refuses; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Member:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    size: int


def reason(exc: BaseException) -> str:
    """An exception's message, without the server path that an ``OSError`` names."""
    if isinstance(exc, OSError) and exc.filename is not None:
        return exc.strerror or type(exc).__name__
    return str(exc)


def datasets_dir(settings: Settings) -> Path:
    return settings.resolved_artifacts_dir / "datasets"


def dataset_dir(settings: Settings, dataset_id: str) -> Path:
    return datasets_dir(settings) / dataset_id


def _header(f: IO[bytes], name: str) -> tuple[tuple[int, ...], np.dtype[Any], int]:
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, _fortran, dtype = np.lib.format.read_array_header_2_0(f)
    except (ValueError, OSError, EOFError, zlib.error, zipfile.BadZipFile) as exc:
        raise UploadError(f"{name} is not a readable .npy array: {reason(exc)}") from exc
    return tuple(int(d) for d in shape), dtype, f.tell()


def inspect_npz(path: Path, settings: Settings) -> dict[str, Member]:
    """The arrays of an uploaded ``.npz``, checked before any of them is read."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UploadError(f"the file is not a .npz (zip) archive: {reason(exc)}") from exc
    members: dict[str, Member] = {}
    total = 0
    with archive:
        for info in archive.infolist():
            raw = info.filename
            stem = raw[:-4] if raw.endswith(".npy") else raw
            if raw != f"{stem}.npy" or stem not in ARRAY_NAMES or stem in members:
                raise UploadError(
                    f"unexpected member {raw!r} in the archive; expected only "
                    f"{sorted(n + '.npy' for n in ARRAY_NAMES)}, each once"
                )
            total = check_member(info, total, settings, "arrays")
            with archive.open(info) as f:
                shape, dtype, header = _header(f, raw)
            if dtype.hasobject or dtype.kind not in NUMERIC_KINDS:
                raise UploadError(
                    f"{raw} has dtype {dtype}; expected numbers (bool, int, uint, "
                    "float), never objects or pickles"
                )
            expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if expected != info.file_size - header:
                raise UploadError(
                    f"{raw} declares shape {list(shape)} of {dtype} ({expected} "
                    f"bytes) but holds {info.file_size - header} bytes"
                )
            if not shape:
                raise UploadError(f"{raw} is a scalar; expected samples along the first axis")
            members[stem] = Member(stem, shape, dtype, info.file_size)
    _check_pairs(members)
    return members


def _check_pairs(members: dict[str, Member]) -> None:
    if "x" not in members or "y" not in members:
        raise UploadError(
            f"the archive holds {sorted(members)}; expected at least arrays "
            "'x' and 'y' (np.savez(file, x=..., y=...))"
        )
    for split, (xn, yn) in SPLIT_ARRAYS.items():
        if (xn in members) != (yn in members):
            raise UploadError(f"{split} data needs both {xn!r} and {yn!r}")
        if xn in members and members[xn].shape[0] != members[yn].shape[0]:
            raise UploadError(
                f"{xn} has {members[xn].shape[0]} samples but {yn} has "
                f"{members[yn].shape[0]}; expected one label per sample"
            )
        if xn in members and members[xn].shape[1:] != members["x"].shape[1:]:
            raise UploadError(
                f"{xn} samples have shape {list(members[xn].shape[1:])}, expected "
                f"the training shape {list(members['x'].shape[1:])}"
            )


def check_finite(folder: Path, names: list[str]) -> None:
    """Refuses NaN and infinity in any array, naming the array and the first such value."""
    for name in names:
        values = np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
        found = first_non_finite(values)
        if found is not None:
            index, value = found
            raise UploadError(
                f"{name}{list(index)} is {value}; expected finite numbers (no NaN or "
                "infinity) in every array"
            )


def describe(folder: Path, max_classes: int) -> dict[str, Any]:
    """Per split: samples, shapes, dtypes, the labels' range, and a class histogram of
    labels that are class ids (integers in ``0 .. max_classes - 1``)."""
    info: dict[str, Any] = {}
    for split, (xn, yn) in SPLIT_ARRAYS.items():
        if not (folder / f"{xn}.npy").exists():
            continue
        x = np.load(folder / f"{xn}.npy", mmap_mode="r", allow_pickle=False)
        y = np.load(folder / f"{yn}.npy", mmap_mode="r", allow_pickle=False)
        info[split] = {
            "n_samples": int(x.shape[0]),
            "x_shape": list(x.shape[1:]),
            "x_dtype": str(x.dtype),
            "y_shape": list(y.shape[1:]),
            "y_dtype": str(y.dtype),
            "bytes": int(x.nbytes + y.nbytes),
            **label_stats(y, max_classes).as_info(),
        }
    return info


def check_member(info: zipfile.ZipInfo, total: int, settings: Settings, what: str) -> int:
    """Checks one archive member's declared size and ratio; returns the running total."""
    total += info.file_size
    if total > settings.max_dataset_bytes:
        raise UploadError(
            f"the {what} hold more than {settings.max_dataset_bytes} bytes once "
            "decompressed (FITQ_MAX_DATASET_BYTES)",
            413,
        )
    ratio = info.file_size / info.compress_size if info.compress_size else 1.0
    if ratio > settings.max_compression_ratio:
        raise UploadError(
            f"{info.filename} decompresses {ratio:.0f}-fold, more than "
            f"FITQ_MAX_COMPRESSION_RATIO={settings.max_compression_ratio:g}"
        )
    return total


def copy_member(archive: zipfile.ZipFile, name: str, dest: Path, declared: int) -> None:
    """Extracts one member, never more bytes than its header declared."""
    written = 0
    with archive.open(name) as src, open(dest, "wb") as out:
        while chunk := src.read(CHUNK):
            written += len(chunk)
            if written > declared:
                raise UploadError(f"{name} holds more bytes than it declares")
            out.write(chunk)


def store_upload(
    upload: BinaryIO,
    settings: Settings,
    suffix: str,
    process: Callable[[Path, Path], dict[str, Any]],
) -> tuple[str, int, str, dict[str, Any]]:
    """Streams ``upload`` to a new folder under the cap, hashing it; ``process(file,
    folder)`` checks and unpacks it there and returns its metadata. The folder becomes
    the dataset's only when everything passed; nothing is left on disk otherwise.
    Returns the dataset's id, the upload's size and SHA-256, and the metadata.
    """
    root = datasets_dir(settings)
    root.mkdir(parents=True, exist_ok=True)
    dataset_id = uuid.uuid4().hex
    incoming = root / f".incoming-{dataset_id}"
    incoming.mkdir()
    try:
        raw = incoming / f"upload{suffix}"
        digest, size = hashlib.sha256(), 0
        with open(raw, "wb") as out:
            while chunk := upload.read(CHUNK):
                size += len(chunk)
                if size > settings.max_upload_bytes:
                    raise UploadError(
                        f"the file is over FITQ_MAX_UPLOAD_BYTES={settings.max_upload_bytes} bytes",
                        413,
                    )
                digest.update(chunk)
                out.write(chunk)
        info = process(raw, incoming)
        raw.unlink(missing_ok=True)
        incoming.rename(root / dataset_id)
    except (UploadError, zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        shutil.rmtree(incoming, ignore_errors=True)
        if isinstance(exc, UploadError):
            raise
        raise UploadError(f"the archive is damaged or truncated: {reason(exc)}") from exc
    except BaseException:
        shutil.rmtree(incoming, ignore_errors=True)
        raise
    return dataset_id, size, digest.hexdigest(), info


def _process_npz(raw: Path, folder: Path, settings: Settings) -> dict[str, Any]:
    members = inspect_npz(raw, settings)
    with zipfile.ZipFile(raw) as archive:
        for name, member in members.items():
            copy_member(archive, f"{name}.npy", folder / f"{name}.npy", member.size)
    check_finite(folder, sorted(members))
    return describe(folder, settings.max_label_classes)


def store_npz(upload: BinaryIO, settings: Settings) -> tuple[str, int, str, dict[str, Any]]:
    """Stores an uploaded ``.npz`` as memory-mappable ``.npy`` files, once checked."""
    return store_upload(
        upload, settings, ".npz", lambda raw, folder: _process_npz(raw, folder, settings)
    )


def npz_bytes(**arrays: np.ndarray) -> bytes:
    """An in-memory ``.npz`` (for tests and examples)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()
