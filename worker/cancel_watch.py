"""Honours a cancel while a job prepares to train: loads its data, builds its model.

Inside ``fit()`` the reporting callback checks for a cancel between batches. Before
the first batch has run there is no such point: loading a large dataset or building a
large model (initialising hundreds of millions of weights, tracing the first step)
can take minutes inside TensorFlow, where a thread cannot be interrupted. So while a
job prepares, a watcher thread reads the job's cancel flag every ``interval``
seconds. Once a cancel is asked, it records the job ``cancelled`` (fenced by the
attempt, like every other write of it) and ends the pool process at once, which
gives back the memory the half-built model held; Celery starts a fresh process for
the next job. A redelivered message finds the job cancelled and leaves it alone.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from models.states import JobStatus, StopReason
from worker.jobstore import JobStore, LostOwnership

log = logging.getLogger("fitq.worker")
# The pool process's exit status after a cancel ended it: nothing went wrong.
CANCELLED_EXIT_STATUS = 0


class CancelWatch:
    """A context manager that watches for a cancel until ``stop()`` or its exit.

    Args:
        store: The attempt's job store (the claim is made).
        interval: Seconds between two reads of the cancel flag.
        log_path: The job's log, which gets a line saying why the job ended.
        ended: Called once the cancel is recorded, before the process ends (the
            job's retention: ``storage.retention.after_end``).
    """

    def __init__(
        self,
        store: JobStore,
        interval: float,
        log_path: Path,
        ended: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.interval = interval
        self.log_path = log_path
        self.ended = ended
        self._armed = True
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fitq-cancel-watch", daemon=True)

    def __enter__(self) -> CancelWatch:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stops watching: ``fit()`` checks for a cancel from now on. Idempotent.

        Should the watcher be recording a cancel at that moment, this waits until the
        process ends.
        """
        with self._lock:
            self._armed = False
        self._stopped.set()

    def _run(self) -> None:
        warned = False
        while not self._stopped.is_set():
            try:
                cancel = self.store.cancel_requested()
            except LostOwnership:
                return  # the job is another attempt's now; the training loop learns it too
            except Exception as exc:  # noqa: BLE001 - the database may be away; read again
                if not warned:
                    log.warning(
                        "job %s: could not read its cancel flag (%s); trying again",
                        self.store.job_id,
                        type(exc).__name__,
                    )
                    warned = True
                cancel = False
            if cancel:
                with self._lock:
                    if self._armed:
                        self._end()
                return
            self._stopped.wait(self.interval)

    def _end(self) -> None:
        """Records the job ``cancelled`` and ends this process without unwinding it."""
        job_id, pid = self.store.job_id, os.getpid()
        try:
            recorded = self.store.finish(JobStatus.CANCELLED, StopReason.CANCELLED)
        except Exception:  # noqa: BLE001 - the lease runs out; the dispatcher records it then
            log.exception("job %s: could not record the cancel", job_id)
            recorded = False
        if recorded and self.ended is not None:
            try:
                self.ended()
            except Exception:  # noqa: BLE001 - the process ends regardless
                log.exception("job %s: could not apply retention", job_id)
        line = (
            "fitq: cancelled while preparing to train (loading data or building the "
            f"model); pool process {pid} ends"
        )
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        except OSError:
            log.exception("job %s: could not write its log", job_id)
        log.warning(
            "job %s cancelled while preparing to train%s; ending pool process %d",
            job_id,
            "" if recorded else " (this attempt no longer owned it)",
            pid,
        )
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                continue
        os._exit(CANCELLED_EXIT_STATUS)
