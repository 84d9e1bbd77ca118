"""``fitq`` commands that ``fitq`` starts as child processes, and that die with it.

``fitq up`` starts its worker, and ``fitq worker --gpus`` one worker per GPU, with
``spawn``. The child's first act (``stay_with_parent``, at the top of ``main``) asks
Linux to send it SIGTERM when the process that started it dies
(``prctl(PR_SET_PDEATHSIG)``), so a parent killed with SIGKILL, which runs no
handler, still stops its children: each stops as on any SIGTERM, a worker putting
its job back in the queue and stopping its pool processes. A parent that stops
cleanly still stops its children itself, as before.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence

# The pid of the process that started this one; not a setting (no FITQ_ prefix), and
# removed once read so that this process's own children never see it.
PARENT_PID = "_FITQ_PARENT_PID"
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def spawn(args: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Starts ``python -m fitq ARGS`` with ``env``, to stop when this process dies.

    Call it from the thread that lives as long as the process (the main thread):
    Linux signals the child when the thread that started it ends.
    """
    return subprocess.Popen(
        [sys.executable, "-m", "fitq", *args], env={**env, PARENT_PID: str(os.getpid())}
    )


def stay_with_parent() -> None:
    """In a process ``spawn`` started: SIGTERM as soon as its parent dies, however.

    Does nothing in a process started otherwise, or off Linux.
    """
    parent = os.environ.pop(PARENT_PID, None)
    if parent is None or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")
    if os.getppid() != int(parent):
        # The parent died before the request above: nobody will signal this process.
        os.kill(os.getpid(), signal.SIGTERM)
