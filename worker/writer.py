"""Writes a training attempt's reports from a background thread, in order.

Training never waits on the database. Epoch rows and checkpoint rows queue up and
are written in order; while the database does not answer they are retried every
``retry_seconds``, so an outage costs nothing but delay. In-epoch progress keeps
only its latest value. The same thread renews the attempt's lease. When a write
finds that the attempt no longer owns the job, the next report raises
``LostOwnership`` in the training loop, which then stops. Any other error (a
backup that cannot be written, a value the database refuses) is not an outage: the
writes queued behind it are dropped, and the next report raises that error in the
training loop, so the job fails with it at once.

With a remote artifact store, the same thread uploads each checkpoint before its row
and each backup as it is written (``storage.artifacts.JobFiles``), so a recorded
checkpoint is always in the store and training never waits on an upload. A store that
does not answer (``storage.artifacts.store_unavailable``) is waited out like the
database: the upload, and the rows queued behind it, are tried again.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    ProgrammingError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from storage.artifacts import JobFiles, store_unavailable
from worker.jobstore import JobStore, LostOwnership
from worker.thread_names import name_this_thread

log = logging.getLogger("fitq.worker")
T = TypeVar("T")
PERMANENT = (IntegrityError, ProgrammingError, DataError)
# What a database that does not answer raises: the driver's errors as SQLAlchemy wraps
# them, a connection the pool found dead, a pool with no free connection, a socket.
UNAVAILABLE = (DBAPIError, DisconnectionError, PoolTimeoutError, ConnectionError)


def _transient(exc: BaseException) -> bool:
    """Whether ``exc`` says the database or the artifact store is unavailable (worth
    retrying), not that the write itself is wrong."""
    if store_unavailable(exc):
        return True
    return isinstance(exc, UNAVAILABLE) and not isinstance(exc, PERMANENT)


@dataclass(eq=False)
class _Write:
    """One queued write; ``final`` ones (the job's outcome) run even after a failure."""

    run: Callable[[], object]
    final: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    result: object = None
    error: BaseException | None = None


class JobWriter:
    """A ``Sink`` for the reporting callback that never blocks training.

    Args:
        store: The attempt's job store.
        heartbeat_seconds: Seconds between lease renewals.
        retry_seconds: Seconds between retries while the database or the artifact store
            does not answer.
        files: The job's artifacts: a checkpoint goes to the store before its row is
            written, a backup as soon as it is. None: they stay where they are written.
        live_seconds: With a remote store, the least seconds between two uploads of the
            job's log, TensorBoard and CSV files while it trains (``JobFiles.put_live``,
            at an epoch's end or an in-epoch progress report); 0: only when it ends.
    """

    def __init__(
        self,
        store: JobStore,
        heartbeat_seconds: float,
        retry_seconds: float = 1.0,
        files: JobFiles | None = None,
        live_seconds: float = 0.0,
    ):
        self.store = store
        self.files = files
        self.live_seconds = live_seconds
        self._next_live = time.monotonic() + live_seconds
        self._live_queued = threading.Event()  # a put_live is in the queue
        self.heartbeat_seconds = heartbeat_seconds
        self.retry_seconds = retry_seconds
        self.cancel_requested = False
        self.lost = False
        self.error: BaseException | None = None
        self.outage_seconds = 0.0
        self._queue: deque[_Write] = deque()
        self._progress: tuple[int, int | None, int | None] | None = None
        self._cond = threading.Condition()
        self._stop = False
        self._next_beat = time.monotonic() + heartbeat_seconds
        self._thread = threading.Thread(target=self._run, name="fitq-writer", daemon=True)
        self._thread.start()

    # The Sink protocol (worker.training.reporting.Sink).
    def progress(self, epoch: int, step: int | None, steps: int | None) -> bool:
        self._raise_if_stopped()
        with self._cond:
            self._progress = (epoch, step, steps)
            self._cond.notify()
        self._put_live_when_due()
        return self.cancel_requested

    def record_epoch(
        self,
        epoch: int,
        metrics: dict[str, float | None],
        lr: float | None,
        duration_s: float,
        best: dict[str, Any] | None,
        callback_state: dict[str, Any] | None = None,
    ) -> bool:
        write = functools.partial(
            self.store.record_epoch, epoch, metrics, lr, duration_s, best, callback_state
        )
        with self._cond:
            # The epoch's row marks the epoch complete: progress inside it, still
            # unwritten, would show it unfinished again (or, after the last epoch, be
            # written once the job has ended).
            if self._progress is not None and self._progress[0] <= epoch:
                self._progress = None
        self._submit(_Write(write))
        self._put_live_when_due()
        return self.cancel_requested

    def _put_live_when_due(self) -> None:
        files = self.files
        if files is None or not files.store.remote or self.live_seconds <= 0:
            return
        now = time.monotonic()
        if now >= self._next_live and not self._live_queued.is_set():
            self._next_live = now + self.live_seconds
            self._live_queued.set()
            self._submit(_Write(functools.partial(self._put_live, files)))

    def _put_live(self, files: JobFiles) -> None:
        # Optional and late anyway: an upload that fails is logged and skipped, never
        # retried ahead of the rows queued behind it, and never fails the job; the next
        # one (or the job's end) sends the files again.
        try:
            files.put_live()
        except Exception:  # noqa: BLE001 - see above
            log.warning("job %s: live files not uploaded", self.store.job_id, exc_info=True)
        finally:
            self._live_queued.clear()

    def record_checkpoint(
        self,
        epoch: int,
        path: str,
        monitor: str | None,
        value: float | None,
        is_best: bool,
        size_bytes: int,
    ) -> None:
        files = self.files
        if files is not None and (staged := files.stage(files.folder / path)) is not None:
            self._submit(_Write(functools.partial(files.put_staged, staged, path)))
        write = functools.partial(
            self.store.record_checkpoint, epoch, path, monitor, value, is_best, size_bytes
        )
        self._submit(_Write(write))

    def record_class_weight(self, weights: dict[int, float]) -> None:
        self._submit(_Write(lambda: self.store.record_class_weight(weights)))

    def save_backup(self, write: Callable[[], object]) -> None:
        files = self.files
        if files is None or not files.store.remote:
            self._submit(_Write(write))
            return

        def write_and_put() -> None:
            path = write()
            assert isinstance(path, Path), "a backup's writer returns the file it wrote"
            files.put_backup(path)

        self._submit(_Write(write_and_put))

    def flush(self) -> None:
        """Waits until everything reported so far is written; raises what a write raised."""
        self.call(lambda: None)

    def _raise_if_stopped(self) -> None:
        if self.lost:
            raise LostOwnership(self.store.job_id)
        if self.error is not None:
            raise self.error

    def _submit(self, write: _Write) -> None:
        with self._cond:
            if self.lost:
                raise LostOwnership(self.store.job_id)
            if self.error is not None and not write.final:
                raise self.error
            self._queue.append(write)
            self._cond.notify()

    def call(self, write: Callable[[], T], final: bool = False) -> T:
        """Runs ``write`` after everything queued, retrying it through outages; waits.

        Raises what ``write`` raised, or the error of a write queued before it (then
        ``write`` does not run). A ``final`` write (the job's outcome) runs even after
        another write failed.
        """
        item = _Write(write, final)
        self._submit(item)
        while not item.done.wait(0.2):
            if self.lost:
                raise LostOwnership(self.store.job_id)
        if item.error is not None:
            raise item.error
        return cast(T, item.result)  # what ``write`` returned

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=10)

    def _next_write(self) -> _Write | None:
        """The next write to make, waiting until there is one (or a stop)."""
        with self._cond:
            while not self._stop:
                if self._queue:
                    return self._queue[0]
                if self._progress is not None:
                    return _Write(functools.partial(self._progress_write, *self._progress))
                wait = self._next_beat - time.monotonic()
                if wait <= 0:
                    return _Write(self.store.heartbeat)
                self._cond.wait(wait)
            return None

    def _progress_write(self, epoch: int, step: int | None, steps: int | None) -> bool:
        with self._cond:
            if self._progress == (epoch, step, steps):
                self._progress = None
        return self.store.progress(epoch, step, steps)

    def _failed(self, write: _Write, exc: Exception) -> None:
        """Fails ``write`` and every queued write but the final ones, with ``exc``."""
        log.error(
            "job %s: a write failed (%s: %s); the job fails with it",
            self.store.job_id,
            type(exc).__name__,
            exc,
        )
        with self._cond:
            if self.error is None:
                self.error = exc
            self._progress = None
            write.error = exc
            write.done.set()
            kept: deque[_Write] = deque()
            for queued in self._queue:
                if queued is write:
                    continue
                if queued.final:
                    kept.append(queued)
                else:
                    queued.error = self.error
                    queued.done.set()
            self._queue = kept

    def _done(self, write: _Write, result: object) -> None:
        if isinstance(result, bool):
            self.cancel_requested = self.cancel_requested or result
        self._next_beat = time.monotonic() + self.heartbeat_seconds
        with self._cond:
            if self._queue and self._queue[0] is write:
                self._queue.popleft()
        write.result = result
        write.done.set()

    def _run(self) -> None:
        name_this_thread(self._thread.name)
        down_since: float | None = None
        while True:
            write = self._next_write()
            if write is None:
                return
            try:
                result = write.run()
            except LostOwnership:
                log.warning(
                    "job %s: attempt %s lost its claim", self.store.job_id, self.store.attempt
                )
                self.lost = True
                with self._cond:
                    self._queue.clear()
                return
            except Exception as exc:  # noqa: BLE001 - classified below
                if not _transient(exc):
                    down_since = None
                    self._failed(write, exc)
                    continue
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning(
                        "job %s: database or artifact store unavailable (%s); retrying every %.1fs",
                        self.store.job_id,
                        type(exc).__name__,
                        self.retry_seconds,
                    )
                with self._cond:
                    self._cond.wait(self.retry_seconds)
                continue
            if down_since is not None:
                self.outage_seconds += time.monotonic() - down_since
                log.warning(
                    "job %s: database or artifact store back after %.1fs",
                    self.store.job_id,
                    time.monotonic() - down_since,
                )
                down_since = None
            self._done(write, result)
