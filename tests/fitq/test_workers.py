"""``fitq worker --gpus``: one real Celery worker process per GPU, each pinned.

The machine's GPUs are what ``nvidia-smi`` lists; the tests put a fake one first on
PATH (the edge of the process) that lists two GPUs, or fails as it does on a host
without a driver.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from core.db import make_engine, make_session_factory
from migrations.migrate import upgrade
from models.tables import Worker

pytestmark = pytest.mark.e2e

TWO_GPUS = "#!/bin/sh\nprintf '0\\n1\\n'\n"
NO_DRIVER = (
    "#!/bin/sh\necho \"NVIDIA-SMI has failed because it couldn't communicate with the "
    'NVIDIA driver." >&2\nexit 9\n'
)


def children(pid: int) -> list[int]:
    pids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            pids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return pids


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def start_workers(tmp_path: Path, nvidia_smi: str) -> tuple[subprocess.Popen[bytes], Any, Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(nvidia_smi)
    (bin_dir / "nvidia-smi").chmod(0o755)
    url = f"sqlite:///{tmp_path / 'fitq.db'}"
    upgrade(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FITQ_", "CUDA_"))}
    env.update(
        PATH=f"{bin_dir}:/usr/bin:/bin",
        FITQ_DATA_DIR=str(tmp_path),
        FITQ_DATABASE_URL=url,
        FITQ_LEASE_SECONDS="6",
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONUNBUFFERED="1",
    )
    log = tmp_path / "workers.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fitq", "worker", "--gpus", "all", "--queues", "q1"],
        cwd=tmp_path,
        env=env,
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
    )
    return proc, make_session_factory(make_engine(url)), log


def wait_for_rows(proc: subprocess.Popen[bytes], factory: Any, n: int, log: Path) -> list[Worker]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        with factory() as s:
            rows = list(s.scalars(select(Worker).order_by(Worker.gpus)))
        if len(rows) >= n:
            return rows
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:]
    raise AssertionError(f"{n} workers did not register:\n{tail}")


def stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=60) == 0, log.read_text(errors="replace")[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()


def test_two_gpus_start_two_pinned_workers(tmp_path: Path) -> None:
    proc, factory, log = start_workers(tmp_path, TWO_GPUS)
    try:
        rows = wait_for_rows(proc, factory, 2, log)
        assert [(r.device_kind, r.devices, r.gpus, r.queues) for r in rows] == [
            ("gpu", 1, "0", ["q1"]),
            ("gpu", 1, "1", ["q1"]),
        ]
        assert [r.name.split("-")[1] for r in rows] == ["gpu0", "gpu1"]
        pids = children(proc.pid)
        assert sorted(p for p in pids) == sorted(r.pid for r in rows)
        envs = sorted((environ(p) for p in pids), key=lambda e: e["CUDA_VISIBLE_DEVICES"])
        assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "1"]
        assert all(e["TF_FORCE_GPU_ALLOW_GROWTH"] == "true" for e in envs)
    finally:
        stop(proc, log)
    with factory() as s:
        assert all(w.stopped_at is not None for w in s.scalars(select(Worker)))


def test_a_machine_without_gpus_gets_one_cpu_worker(tmp_path: Path) -> None:
    proc, factory, log = start_workers(tmp_path, NO_DRIVER)
    try:
        rows = wait_for_rows(proc, factory, 1, log)
        time.sleep(1.0)
        assert [(r.device_kind, r.devices, r.gpus, r.queues) for r in rows] == [
            ("cpu", 1, None, ["q1"])
        ]
        (pid,) = children(proc.pid)
        assert pid == rows[0].pid
        assert "CUDA_VISIBLE_DEVICES" not in environ(pid)
        assert "worker on the CPU (no GPU found)" in log.read_text()
    finally:
        stop(proc, log)
