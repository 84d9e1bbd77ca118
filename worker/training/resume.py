"""Backups of a training attempt, so that the next attempt resumes where it stopped.

At every epoch end the model's and the optimizer's variables are copied (cheap, in
the training thread) and written to ``backup/epoch-NNNNNN.npz`` by the writer
thread, atomically (a temporary file, fsync, rename), before that epoch's row is
written: an epoch the database has recorded always has its backup. The callbacks'
state (EarlyStopping, ModelCheckpoint, ReduceLROnPlateau) goes into the epoch's
row. A backup that does not load (half-written, corrupt, the wrong shapes) is
skipped for the one before it.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

log = logging.getLogger("fitq.worker")
BACKUP_DIR = "backup"
KEEP = 3
_NAME = re.compile(r"^epoch-(\d{6})\.npz$")


@dataclass
class Snapshot:
    epoch: int
    arrays: dict[str, np.ndarray]


def _optimizer_variables(model: keras.Model) -> list[Any]:
    optimizer = model.optimizer
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    return list(optimizer.variables)


def snapshot(model: keras.Model, epoch: int, callbacks: list[Any]) -> Snapshot:
    """Copies what a resumed attempt needs after ``epoch`` (1-based) has ended."""
    arrays = {f"m{i}": np.array(v) for i, v in enumerate(model.variables)}
    arrays.update({f"o{i}": np.array(v) for i, v in enumerate(_optimizer_variables(model))})
    for c, cb in enumerate(callbacks):
        weights = getattr(cb, "best_weights", None)
        if isinstance(cb, keras.callbacks.EarlyStopping) and weights is not None:
            arrays.update({f"es{c}_{i}": np.asarray(w) for i, w in enumerate(weights)})
    return Snapshot(epoch, arrays)


def write_backup(job_dir: Path, snap: Snapshot) -> Path:
    folder = job_dir / BACKUP_DIR
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"epoch-{snap.epoch:06d}.npz"
    tmp = folder / f".tmp-{snap.epoch:06d}-{os.getpid()}.npz"
    with open(tmp, "wb") as f:
        np.savez(f, **snap.arrays)  # type: ignore[arg-type]
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    for old in sorted(p for p in folder.iterdir() if _NAME.match(p.name))[:-KEEP]:
        old.unlink(missing_ok=True)
    return final


def _scalar(value: Any) -> float | None:
    if value is None:
        return None
    out = float(np.asarray(value))
    return out if np.isfinite(out) else None


def callback_state(callbacks: list[Any]) -> dict[str, Any]:
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
    candidates = sorted(
        (int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))
    )
    n_model, n_opt = len(model.variables), len(_optimizer_variables(model))
    for epoch, path in reversed(candidates):
        if epoch > max_epoch:
            continue
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
            _check(model, arrays, n_model, n_opt)
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


def _check(model: keras.Model, arrays: dict[str, np.ndarray], n_model: int, n_opt: int) -> None:
    for i, v in enumerate(model.variables):
        if arrays[f"m{i}"].shape != tuple(v.shape):
            raise ValueError(
                f"variable {v.path} has shape {tuple(v.shape)}, backup {arrays[f'm{i}'].shape}"
            )
    if f"m{n_model}" in arrays or f"o{n_opt - 1}" not in arrays or f"o{n_opt}" in arrays:
        raise ValueError("the backup holds a different number of variables")


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

    def __init__(self, callbacks: list[Any], state: dict[str, Any], snap: Snapshot) -> None:
        super().__init__()
        self.targets = callbacks
        self.state = state
        self.snap = snap

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
