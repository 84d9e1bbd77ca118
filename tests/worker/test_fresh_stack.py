"""``on_fresh_stack``: the job's training runs on a new thread, a few frames deep, and
its caller sees what it returned or raised, and still handles signals meanwhile."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType

import pytest

from worker.fresh_stack import on_fresh_stack


@pytest.fixture
def asked() -> Iterator[threading.Event]:
    """A SIGUSR2 handler, as the worker sets one in the pool process's main thread, that
    sets the event it yields; the earlier handler is put back after the test."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are set from the main thread only")
    event = threading.Event()
    before = signal.signal(signal.SIGUSR2, lambda *_: event.set())
    yield event
    signal.signal(signal.SIGUSR2, before)


def _depth() -> int:
    frame: FrameType | None = sys._getframe(1)
    depth = 0
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    return depth


def _nested(levels: int) -> tuple[int, int]:
    """Calls ``on_fresh_stack`` ``levels`` frames deeper than here; returns the depth
    the caller was at and the depth the function ran at."""
    if levels:
        return _nested(levels - 1)
    return _depth(), on_fresh_stack(_depth)


def test_the_function_runs_on_another_thread_at_a_scripts_depth() -> None:
    outer, inner = _nested(40)
    assert outer > 45  # pytest's own frames, and the 40 above
    assert inner <= 4  # the thread's start, its run(), the function
    name = on_fresh_stack(lambda: threading.current_thread().name)
    assert name == "fitq-train" and name != threading.current_thread().name


def test_the_thread_blocks_the_signals_python_handles(asked: threading.Event) -> None:
    # Else Linux may hand such a signal to it, and the waiting caller runs the handler
    # only at its next poll; signals without a Python handler keep their process-wide
    # action.
    blocked = on_fresh_stack(signal.pthread_sigmask, signal.SIG_BLOCK, [])
    assert signal.SIGUSR2 in blocked
    assert signal.SIGSEGV not in blocked


def test_it_returns_the_value_and_passes_arguments() -> None:
    assert on_fresh_stack(lambda a, b=0: (a, b), 1, b=2) == (1, 2)


def test_it_raises_what_the_function_raised_with_its_traceback() -> None:
    class Stop(Exception):
        pass

    error = Stop("epoch 3")

    def fails() -> None:
        raise error

    with pytest.raises(Stop) as caught:
        on_fresh_stack(fails)
    assert caught.value is error
    assert "fails" in [entry.name for entry in caught.traceback]


def test_the_caller_handles_a_signal_while_it_waits(asked: threading.Event) -> None:
    # The worker's SIGUSR2 handler (put the job back) is set in the pool process's main
    # thread; the training loop, on the fresh thread, must see what it sets.
    def trains() -> str:
        deadline = time.monotonic() + 30
        while not asked.is_set():
            if time.monotonic() > deadline:
                return "never asked"
            time.sleep(0.01)
        return "put back"

    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGUSR2)).start()
    assert on_fresh_stack(trains) == "put back"


def test_a_signal_another_thread_took_is_handled_while_the_caller_waits(
    asked: threading.Event,
) -> None:
    # Linux may hand a process's signal to any thread that does not block it (the
    # writer's, say); the waiting caller still runs its Python handler within a poll.
    done = threading.Event()
    bystander = threading.Thread(target=done.wait)  # does not block SIGUSR2
    bystander.start()

    def trains() -> str:
        assert bystander.ident is not None
        signal.pthread_kill(bystander.ident, signal.SIGUSR2)
        return "put back" if asked.wait(10) else "never asked"

    try:
        assert on_fresh_stack(trains) == "put back"
    finally:
        done.set()
        bystander.join()
