"""The reporting callback: writes each epoch, each checkpoint and in-epoch progress.

It goes last in the callback list, so at an epoch's end it sees what EarlyStopping
and ModelCheckpoint did in that epoch. Between batches it does nothing but read a
clock unless ``interval`` seconds have passed.
"""

from __future__ import annotations

import functools
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import keras
import numpy as np
from typing_extensions import override

from checks.monitor import Direction, direction, improves
from worker.training.resume import callback_state, current_value, snapshot, write_backup


class JobCancelled(Exception):
    """A cancel was requested for the running job."""


class MaxRuntimeExceeded(Exception):
    """The job ran past its ``max_runtime_seconds``."""


class Preempted(Exception):
    """The worker is stopping (SIGTERM): the job goes back to the queue."""


# Set by the worker's SIGUSR2 handler when its Celery parent is shutting down.
PREEMPT = threading.Event()


class Sink(Protocol):
    """Where the callback reports: ``worker.writer.JobWriter``, or a list in a test.

    ``progress`` and ``record_epoch`` return whether a cancel was requested.
    ``record_epoch``'s ``lr`` is the rate the epoch trained with: the optimizer's rate
    when the epoch began (with a schedule, the rate of its first step). Writes
    happen in the order they are made: an epoch's checkpoints and backup before its
    row, so a recorded epoch always has them. ``flush`` waits for them all.
    """

    def save_backup(self, write: Callable[[], object]) -> None: ...

    def flush(self) -> None:
        """Waits until everything reported is written; raises what a write raised."""

    def record_class_weight(self, weights: dict[int, float]) -> None: ...

    def progress(self, epoch: int, step: int | None, steps: int | None) -> bool: ...

    def record_epoch(
        self,
        epoch: int,
        metrics: dict[str, float | None],
        lr: float | None,
        duration_s: float,
        best: dict[str, Any] | None,
        callback_state: dict[str, Any] | None = None,
    ) -> bool: ...

    def record_checkpoint(
        self,
        epoch: int,
        path: str,
        monitor: str | None,
        value: float | None,
        is_best: bool,
        size_bytes: int,
    ) -> None: ...


@dataclass
class _Watched:
    callback: keras.callbacks.ModelCheckpoint
    template: str
    direction: Direction
    best: float | None = None


