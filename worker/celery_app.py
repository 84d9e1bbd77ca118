"""The worker's Celery app: fitq's shared configuration plus the task module.

TensorFlow is imported only in the pool's child processes (``worker_process_init``),
never in the Celery parent, so a crash while training takes down one child only.
When the parent is told to stop (SIGTERM: a deploy, a preemption notice), it asks
its children with SIGUSR2 to put their jobs back in the queue at the next batch.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

from celery.signals import worker_process_init, worker_shutting_down

from models.queueing import make_celery
from models.settings import get_settings

app = make_celery(get_settings(), name="fitq-worker")
app.conf.include = ["worker.tasks"]
log = logging.getLogger("fitq.worker")


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _warm_up(**_: Any) -> None:
    from worker.training.reporting import PREEMPT

    signal.signal(signal.SIGUSR2, lambda *_: PREEMPT.set())
    # Pay tensorflow's import before a job arrives, so training starts at once.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras  # noqa: F401
    import sklearn.datasets  # noqa: F401
    import tensorflow  # noqa: F401

    import worker.training.runner  # noqa: F401


def _children() -> list[int]:
    pids: list[int] = []
    for task in Path(f"/proc/{os.getpid()}/task").glob("*"):
        try:
            pids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return pids


@worker_shutting_down.connect  # type: ignore[untyped-decorator]
def _preempt_children(**_: Any) -> None:
    for pid in _children():
        try:
            os.kill(pid, signal.SIGUSR2)
        except ProcessLookupError:
            continue
        log.info("asked pool process %s to put its job back in the queue", pid)
