"""Which devices a worker has, and which queues that lets it serve; no TensorFlow here.

``fitq worker --gpus`` starts one worker per group of GPUs and pins each with
``CUDA_VISIBLE_DEVICES``; a worker reads its pinning back from that variable. A job
that needs more devices than the worker that received it has is forwarded to the
queue ``<queue>.gpus<n>``, which only workers with at least ``n`` devices consume.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from models.spec import ROUTED_SUFFIX

NVIDIA_SMI_TIMEOUT_S = 20


@dataclass(frozen=True)
class Devices:
    """What one worker trains on.

    Attributes:
        kind: ``gpu``, or ``cpu`` when it has no GPU.
        count: How many devices a job may use there: its GPUs, or its logical CPUs.
        gpus: The GPU indices it is pinned to (``CUDA_VISIBLE_DEVICES``), if any.
    """

    kind: Literal["gpu", "cpu"]
    count: int
    gpus: str | None = None


def discover_gpus() -> list[str]:
    """The indices of this machine's NVIDIA GPUs, as ``nvidia-smi`` lists them.

    No ``nvidia-smi``, or one that fails (no driver), means no GPU.
    """
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip().isdigit()]


def gpu_groups(
    selection: str, per_worker: int = 1, discover: Callable[[], list[str]] = discover_gpus
) -> list[str]:
    """The ``CUDA_VISIBLE_DEVICES`` value of each worker to start.

    Args:
        selection: ``all`` (every GPU ``nvidia-smi`` lists) or indices, ``0,1,3``.
        per_worker: GPUs per worker; each group of that many consecutive GPUs
            gets one worker. Defaults to 1.
        discover: Lists the machine's GPUs for ``all``.

    Returns:
        One entry per worker, e.g. ``["0", "1"]`` or ``["0,1", "2,3"]``; empty when
        ``all`` finds no GPU (the caller then starts one CPU worker).

    Raises:
        ValueError: An index that is not a number, a repeated index, or GPUs that
            do not divide into groups of ``per_worker``.
    """
    if per_worker < 1:
        raise ValueError(f"received --gpus-per-worker {per_worker}, expected at least 1")
    if selection.strip() == "all":
        ids = discover()
        if not ids:
            return []
    else:
        ids = [part.strip() for part in selection.split(",")]
        bad = [i for i in ids if not i.isdigit()]
        if bad:
            raise ValueError(
                f"received --gpus {selection!r}; expected 'all' or GPU indices such as "
                f"'0,1' ({bad} are not indices)"
            )
        if len(set(ids)) != len(ids):
            raise ValueError(f"received --gpus {selection!r}, which names a GPU twice")
    if len(ids) % per_worker:
        raise ValueError(
            f"{len(ids)} GPUs ({','.join(ids)}) do not divide into workers of "
            f"--gpus-per-worker {per_worker}"
        )
    return [",".join(ids[i : i + per_worker]) for i in range(0, len(ids), per_worker)]


def worker_devices(
    env: Mapping[str, str],
    logical_cpus: int = 1,
    discover: Callable[[], list[str]] = discover_gpus,
) -> Devices:
    """The devices of a worker started with ``env``: its pinned GPUs, else every GPU
    of the machine, else its (logical) CPUs."""
    pinned = env.get("CUDA_VISIBLE_DEVICES")
    if pinned is not None:
        ids = [p for p in (s.strip() for s in pinned.split(",")) if p and p != "-1"]
        if ids:
            return Devices("gpu", len(ids), ",".join(ids))
        return Devices("cpu", logical_cpus)
    found = discover()
    if found:
        return Devices("gpu", len(found))
    return Devices("cpu", logical_cpus)


def routed_queue(queue: str, devices: int) -> str:
    """The broker queue of a job on ``queue`` that needs ``devices`` devices."""
    return queue if devices <= 1 else f"{queue}{ROUTED_SUFFIX}{devices}"


def queues_for(queues: list[str], devices: int) -> list[str]:
    """Every queue a worker with ``devices`` devices consumes, for the ``queues`` it serves."""
    return [routed_queue(q, n) for q in queues for n in range(1, devices + 1)]
