"""Backups of a training attempt, so that the next attempt resumes where it stopped.

At every epoch end the model's and the optimizer's variables are read (one
read op each, in the training thread: tensors that keep that epoch's values) and
converted and written to ``backup/epoch-NNNNNN.bin`` by the writer
thread, atomically (a temporary file, fsync, rename), before that epoch's row is
written: an epoch the database has recorded always has its backup. The file is a
JSON header (names, dtypes, shapes, a CRC-32 of the data) and the arrays' raw bytes:
a few large writes, where ``np.savez`` would cost a zip entry per array. The callbacks'
state (EarlyStopping, ModelCheckpoint, ReduceLROnPlateau) goes into the epoch's
row. A backup that does not load (half-written, corrupt, the wrong shapes) is
skipped for the one before it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from typing_extensions import override

from models.file_names import BACKUP_DIR

log = logging.getLogger("fitq.worker")
KEEP = 3
_NAME = re.compile(r"^epoch-(\d{6})\.(bin|npz)$")  # .npz: by earlier fitq
_MAGIC = b"FITQBAK1"
_HEADER_SIZE = struct.Struct("<QI")  # the header's length and its CRC-32


@dataclass
class Snapshot:
    """A model's state after ``epoch``: numpy arrays, or tensors that hold those values."""

    epoch: int
    arrays: dict[str, Any]


def _optimizer_variables(model: keras.Model) -> list[Any]:
    optimizer = model.optimizer
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    return list(optimizer.variables)


def current_value(variable: Any) -> Any:
    """The variable's current value, as a tensor that later assignments do not change.

    One read op, without Keras' and numpy's conversions (about a tenth of their cost on
    the training thread); the writer thread turns it into numpy. A value on an
    accelerator is copied to host memory here, so that backups waiting for the writer
    (a database outage) never hold device memory; so is a distribution strategy's.
    """
    raw = getattr(variable, "value", variable)
    if isinstance(raw, tf.Variable) and not isinstance(raw, tf.distribute.DistributedValues):
        value = tf.raw_ops.ReadVariableOp(resource=raw.handle, dtype=raw.dtype)
        return value if "CPU" in value.device else value.numpy()
    return np.array(variable)


def snapshot(model: keras.Model, epoch: int, callbacks: list[keras.callbacks.Callback]) -> Snapshot:
    """Takes what a resumed attempt needs after ``epoch`` (1-based) has ended."""
    arrays = {f"m{i}": current_value(v) for i, v in enumerate(model.variables)}
    arrays.update({f"o{i}": current_value(v) for i, v in enumerate(_optimizer_variables(model))})
    for c, cb in enumerate(callbacks):
        weights = getattr(cb, "best_weights", None)
        if isinstance(cb, keras.callbacks.EarlyStopping) and weights is not None:
            arrays.update({f"es{c}_{i}": np.asarray(w) for i, w in enumerate(weights)})
    return Snapshot(epoch, arrays)


def write_backup(job_dir: Path, snap: Snapshot) -> Path:
    """Writes ``snap`` as the job's newest backup (atomically); keeps the last ``KEEP``."""
    folder = job_dir / BACKUP_DIR
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"epoch-{snap.epoch:06d}.bin"
    tmp = folder / f".tmp-{snap.epoch:06d}-{os.getpid()}"
    arrays = {name: _contiguous(value) for name, value in snap.arrays.items()}
    crc = 0
    for array in arrays.values():
        crc = zlib.crc32(_bytes(array), crc)
    header = json.dumps(
        {
            "epoch": snap.epoch,
            "crc32": crc,
            "arrays": [[n, _dtype_name(a.dtype), list(a.shape)] for n, a in arrays.items()],
        }
    ).encode()
    with open(tmp, "wb") as f:
        f.write(_MAGIC + _HEADER_SIZE.pack(len(header), zlib.crc32(header)) + header)
        for array in arrays.values():
            f.write(_bytes(array))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    for _, _, old in _backups(folder)[:-KEEP]:
        old.unlink(missing_ok=True)
    return final


def _backups(folder: Path) -> list[tuple[int, bool, Path]]:
    """The folder's backups, oldest first; of one epoch's two, the .npz an older fitq left
    before the .bin."""
    return sorted(
        (int(m.group(1)), m.group(2) == "bin", p)
        for p in folder.iterdir()
        if (m := _NAME.match(p.name))
    )


def _dtype_name(dtype: np.dtype[Any]) -> str:
    # bfloat16 and the other ml_dtypes types have no distinct dtype.str ('<V2').
    return dtype.name if dtype.kind == "V" else dtype.str


def _dtype(name: str) -> np.dtype[Any]:
    try:
        return np.dtype(name)
    except TypeError:
        import ml_dtypes

        found: np.dtype[Any] = np.dtype(getattr(ml_dtypes, name))
        return found


def _contiguous(value: Any) -> np.ndarray:
    array = np.asarray(value)
    return array if array.flags.c_contiguous else array.copy()


def _bytes(array: np.ndarray) -> memoryview:
    """The array's bytes without a copy."""
    return array.reshape(-1).view(np.uint8).data


