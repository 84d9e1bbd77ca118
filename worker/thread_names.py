"""Names the calling thread at the operating system's level.

Python names a thread for itself only; ``top -H``, ``perf``, ``/proc/PID/task/*/comm``
and the benchmarks' per-thread accounting (``bench/epoch_gap.py --sliced``) see the
kernel's name, which is the process's unless the thread sets its own.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_PR_SET_NAME = 15
_libc = ctypes.CDLL(ctypes.util.find_library("c")) if sys.platform == "linux" else None


def name_this_thread(name: str) -> None:
    """Gives the calling thread ``name`` (its first 15 bytes) where Linux can; does
    nothing elsewhere."""
    if _libc is not None:
        _libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)