def _number(value: Any) -> float | None:
    out = float(np.asarray(value))
    return out if math.isfinite(out) else None


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class ReportingCallback(keras.callbacks.Callback):  # type: ignore[misc]
    """Reports a job's training to a ``Sink``.

    Args:
        sink: Receives epochs, checkpoints and progress.
        job_dir: The job's folder; checkpoint paths are recorded relative to it.
        checkpoints: The job's ModelCheckpoint callbacks, to see which files they write.
        monitor: The metric whose best epoch the job shows, and its ``mode``.
        directions: Which way each compiled metric improves, by the name it logs
            under (``checks.monitor.metric_directions``); decides ``best`` and
            ``is_best`` by Keras' own rule.
        interval: Least seconds between two progress writes (each also checks for a
            cancel). Defaults to 1.
        deadline: ``time.monotonic()`` past which training stops. Defaults to none.
        clock: The clock, ``time.monotonic`` unless a test gives another.
        backup_callbacks: The spec's Keras callbacks, whose state goes with each
            epoch's backup; ``None`` to take no backups.
    """

    # Keras may then run the batch hooks on its callback threads, so the training loop
    # does not wait for each batch's logs, as it doesn't in a bare fit(). What they
    # raise (a cancel, a preemption, the deadline) reaches the loop at the next batch.
    async_safe = True

    def __init__(
        self,
        sink: Sink,
        job_dir: Path,
        checkpoints: list[keras.callbacks.ModelCheckpoint],
        monitor: tuple[str, str],
        directions: dict[str, Direction],
        interval: float = 1.0,
        deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        backup_callbacks: list[keras.callbacks.Callback] | None = None,
    ) -> None:
        super().__init__()
        self.sink = sink
        self.job_dir = job_dir
        self.watched = [
            _Watched(cb, cb.filepath, direction(cb.monitor, cb.mode, directions))
            for cb in checkpoints
        ]
        self.monitor, self.monitor_direction = monitor[0], direction(*monitor, directions)
        self.best: dict[str, Any] | None = None
        self.interval = interval
        self.deadline = deadline
        self.clock = clock
        self.epoch = 0
        self.steps: int | None = None
        self._epoch_start = 0.0
        self._epoch_lr: float | None = None
        self._last_report = -math.inf
        self._report_lock = threading.Lock()
        self._seen: dict[str, tuple[int, int, int] | None] = {}
        self.stopped_by: JobCancelled | MaxRuntimeExceeded | None = None
        self.backup_callbacks = backup_callbacks

    @override
    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.steps = self.params.get("steps") if self.params else None

    @override
    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch = epoch + 1
        # The rate this epoch trains with, read before its first step: after the
        # callbacks that set it (LearningRateScheduler, which goes before this one)
        # and before those that change it at the epoch's end (ReduceLROnPlateau).
        self._epoch_lr = self._learning_rate()
        self._report_progress(0)
        self._epoch_start = time.perf_counter()

    @override
    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if PREEMPT.is_set():
            raise Preempted()
        self._report_progress(batch + 1)

    def restore_state(self, state: dict[str, Any]) -> None:
        """Continues the best-so-far bookkeeping of an earlier attempt."""
        self.best = state.get("best")
        for watched, best in zip(self.watched, state.get("watched", []), strict=False):
            watched.best = best

    def _report_progress(self, step: int) -> None:
        # At most one progress write (and cancel check) per interval; epoch ends
        # check for a cancel through record_epoch anyway.
        with self._report_lock:
            now = self.clock()
            if now - self._last_report < self.interval:
                return
            self._last_report = now
            cancelled = self.sink.progress(self.epoch, step, self.steps)
        self._check(cancelled)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        duration = time.perf_counter() - self._epoch_start
        logs = logs or {}
        metrics = {key: _number(value) for key, value in logs.items()}
        self._update_best(metrics)
        for watched in self.watched:
            self._record_checkpoint(watched, epoch, logs, metrics)
        state: dict[str, Any] | None = None
        if self.backup_callbacks is not None:
            state = callback_state(self.backup_callbacks)
            state["reporter"] = {"best": self.best, "watched": [w.best for w in self.watched]}
            snap = snapshot(self.model, self.epoch, self.backup_callbacks)
            self.sink.save_backup(functools.partial(write_backup, self.job_dir, snap))
        # The epoch's row goes last: a recorded epoch has its checkpoints and backup.
        cancelled = self.sink.record_epoch(
            self.epoch, metrics, self._epoch_lr, duration, self.best, state
        )
        try:
            self._check(cancelled)
        except (JobCancelled, MaxRuntimeExceeded) as stop:
            # The epoch is complete and recorded: let the other callbacks finish it
            # (the log line, TensorBoard) and stop before the next one.
            self.stopped_by = stop
            self.model.stop_training = True

    def _check(self, cancel_requested: bool) -> None:
        if cancel_requested:
            raise JobCancelled()
        if self.deadline is not None and self.clock() > self.deadline:
            raise MaxRuntimeExceeded()

    def _learning_rate(self) -> float | None:
        """The optimizer's rate now: with a schedule, the rate of the step it takes next."""
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None:
            return None
        rate = optimizer.learning_rate  # the variable itself, unless a schedule computes it
        if isinstance(rate, keras.Variable):
            # One read op: a quarter of what Keras' conversion costs on the training thread.
            return _number(current_value(rate))
        return _number(keras.ops.convert_to_numpy(rate))

    def _update_best(self, metrics: dict[str, float | None]) -> None:
        value = metrics.get(self.monitor)
        if value is None:
            return
        if improves(value, self.best["value"] if self.best else None, self.monitor_direction):
            self.best = {"epoch": self.epoch, "monitor": self.monitor, "value": value}

    def _record_checkpoint(
        self, watched: _Watched, epoch: int, logs: dict[str, Any], metrics: dict[str, float | None]
    ) -> None:
        try:
            path = Path(watched.template.format(epoch=epoch + 1, **logs))
        except (KeyError, ValueError, IndexError):
            return
        key = str(path)
        before = self._seen.get(key)
        now = _stat(path)
        if now is None or now == before:
            return
        self._seen[key] = now
        cb = watched.callback
        value = metrics.get(cb.monitor)
        is_best = False
        if value is not None:
            is_best = improves(value, watched.best, watched.direction)
            if is_best:
                watched.best = value
        rel = os.path.relpath(path, self.job_dir)
        self.sink.record_checkpoint(self.epoch, rel, cb.monitor, value, is_best, now[2])
