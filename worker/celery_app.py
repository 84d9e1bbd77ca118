"""The worker's Celery app: fitq's shared configuration plus the task module.

TensorFlow is imported only in the pool's child processes (``worker_process_init``),
never in the Celery parent, so a crash while training takes down one child only.
When the parent is told to stop (SIGTERM: a deploy, a preemption notice), it asks
its children with SIGUSR2 to put their jobs back in the queue at the next batch.
The parent keeps the worker's row in the ``workers`` table (``worker.registry``).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from celery.signals import (
    task_prerun,
    worker_process_init,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)

from core.settings import get_settings
from queueing.broker import make_celery
from queueing.devices import Devices
from worker.registry import Identity, Registration

app = make_celery(get_settings(), name="fitq-worker")
app.conf.include = ["worker.tasks"]
log = logging.getLogger("fitq.worker")

# Set in the parent once it is told to stop. A pool process that exits meanwhile (the
# one that put its job back) is replaced by the pool all the same; the replacement is
# forked from the parent, inherits this, and skips the warm-up: it will get no job, and
# the parent's shutdown waits for it to exit.
_stopping = False


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _warm_up(**_: Any) -> None:
    # Held back until a job's handler is in place (``_listen_for_preemption``): the
    # parent may ask as soon as the job is handed over, before it starts. Threads
    # started from here on (TensorFlow's) inherit the block, so the signal goes to the
    # main thread once it unblocks it.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
    if _stopping:
        return
    # Pay tensorflow's import before a job arrives, so training starts at once.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from worker.devices import configure

    # Before anything makes TensorFlow initialise its devices.
    settings = get_settings()
    configure(settings.logical_cpus)
    import keras  # noqa: F401
    import sklearn.datasets  # noqa: F401

    from worker.training.runner import warm_up

    if not settings.worker_warm_up:
        return
    # And the first fit()'s own costs, so that the job's first epoch starts sooner.
    started = time.monotonic()
    try:
        warm_up()
    except Exception:  # a job still runs; it pays those costs itself
        log.exception("the warm-up fit failed")
    else:
        log.info("pool process %d warmed up in %.2f s", os.getpid(), time.monotonic() - started)


@task_prerun.connect  # type: ignore[untyped-decorator]
def _listen_for_preemption(**_: Any) -> None:
    # In the pool process, as each job starts. Not at the process's start: billiard
    # sets every terminating signal, SIGUSR2 among them, to its own exit handler
    # after ``worker_process_init`` has run, and the process would exit (status 70)
    # instead of putting its job back.
    from worker.training.reporting import PREEMPT

    signal.signal(signal.SIGUSR2, lambda *_: PREEMPT.set())
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR2})  # one that waited: now


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
    # Only pool processes holding a job: an idle one has nothing to put back, and a
    # signal that interrupts its wait for work makes it exit with an error.
    global _stopping
    from celery.worker import state

    if _stopping:
        # Linux may deliver the parent-death SIGTERM more than once (once for each
        # thread of the dead parent that the process is handed to); ask once.
        return
    _stopping = True
    busy = {req.worker_pid for req in list(state.active_requests) if req.worker_pid}
    for pid in _children():
        if pid not in busy:
            continue
        try:
            os.kill(pid, signal.SIGUSR2)
        except ProcessLookupError:
            continue
        log.info("asked pool process %s to put its job back in the queue", pid)


_registrations: list[Registration] = []


def run_worker(name: str, queues: list[str], devices: Devices, loglevel: str, events: bool) -> None:
    """Runs this process as the Celery worker ``name`` until it is stopped.

    It consumes ``queues`` with one pool process (concurrency 1), registers itself
    with its ``devices`` once ready and, with ``events``, sends task events for
    Flower.
    """
    _registrations.append(Registration(get_settings(), Identity(name, queues, devices)))
    argv = [
        "worker",
        "--queues",
        ",".join(queues),
        "--concurrency",
        "1",
        "--pool",
        "prefork",
        "--hostname",
        name,
        "--loglevel",
        loglevel,
        "--without-gossip",
        "--without-mingle",
    ]
    app.worker_main(argv + (["--task-events"] if events else []))


@worker_ready.connect  # type: ignore[untyped-decorator]
def _register(**_: Any) -> None:
    for registration in _registrations:
        registration.start()


@worker_shutdown.connect  # type: ignore[untyped-decorator]
def _unregister(**_: Any) -> None:
    for registration in _registrations:
        registration.stop()
