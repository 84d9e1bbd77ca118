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
import re
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
from storage.artifacts import artifact_store, clean_key

SPLIT_ARRAYS = {"train": ("x", "y"), "validation": ("x_val", "y_val"), "test": ("x_test", "y_test")}
WEIGHT_ARRAYS = {
    "train": "sample_weight",
    "validation": "sample_weight_val",
    "test": "sample_weight_test",
}
ARRAY_NAMES = {name for pair in SPLIT_ARRAYS.values() for name in pair} | set(
    WEIGHT_ARRAYS.values()
)
# ``x/<input>``, ``y/<output>``, ``sample_weight/<output>``: one array per model input
# or output, by its layer's name; such a name never holds ``/`` nor starts with ``.``.
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}")
NUMERIC_KINDS = "biuf"
CHUNK = 1 << 20


class UploadError(FitqError):
    """An upload that fitq refuses; ``status`` is the HTTP status to answer.

    ``problems`` are ``{loc, msg, type}`` items inside one member of the upload
    (the paths in a model's config), when there are several to report.
    """

    def __init__(
        self, message: str, status: int = 422, problems: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.problems = problems or []


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
    """Where a dataset's files are on this host (``fetch_tree(dataset_key(...))``
    brings them there from a remote artifact store)."""
    return datasets_dir(settings) / dataset_id


def dataset_key(dataset_id: str) -> str:
    """A dataset's prefix in the artifact store."""
    return clean_key(f"datasets/{dataset_id}")


def delete_dataset(settings: Settings, dataset_id: str) -> None:
    """Removes a dataset's files from the artifact store (and this host's copy)."""
    artifact_store(settings).delete_prefix(dataset_key(dataset_id))


def publish(settings: Settings, folder: Path) -> None:
    """Puts an accepted upload's folder in a remote artifact store, whence workers fetch
    it, and drops the local copy; the filesystem store already holds it."""
    store = artifact_store(settings)
    if not store.remote:
        return
    key = folder.relative_to(settings.resolved_artifacts_dir).as_posix()
    try:
        store.put_tree(folder, key)
    except BaseException:
        store.delete_prefix(key)
        raise
    shutil.rmtree(folder, ignore_errors=True)


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
            if raw != f"{stem}.npy" or not is_array_name(stem) or stem in members:
                raise UploadError(
                    f"unexpected member {raw!r} in the archive; expected only "
                    f"{sorted(n + '.npy' for n in ARRAY_NAMES)}, or <array>/<name>.npy "
                    "for a model's named inputs and outputs, each once"
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


def is_array_name(stem: str) -> bool:
    """Whether ``stem`` names an array fitq reads: ``x``, ``y_val``, ``x/<input>``, ..."""
    prefix, _, name = stem.partition("/")
    return prefix in ARRAY_NAMES and (stem == prefix or NAME_RE.fullmatch(name) is not None)


Arrays = str | dict[str, str]  # one array's name, or array names by input or output name


@dataclass(frozen=True)
class SplitArrays:
    """The arrays of one split: inputs, labels and sample weights, each one array
    or one per named model input or output."""

    x: Arrays
    y: Arrays
    sample_weight: Arrays | None

    def stems(self) -> list[str]:
        return [s for a in (self.x, self.y, self.sample_weight) for s in _stems(a)]


def _stems(arrays: Arrays | None) -> list[str]:
    if arrays is None:
        return []
    return [arrays] if isinstance(arrays, str) else list(arrays.values())


def _arrays_of(stems: set[str], prefix: str) -> Arrays | None:
    named = {s.partition("/")[2]: s for s in sorted(stems) if s.startswith(prefix + "/")}
    if prefix in stems and named:
        raise UploadError(f"give {prefix!r} or {prefix}/<name> arrays, not both")
    return prefix if prefix in stems else (named or None)


def split_arrays(stems: set[str], split: str) -> SplitArrays | None:
    """The arrays of ``split`` among the archive's ``stems``; None when it has none."""
    (xn, yn), wn = SPLIT_ARRAYS[split], WEIGHT_ARRAYS[split]
    x, y, weights = (_arrays_of(stems, n) for n in (xn, yn, wn))
    if x is None and y is None:
        if weights is not None:
            raise UploadError(f"{wn} weighs {split} samples, but there is no {xn!r} and {yn!r}")
        return None
    if x is None or y is None:
        raise UploadError(
            f"{split} data needs both {xn!r} and {yn!r} (or {xn}/<input> and {yn}/<output>)"
        )
    if isinstance(weights, dict) and (not isinstance(y, dict) or set(weights) != set(y)):
        expected = sorted(y) if isinstance(y, dict) else []
        raise UploadError(
            f"received {sorted(weights)} in {wn}/<output>; expected one array per output "
            f"of {yn}: {expected} (or one {wn!r} array for every output)"
        )
    return SplitArrays(x, y, weights)


def _check_pairs(members: dict[str, Member]) -> None:
    stems = set(members)
    if _arrays_of(stems, "x") is None or _arrays_of(stems, "y") is None:
        raise UploadError(
            f"the archive holds {sorted(members)}; expected at least arrays "
            "'x' and 'y' (np.savez(file, x=..., y=...)), or x/<input> and y/<output>"
        )
    train = split_arrays(stems, "train")
    assert train is not None
    x_shapes = _sample_shapes(train.x, members)
    for split in SPLIT_ARRAYS:
        arrays = split_arrays(stems, split)
        if arrays is None:
            continue
        counts = {s: members[s].shape[0] for s in arrays.stems()}
        if len(set(counts.values())) > 1:
            raise UploadError(
                f"the {split} arrays hold different numbers of samples: {counts}; expected "
                "one label per sample (and one weight)"
            )
        for stem in _stems(arrays.sample_weight):
            if len(members[stem].shape) != 1:
                raise UploadError(
                    f"{stem} has shape {list(members[stem].shape)}; expected one weight per "
                    "sample, shape (n_samples,)"
                )
        shapes = _sample_shapes(arrays.x, members)
        if shapes != x_shapes:
            raise UploadError(
                f"the {split} inputs have sample shapes {shapes}, expected the training "
                f"inputs' {x_shapes}"
            )


def _sample_shapes(arrays: Arrays, members: dict[str, Member]) -> dict[str, list[int]]:
    if isinstance(arrays, str):
        return {arrays.partition("_")[0]: list(members[arrays].shape[1:])}
    return {name: list(members[stem].shape[1:]) for name, stem in arrays.items()}


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


def stored_stems(folder: Path) -> set[str]:
    """The arrays stored in a dataset's folder, by name (``x``, ``y/out``, ...)."""
    return {p.relative_to(folder).as_posix()[:-4] for p in folder.rglob("*.npy")}


def describe(folder: Path, max_classes: int) -> dict[str, Any]:
    """Per split: samples, shapes, dtypes, the labels' range, and a class histogram of
    labels that are class ids (integers in ``0 .. max_classes - 1``).

    Named inputs are described under ``inputs`` and named outputs under ``outputs``
    (by name: ``shape``, ``dtype`` and, for outputs, the labels' description);
    ``sample_weight`` is null, ``"all"`` (one array for every output) or the names of
    the outputs weighed.
    """
    info: dict[str, Any] = {}
    stems = stored_stems(folder)
    for split in SPLIT_ARRAYS:
        arrays = split_arrays(stems, split)
        if arrays is None:
            continue

        def load(stem: str) -> np.ndarray:
            array: np.ndarray = np.load(folder / f"{stem}.npy", mmap_mode="r", allow_pickle=False)
            return array

        first = load(_stems(arrays.x)[0])
        part: dict[str, Any] = {"n_samples": int(first.shape[0])}
        if isinstance(arrays.x, str):
            part |= {"x_shape": list(first.shape[1:]), "x_dtype": str(first.dtype)}
        else:
            part["inputs"] = {n: _shape_dtype(load(s)) for n, s in arrays.x.items()}
        if isinstance(arrays.y, str):
            y = load(arrays.y)
            part |= {"y_shape": list(y.shape[1:]), "y_dtype": str(y.dtype)}
            part |= label_stats(y, max_classes).as_info()
        else:
            part["outputs"] = {
                n: _shape_dtype(load(s)) | label_stats(load(s), max_classes).as_info()
                for n, s in arrays.y.items()
            }
        weights = arrays.sample_weight
        part["sample_weight"] = "all" if isinstance(weights, str) else weights and sorted(weights)
        part["bytes"] = sum(int(load(s).nbytes) for s in arrays.stems())
        info[split] = part
    return info


def _shape_dtype(array: np.ndarray) -> dict[str, Any]:
    return {"shape": list(array.shape[1:]), "dtype": str(array.dtype)}


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
    root: Path | None = None,
) -> tuple[str, int, str, dict[str, Any]]:
    """Streams ``upload`` to a new folder under the cap, hashing it; ``process(file,
    folder)`` checks and unpacks it there and returns its metadata. The folder, under
    ``root`` (the datasets' folder by default), becomes the upload's only when
    everything passed; nothing is left on disk otherwise. Returns the upload's id,
    its size and SHA-256, and the metadata.
    """
    root = root or datasets_dir(settings)
    root.mkdir(parents=True, exist_ok=True)
    upload_id = uuid.uuid4().hex
    incoming = root / f".incoming-{upload_id}"
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
        incoming.rename(root / upload_id)
        publish(settings, root / upload_id)
    except (
        UploadError,
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        OSError,
        ValueError,
        RuntimeError,  # an encrypted member
        NotImplementedError,  # a compression method zipfile does not read
    ) as exc:
        shutil.rmtree(incoming, ignore_errors=True)
        if isinstance(exc, UploadError):
            raise
        raise UploadError(f"the archive is damaged or truncated: {reason(exc)}") from exc
    except BaseException:
        shutil.rmtree(incoming, ignore_errors=True)
        raise
    return upload_id, size, digest.hexdigest(), info


def _process_npz(raw: Path, folder: Path, settings: Settings) -> dict[str, Any]:
    members = inspect_npz(raw, settings)
    with zipfile.ZipFile(raw) as archive:
        for name, member in members.items():
            # A named array (x/<input>) goes to a folder of its prefix; NAME_RE keeps
            # its name inside it.
            (folder / name).parent.mkdir(exist_ok=True)
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
