"""The plain digits fit as a Celery task, for ``bench/epoch_gap.py --against celery``.

A worker of fitq's own Celery app (its configuration, its pool process warm-up) with
this task besides fitq's: the fit runs in a prefork pool process of a live worker as a
job does, but without fitq's runner. ``run(out, epochs)`` starts such a worker on the
embedded broker in a fresh folder, sends a first task (so that, as in ``fitq up``, the
fit gets the pool process forked after one has ended), then the fit, and stops the
worker once the fit has written its timings to ``out``; ``--against celery-fresh``
trains on a fresh thread's stack, as fitq's worker does (``worker.fresh_stack``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from worker.celery_app import app

QUEUE = "bench-celery"


@app.task(name="bench.touch")  # type: ignore[untyped-decorator]
def touch(path: str) -> None:
    Path(path).touch()


@app.task(name="bench.plain_fit")  # type: ignore[untyped-decorator]
def plain_fit(out: str, epochs: int, fresh: bool) -> None:
    from bench.epoch_gap import _plain_fit
    from worker.fresh_stack import on_fresh_stack

    written = Path(f"{out}.part")  # renamed once whole: the sender waits for ``out``
    if fresh:
        on_fresh_stack(_plain_fit, written, warm=False, epochs=epochs)
    else:
        _plain_fit(written, warm=False, epochs=epochs)
    os.replace(written, out)


def _wait_for(path: Path, worker: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if worker.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the bench worker ended or timed out before {path} appeared")
        time.sleep(0.2)


def run(out: Path, epochs: int, fresh: bool = False) -> None:
    """Runs the fit in a worker on the embedded broker in ``FITQ_DATA_DIR`` (set, to a
    fresh folder, before this module is imported); with ``fresh``, on a fresh thread's
    stack as fitq's worker trains (``worker.fresh_stack``)."""
    worker = subprocess.Popen(
        [
            *(sys.executable, "-m", "celery", "-A", "bench.celery_fit", "worker"),
            *("--pool", "prefork", "--concurrency", "1", "--queues", QUEUE),
            *("--without-gossip", "--without-mingle", "--loglevel", "INFO"),
        ],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        first = Path(os.environ["FITQ_DATA_DIR"]) / "first"
        app.send_task("bench.touch", args=[str(first)], queue=QUEUE)
        _wait_for(first, worker, 300)
        app.send_task("bench.plain_fit", args=[str(out), epochs, fresh], queue=QUEUE)
        _wait_for(out, worker, 7200)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
