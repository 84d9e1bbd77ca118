"""``fitq up`` killed with SIGKILL takes every process it started down with it.

A real ``fitq up`` runs on a temporary data folder; once the API answers and the
worker's pool process has warmed up, ``fitq up`` alone gets SIGKILL (no handler,
no ``finally``), and every process below it must be gone soon after: otherwise
starting it again would run two workers on the same queues, and a job that was
training would go on training in a process nobody watches. ``fitq worker --gpus``,
which starts one worker per GPU, is held to the same.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.factories import digits_spec
from tests.fitq.test_workers import NO_DRIVER, children, start_workers, wait_for_rows

pytestmark = pytest.mark.e2e

# The children stop as on any SIGTERM: a worker's warm shutdown, which puts its job
# back and stops its pool, took 5 to 13 s on a loaded two-core machine, and once over
# 30 s with other test runs beside it.
GONE_WITHIN_S = 60.0
QUEUE = "up-children"


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = children(pid)
    while todo:
        child = todo.pop()
        found.append(child)
        todo += children(child)
    return found


def start_time(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/PID/stat), or None once it is gone.

    A zombie counts as gone: it has exited and only waits to be reaped. The start time
    tells the process apart from a later one that reuses its pid.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return "?"


class Family:
    """A process and, once noted, every process below it; ``kill`` checks they all go."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.log = log
        self.started: dict[int, str] = {}

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self, at_least: int) -> None:
        """SIGKILL for the parent alone; then every process below it must go."""
        for pid in descendants(self.proc.pid):
            stamp = start_time(pid)
            if stamp is not None:
                self.started[pid] = stamp
        assert len(self.started) >= at_least, {pid: command_line(pid) for pid in self.started}
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        deadline = time.monotonic() + GONE_WITHIN_S
        alive = dict(self.started)
        while alive and time.monotonic() < deadline:
            alive = {pid: s for pid, s in alive.items() if start_time(pid) == s}
            time.sleep(0.1)
        assert not alive, (
            f"still running {GONE_WITHIN_S:.0f}s after their parent was killed: "
            f"{ {pid: command_line(pid) for pid in alive} }\n{self.log_text()[-3000:]}"
        )

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid, stamp in self.started.items():
            if start_time(pid) == stamp:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue


class Up(Family):
    """A real ``fitq up`` on a temporary data folder and a free port."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        log = data_dir / f"up-{self.port}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FITQ_")}
        env.update(
            FITQ_DATA_DIR=str(data_dir),
            FITQ_PROGRESS_INTERVAL="0.2",
            PYTHONUNBUFFERED="1",
            TF_CPP_MIN_LOG_LEVEL="2",
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "fitq", "up", "--port", str(self.port), "--queues", QUEUE],
            cwd=data_dir,
            env=env,
            stdout=open(log, "wb"),
            stderr=subprocess.STDOUT,
        )
        super().__init__(proc, log)

    def wait_for(self, check: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"fitq up exited:\n{self.log_text()[-3000:]}"
            if check():
                return
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}:\n{self.log_text()[-3000:]}")

    def get(self, path: str) -> httpx.Response | None:
        try:
            return httpx.get(self.url + path, timeout=5)
        except httpx.HTTPError:
            return None

    def wait_until_ready(self) -> None:
        self.wait_for(
            lambda: (r := self.get("/readyz")) is not None and r.status_code == 200, "/readyz"
        )
        self.wait_for(lambda: "ready." in self.log_text(), "the worker")
        self.wait_for(lambda: "warmed up in" in self.log_text(), "the pool process")


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    service = Up(tmp_path)
    try:
        service.wait_until_ready()
        yield service
    finally:
        service.close()


def test_sigkill_of_fitq_up_stops_every_process_it_started(up: Up) -> None:
    up.kill(at_least=2)  # the worker and its pool process


def test_sigkill_of_fitq_up_while_a_job_trains_stops_the_training_process(up: Up) -> None:
    spec = {**digits_spec(**{"fit.epochs": 500, "fit.batch_size": 8}), "queue": QUEUE}
    created = httpx.post(f"{up.url}/v1/jobs", json=spec, timeout=30)
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]

    def training() -> bool:
        r = up.get(f"/v1/jobs/{job_id}")
        return r is not None and (r.json()["progress"]["epoch"] or 0) >= 2

    up.wait_for(training, f"job {job_id} to train")
    up.kill(at_least=2)
    # The worker stopped as on any SIGTERM: its job went back to the queue at the next
    # batch (not lost with a pool process that exited), and the next ``fitq up`` on the
    # same data folder resumes it.
    again = Up(up.data_dir)
    try:
        again.wait_until_ready()
        events = again.get(f"/v1/jobs/{job_id}/history")
        assert events is not None and events.status_code == 200, events
        requeued = [e for e in events.json()["items"] if e["kind"] == "requeued"]
        assert [e["message"] for e in requeued] == [
            "the worker stopped (SIGTERM); resumes elsewhere"
        ], again.log_text()[-3000:]

        def resumed() -> bool:
            r = again.get(f"/v1/jobs/{job_id}")
            return r is not None and r.json()["attempts"] == 2 and r.json()["status"] == "running"

        again.wait_for(resumed, f"job {job_id} to resume")
        assert "exited prematurely" not in up.log_text() + again.log_text()
    finally:
        again.close()


def test_sigkill_of_fitq_worker_gpus_stops_the_workers_it_started(tmp_path: Path) -> None:
    proc, factory, log = start_workers(tmp_path, NO_DRIVER)
    family = Family(proc, log)
    try:
        wait_for_rows(proc, factory, 1, log)
        deadline = time.monotonic() + 120
        while "warmed up in" not in family.log_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        family.kill(at_least=2)  # the worker and its pool process
    finally:
        family.close()
