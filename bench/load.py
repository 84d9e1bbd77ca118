"""The load monitor that ``bench/run.py`` runs beside its measurements:

    python bench/load.py OUT ROOT_PID

appends ``time cpu_seconds`` lines to OUT every half second: the CPU time used by
processes outside ROOT_PID's tree since the monitor started. It stops when ROOT_PID
(its parent) does. It runs as a separate process so that it costs the measured
processes no GIL.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import psutil


def _in_tree(pid: int, procs: dict[int, tuple[int, float]], memo: dict[int, bool]) -> bool:
    """Whether ``pid`` descends from the root that ``memo`` starts with as True."""
    chain = []
    while pid not in memo:
        chain.append(pid)
        pid = procs[pid][0] if pid in procs else 0
    for p in chain:
        memo[p] = memo[pid]
    return memo[pid]


def monitor(out: Path, root: int, period: float = 0.5) -> None:
    """Samples every ``period`` seconds while ``root`` is this process's parent.

    A process seen for the first time counts all its CPU; one that exits between two
    samples loses its last interval, so the figure is a slight underestimate.
    """
    prev: dict[int, float] | None = None
    total = 0.0
    with open(out, "a", buffering=1) as f:
        while os.getppid() == root:
            procs: dict[int, tuple[int, float]] = {}
            for proc in psutil.process_iter(["ppid", "cpu_times"]):
                times = proc.info["cpu_times"]
                if times is not None:
                    procs[proc.pid] = (proc.info["ppid"] or 0, times.user + times.system)
            memo: dict[int, bool] = {root: True, 0: False, 1: False}
            now = {pid: cpu for pid, (_, cpu) in procs.items() if not _in_tree(pid, procs, memo)}
            if prev is not None:
                total += sum(max(0.0, cpu - prev.get(pid, 0.0)) for pid, cpu in now.items())
            prev = now
            f.write(f"{time.time():.3f} {total:.2f}\n")
            time.sleep(period)


if __name__ == "__main__":
    monitor(Path(sys.argv[1]), int(sys.argv[2]))
