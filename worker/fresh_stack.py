"""Runs a job's training on a fresh thread, at the call depth of a plain script.

TensorFlow takes a Python stack trace for the ops it runs (profiles show
``tensorflow::StackTrace::Capture`` and CPython's frame and line-number walk), so what
an op costs depends on the Python stack it is called from (``python -m
bench.epoch_gap --depth``). A pool process of the worker runs its task deep in a stack
it did not choose: on the embedded broker it is forked from billiard's supervisor
thread and keeps a copy of that thread's stack, under Celery's tracer and fitq's own
calls. A plain fit called there trained 4.5 % slower per steady epoch than the same fit
in a plain script, and 0.8 % (within the measurement's interval) called on a fresh
thread, whose stack starts empty (docs/benchmarks.md, "Steady epochs").

The calling thread waits, and handles signals meanwhile: it wakes every
``SIGNAL_POLL_SECONDS`` to run the Python handlers of signals that arrived (Python
runs them in the process's main thread only), so a SIGUSR2 that asks a job to put
itself back reaches the training loop as before, whichever thread Linux delivered it
to. The new thread (and the threads TensorFlow starts from it) blocks every signal that
has a Python handler, so such a signal usually lands on a thread that can run it at
once.

An exception a handler raises in the calling thread (billiard's SystemExit on SIGTERM)
leaves the training thread running until the process exits; it is a daemon thread, so
it never holds the exit up.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

from worker.thread_names import name_this_thread

T = TypeVar("T")
SIGNAL_POLL_SECONDS = 0.5


class _Run(threading.Thread):
    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]):
        super().__init__(name="fitq-train", daemon=True)
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.result: Any = None
        self.error: BaseException | None = None
        self.handled = {s for s in signal.valid_signals() if callable(signal.getsignal(s))}

    def run(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, self.handled)
        name_this_thread(self.name)
        try:
            self.result = self.fn(*self.args, **self.kwargs)
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller
            self.error = exc


def on_fresh_stack(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` on a new thread; returns what it returned and raises what
    it raised (with its own traceback), in the calling thread."""
    run = _Run(fn, args, kwargs)
    run.start()
    while run.is_alive():
        run.join(SIGNAL_POLL_SECONDS)
    if run.error is not None:
        error, run.error = run.error, None
        raise error
    return cast(T, run.result)