def read_backup(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a backup file; ``ValueError`` when it is truncated or corrupt."""
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    blob = path.read_bytes()
    start = len(_MAGIC) + _HEADER_SIZE.size
    if len(blob) < start or not blob.startswith(_MAGIC):
        raise ValueError("not a fitq backup, or cut short")
    size, header_crc = _HEADER_SIZE.unpack_from(blob, len(_MAGIC))
    if zlib.crc32(blob[start : start + size]) != header_crc:
        raise ValueError("the header does not match its CRC-32")
    header = json.loads(blob[start : start + size])
    offset, arrays = start + size, {}
    for name, dtype, shape in header["arrays"]:
        dt = _dtype(dtype)
        if dt.hasobject:
            raise ValueError(f"{name}: object arrays are not backups")
        count = int(np.prod(shape, dtype=np.int64))
        arrays[name] = np.frombuffer(blob, dt, count, offset).reshape(shape)
        offset += count * dt.itemsize
    if offset != len(blob):
        raise ValueError(f"{len(blob) - offset:+d} bytes against the header")
    if zlib.crc32(memoryview(blob)[start + size :]) != header["crc32"]:
        raise ValueError("the data does not match its CRC-32")
    return arrays


def _scalar(value: Any) -> float | None:
    if value is None:
        return None
    out = float(np.asarray(value))
    return out if np.isfinite(out) else None


def callback_state(callbacks: list[keras.callbacks.Callback]) -> dict[str, Any]:
    """The state of the monitoring callbacks, by their index in the spec."""
    state: dict[str, Any] = {}
    for i, cb in enumerate(callbacks):
        if isinstance(cb, keras.callbacks.EarlyStopping):
            state[str(i)] = {
                "wait": int(cb.wait),
                "best": _scalar(cb.best),
                "best_epoch": int(cb.best_epoch),
                "stopped_epoch": int(cb.stopped_epoch),
            }
        elif isinstance(cb, keras.callbacks.ReduceLROnPlateau):
            state[str(i)] = {
                "wait": int(cb.wait),
                "best": _scalar(cb.best),
                "cooldown_counter": int(cb.cooldown_counter),
            }
        elif isinstance(cb, keras.callbacks.ModelCheckpoint):
            state[str(i)] = {"best": _scalar(cb.best)}
    return state


def load_backup(job_dir: Path, model: keras.Model, max_epoch: int) -> Snapshot | None:
    """The newest backup of an epoch <= ``max_epoch`` that loads and fits the model."""
    folder = job_dir / BACKUP_DIR
    if not folder.is_dir():
        return None
    candidates = _backups(folder)
    for epoch, _, path in reversed(candidates):
        if epoch > max_epoch:
            continue
        try:
            arrays = read_backup(path)
            _check(model, arrays)
        except Exception as exc:  # noqa: BLE001 - any unreadable backup is skipped
            log.warning(
                "backup %s is unusable (%s: %s); trying an older one",
                path.name,
                type(exc).__name__,
                exc,
            )
            continue
        return Snapshot(epoch, arrays)
    return None


def _check(model: keras.Model, arrays: dict[str, np.ndarray]) -> None:
    """Raises ``ValueError`` unless the backup holds exactly the model's and the
    optimizer's variables, with their shapes and dtypes."""
    for prefix, variables in (("m", model.variables), ("o", _optimizer_variables(model))):
        for i, v in enumerate(variables):
            array = arrays.get(f"{prefix}{i}")
            if array is None:
                raise ValueError("the backup holds fewer variables than the model")
            if array.shape != tuple(v.shape) or array.dtype.name != v.dtype:
                raise ValueError(
                    f"variable {v.path} is {v.dtype}{list(v.shape)}, "
                    f"the backup {array.dtype.name}{list(array.shape)}"
                )
        if f"{prefix}{len(variables)}" in arrays:
            raise ValueError("the backup holds more variables than the model")


def restore(model: keras.Model, snap: Snapshot) -> None:
    """Puts the backup's weights and optimizer state into ``model``."""
    for i, v in enumerate(model.variables):
        v.assign(snap.arrays[f"m{i}"])
    for i, v in enumerate(_optimizer_variables(model)):
        v.assign(snap.arrays[f"o{i}"])


class StateRestorer(keras.callbacks.Callback):  # type: ignore[misc]
    """Sets the monitoring callbacks' state after their own ``on_train_begin`` reset it.

    Goes after them in the callback list.
    """

    def __init__(
        self, callbacks: list[keras.callbacks.Callback], state: dict[str, Any], snap: Snapshot
    ) -> None:
        super().__init__()
        self.targets = callbacks
        self.state = state
        self.snap = snap

    @override
    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        for i, cb in enumerate(self.targets):
            saved = self.state.get(str(i))
            if not saved:
                continue
            for key, value in saved.items():
                setattr(cb, key, value)
            if isinstance(cb, keras.callbacks.EarlyStopping):
                prefix = f"es{i}_"
                keys = sorted(
                    (k for k in self.snap.arrays if k.startswith(prefix)),
                    key=lambda k: int(k[len(prefix) :]),
                )
                cb.best_weights = [self.snap.arrays[k] for k in keys] or None
