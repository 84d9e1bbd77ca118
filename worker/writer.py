"""Writes a training attempt's reports from a background thread, in order.

Training never waits on the database. Epoch rows and checkpoint rows queue up and
are written in order; while the database does not answer they are retried every
``retry_seconds``, so an outage costs nothing but delay. In-epoch progress keeps
only its latest value. The same thread renews the attempt's lease. When a write
finds that the attempt no longer owns the job, the next report raises
``LostOwnership`` in the training loop, which then stops.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, ProgrammingError

from worker.jobstore import JobStore, LostOwnership

log = logging.getLogger("fitq.worker")
PERMANENT = (IntegrityError, ProgrammingError, DataError)


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, (DBAPIError, OSError)) and not isinstance(exc, PERMANENT)


class JobWriter:
    """A ``Sink`` for the reporting callback that never blocks training.

    Args:
        store: The attempt's job store.
        heartbeat_seconds: Seconds between lease renewals.
        retry_seconds: Seconds between retries while the database does not answer.
    """

    def __init__(self, store: JobStore, heartbeat_seconds: float, retry_seconds: float = 1.0):
        self.store = store
        self.heartbeat_seconds = heartbeat_seconds
        self.retry_seconds = retry_seconds
        self.cancel_requested = False
        self.lost = False
        self.error: BaseException | None = None
        self.outage_seconds = 0.0
        self._queue: deque[Callable[[], Any]] = deque()
        self._progress: tuple[int, int | None, int | None] | None = None
        self._cond = threading.Condition()
        self._stop = False
        self._busy = False
        self._next_beat = time.monotonic() + heartbeat_seconds
        self._thread = threading.Thread(target=self._run, name="fitq-writer", daemon=True)
        self._thread.start()

    # The Sink protocol (worker.training.reporting.Sink).
    def progress(self, epoch: int, step: int | None, steps: int | None) -> bool:
        self._raise_if_stopped()
        with self._cond:
            self._progress = (epoch, step, steps)
            self._cond.notify()
        return self.cancel_requested

    def record_epoch(self, *args: Any, **kwargs: Any) -> bool:
        self._raise_if_stopped()
        self._submit(lambda: self.store.record_epoch(*args, **kwargs))
        return self.cancel_requested

    def record_checkpoint(self, *args: Any, **kwargs: Any) -> None:
        self._raise_if_stopped()
        self._submit(lambda: self.store.record_checkpoint(*args, **kwargs))

    def record_class_weight(self, weights: dict[int, float]) -> None:
        self._raise_if_stopped()
        self._submit(lambda: self.store.record_class_weight(weights))

    def save_backup(self, write: Callable[[], Any]) -> None:
        self._raise_if_stopped()
        self._submit(write)

    def _raise_if_stopped(self) -> None:
        if self.lost:
            raise LostOwnership(self.store.job_id)
        if self.error is not None:
            raise self.error

    def _submit(self, write: Callable[[], Any]) -> None:
        with self._cond:
            self._queue.append(write)
            self._cond.notify()

    def call(self, write: Callable[[], Any]) -> Any:
        """Runs ``write`` after everything queued, retrying it through outages; waits."""
        box: dict[str, Any] = {}
        done = threading.Event()

        def wrapped() -> None:
            box["result"] = write()
            done.set()

        self._submit(wrapped)
        while not done.wait(0.2):
            self._raise_if_stopped()
        return box.get("result")

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=10)

    def _next_write(self) -> Callable[[], Any] | None:
        """The next write to make, waiting until there is one (or a stop)."""
        with self._cond:
            while not self._stop:
                if self._queue:
                    return self._queue[0]
                if self._progress is not None:
                    epoch, step, steps = self._progress
                    return lambda: self._progress_write(epoch, step, steps)
                wait = self._next_beat - time.monotonic()
                if wait <= 0:
                    return self._heartbeat
                self._cond.wait(wait)
            return None

    def _progress_write(self, epoch: int, step: int | None, steps: int | None) -> bool:
        with self._cond:
            if self._progress == (epoch, step, steps):
                self._progress = None
        return self.store.progress(epoch, step, steps)

    def _heartbeat(self) -> bool:
        return self.store.heartbeat()

    def _run(self) -> None:
        down_since: float | None = None
        while True:
            write = self._next_write()
            if write is None:
                return
            try:
                result = write()
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
                    log.exception("job %s: a write failed", self.store.job_id)
                    self.error = exc
                    return
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning(
                        "job %s: database unavailable (%s); retrying every %.1fs",
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
                    "job %s: database back after %.1fs",
                    self.store.job_id,
                    time.monotonic() - down_since,
                )
                down_since = None
            if isinstance(result, bool):
                self.cancel_requested = self.cancel_requested or result
            self._next_beat = time.monotonic() + self.heartbeat_seconds
            with self._cond:
                if self._queue and self._queue[0] is write:
                    self._queue.popleft()
