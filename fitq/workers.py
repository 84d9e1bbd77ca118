"""``fitq worker --gpus``: one Celery worker process per GPU (or group of GPUs).

Each worker is a ``fitq worker`` child process started with ``CUDA_VISIBLE_DEVICES``
naming its GPUs, so TensorFlow in it sees only those, from its first import on.
A child that dies is started again; SIGTERM or SIGINT stops them all, each putting
its running job back in the queue, and so does this process dying of SIGKILL
(``fitq.children``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from types import FrameType

from fitq.children import spawn

RESTART_DELAY_S = 5.0


@dataclass
class _Child:
    pin: str | None
    proc: subprocess.Popen[bytes]


def _start(pin: str | None, argv: list[str]) -> _Child:
    env = dict(os.environ)
    if pin is not None:
        env["CUDA_VISIBLE_DEVICES"] = pin
        # Memory grows as a job needs it, instead of TensorFlow taking the whole GPU.
        env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
    proc = spawn(["worker", *argv], env)
    where = f"GPU {pin}" if pin is not None else "the CPU (no GPU found)"
    print(f"fitq: worker on {where} (pid {proc.pid})", flush=True)
    return _Child(pin, proc)


def supervise(groups: list[str], argv: list[str], restart_delay: float = RESTART_DELAY_S) -> int:
    """Runs one ``fitq worker <argv>`` per entry of ``groups`` until told to stop.

    Args:
        groups: The ``CUDA_VISIBLE_DEVICES`` of each worker; empty for one worker on
            the CPU.
        argv: The arguments each child gets after ``fitq worker``.
        restart_delay: Seconds before a child that died is started again.

    Returns:
        0 once every child has stopped after SIGTERM or SIGINT.
    """
    stop = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    pins: list[str | None] = list(groups) or [None]
    children = [_start(pin, argv) for pin in pins]
    died_at: dict[int, float] = {}
    while not stop.wait(0.5):
        for i, child in enumerate(children):
            code = child.proc.poll()
            if code is None:
                continue
            now = time.monotonic()
            if i not in died_at:
                died_at[i] = now
                print(
                    f"fitq: worker pid {child.proc.pid} exited with {code}; starting it "
                    f"again in {restart_delay:.0f}s",
                    file=sys.stderr,
                    flush=True,
                )
            elif now - died_at[i] >= restart_delay:
                del died_at[i]
                children[i] = _start(child.pin, argv)
    for child in children:
        if child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)
    for child in children:
        child.proc.wait()
    return 0
