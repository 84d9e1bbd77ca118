"""Fault injection: killed, frozen and stopped workers, duplicate deliveries, a broker
restart, a database outage. Real worker processes on PostgreSQL and Redis, tiny real
models. Marked ``slow``; run alone with ``pytest -m slow``. Each test prints its figure.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REDIS_URL, Service, free_port, fresh_postgres_schema, require_postgres
from tests.factories import digits_spec

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
LEASE = 4.0
FAST = {
    "FITQ_LEASE_SECONDS": str(LEASE),
    "FITQ_DISPATCHER_INTERVAL": "0.5",
    "FITQ_REQUEUE_SECONDS": "3",
    "FITQ_PROGRESS_INTERVAL": "0.2",
}


def eight_epochs(name: str, **more: Any) -> dict[str, Any]:
    """About 0.3 s an epoch; no shuffling, so a resumed run must equal an uninterrupted one."""
    return digits_spec(
        **{
            "name": name,
            "fit.epochs": 8,
            "fit.batch_size": 8,
            "fit.shuffle": False,
            "data.train.take": 600,
            "callbacks": [{"type": "ModelCheckpoint", "filepath": "last.keras", "monitor": "loss"}],
            **more,
        }
    )


def fault_service(
    tmp: Path, broker_url: str = REDIS_URL, database_url: str | None = None, **env: str
) -> Service:
    require_postgres()
    url = database_url or fresh_postgres_schema("fitq_faults")
    from tests.conftest import Backend

    svc = Service(
        Backend("postgres", url, broker_url),
        tmp,
        f"faults-{uuid.uuid4().hex[:8]}",
        extra_env={**FAST, **env},
    )
    svc.start()
    svc.start_dispatcher()
    return svc


@pytest.fixture
def faults(tmp_path: Path) -> Iterator[Service]:
    svc = fault_service(tmp_path)
    yield svc
    svc.stop()


def rows_by_epoch(svc: Service, job_id: str) -> dict[int, dict[str, Any]]:
    rows = svc.metrics(job_id)
    epochs = [r["epoch"] for r in rows]
    assert epochs == list(range(1, len(rows) + 1)), f"gap or duplicate: {epochs}"
    return {r["epoch"]: r for r in rows}


def final_weights(svc: Service, job_id: str) -> list[Any]:
    import keras

    path = svc.data_dir / "artifacts" / "jobs" / job_id / "checkpoints" / "last.keras"
    return [w for w in keras.saving.load_model(path).get_weights()]


def history(svc: Service, job_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = svc.client.get(f"/v1/jobs/{job_id}/history").json()["items"]
    return items


def owner(svc: Service, job_id: str) -> str:
    """The name of the worker whose process took the job's latest attempt."""
    started = [e for e in history(svc, job_id) if e["kind"] == "started"][-1]["message"]
    return next(n for n, p in svc.procs.items() if f"fitq-{p.pid}@" in started)


def test_kill_9_of_training_process_or_whole_worker_loses_nothing(faults: Service) -> None:
    import numpy as np

    # Batches of 4 make an epoch long enough (about 0.6 s) that the kill, after 1 to 5
    # recorded epochs, always lands while the job still trains.
    slow = {"fit.batch_size": 4}
    baseline = faults.submit(eight_epochs("uninterrupted", **slow))
    assert faults.wait_for(baseline["id"], timeout=180)["status"] == "succeeded"
    expected = rows_by_epoch(faults, baseline["id"])
    expected_weights = final_weights(faults, baseline["id"])

    rng = random.Random(20)
    results = []
    kills = int(os.environ.get("FITQ_FAULT_KILLS", "12"))
    for i in range(kills):
        job = faults.submit(eight_epochs(f"killed-{i}", **slow))
        kill_after = rng.randint(1, 5)

        def reached(job_id: str = job["id"], n: int = kill_after) -> bool:
            return len(faults.metrics(job_id)) >= n

        faults.wait_until(reached, 120, f"{kill_after} epochs of job {i}")
        time.sleep(rng.uniform(0, 0.3))
        assert faults.job(job["id"])["status"] == "running", "the kill would miss the job"
        if i % 4 == 3:  # the whole worker, then a supervisor starts it again
            faults.kill("worker")
            faults.start_worker()
        else:  # the training process only
            for pid in faults.pool_children():
                subprocess.run(["kill", "-9", str(pid)], check=False)
        done = faults.wait_for(job["id"], timeout=180)
        rows = rows_by_epoch(faults, job["id"])
        log = faults.client.get(f"/v1/jobs/{job['id']}/logs").text
        resumes = re.findall(
            r"resuming after epoch (\d+) \(the last recorded epoch is (\d+)\)", log
        )
        replayed = max((int(r) - int(b) for b, r in resumes), default=0)
        results.append((done["status"], len(rows), done["attempts"], replayed))
        assert done["status"] == "succeeded", done["error"]
        assert sorted(rows) == list(range(1, 9))
        assert resumes, log[-2000:]
        assert replayed <= 1
        for epoch, row in rows.items():
            for key, value in expected[epoch]["metrics"].items():
                assert row["metrics"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), (i, epoch)
        for a, b in zip(final_weights(faults, job["id"]), expected_weights, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    ok = sum(1 for r in results if r[0] == "succeeded" and r[1] == 8)
    whole = kills // 4
    print(
        f"\nkill -9 ({kills - whole} training processes, {whole} whole workers): "
        f"{ok}/{kills} succeeded with one row "
        f"per epoch, final weights equal to the uninterrupted run's; attempts "
        f"{[r[2] for r in results]}; epochs replayed per kill {[r[3] for r in results]}"
    )
    assert ok == kills


def test_a_frozen_worker_is_replaced_and_writes_nothing_after(faults: Service) -> None:
    faults.start_worker("worker2")
    job = faults.submit(eight_epochs("frozen", **{"fit.epochs": 12}))
    faults.wait_until(lambda: len(faults.metrics(job["id"])) >= 2, 120, "two epochs")
    frozen = owner(faults, job["id"])
    faults.kill(frozen, signal.SIGSTOP)
    frozen_at = time.monotonic()
    done = faults.wait_for(job["id"], timeout=180)
    took = time.monotonic() - frozen_at
    faults.kill(frozen, signal.SIGCONT)
    faults.wait_until(
        lambda: "lost its claim" in faults.log_text(frozen),
        30,
        "the woken worker to find it lost the job",
    )
    rows = rows_by_epoch(faults, job["id"])
    print(
        f"\nSIGSTOP past the lease ({LEASE}s): another worker finished in {took:.1f}s; "
        f"attempts={done['attempts']}"
    )
    assert done["status"] == "succeeded" and done["attempts"] == 2
    assert owner(faults, job["id"]) != frozen
    assert sorted(rows) == list(range(1, 13))
    after = faults.job(job["id"])
    assert after["finished_at"] == done["finished_at"] and after["status"] == "succeeded"
    assert rows == rows_by_epoch(faults, job["id"])  # nothing rewritten by the woken attempt
    assert all(r["attempt"] == 2 for r in rows.values() if r["epoch"] > 2)


def test_sigterm_puts_the_job_back_and_it_resumes_elsewhere(faults: Service) -> None:
    faults.start_worker("worker2")
    job = faults.submit(eight_epochs("sigterm", **{"fit.epochs": 12}))
    faults.wait_until(lambda: len(faults.metrics(job["id"])) >= 3, 120, "three epochs")
    running_on = owner(faults, job["id"])
    sent = time.monotonic()
    faults.kill(running_on, signal.SIGTERM, children_too=False)
    faults.wait_until(
        lambda: any(e["kind"] == "requeued" for e in history(faults, job["id"])),
        30,
        "the job to go back to the queue",
    )
    requeued_in = time.monotonic() - sent
    done = faults.wait_for(job["id"], timeout=180)
    rows = rows_by_epoch(faults, job["id"])
    print(
        f"\nSIGTERM: job back in the queue after {requeued_in:.1f}s; finished with "
        f"{len(rows)} rows, attempts={done['attempts']}"
    )
    assert requeued_in < 5
    assert done["status"] == "succeeded" and sorted(rows) == list(range(1, 13))
    assert done["attempts"] == 2 and owner(faults, job["id"]) != running_on


def test_a_job_that_dies_every_time_fails_after_max_attempts(faults: Service) -> None:
    job = faults.submit(eight_epochs("doomed", max_attempts=2, **{"fit.epochs": 200}))
    for attempt in (1, 2):
        faults.wait_until(
            lambda a=attempt: (
                faults.job(job["id"])["attempts"] == a
                and faults.job(job["id"])["status"] == "running"
                and len(faults.metrics(job["id"])) >= 1
            ),
            120,
            f"attempt {attempt}",
        )
        for pid in faults.pool_children():
            subprocess.run(["kill", "-9", str(pid)], check=False)
    done = faults.wait_for(job["id"], timeout=60)
    other = faults.submit(eight_epochs("bystander", **{"fit.epochs": 2}))
    after = faults.wait_for(other["id"], timeout=120)
    print(
        f"\nkilled every attempt: {done['status']} after {done['attempts']} attempts "
        f"({done['error']['type']}); the next job {after['status']}"
    )
    assert done["status"] == "failed" and done["attempts"] == 2
    assert done["error"]["type"] == "AttemptsExhausted"
    assert "max_attempts=2" in done["error"]["message"]
    # The job has ended: the dispatcher that failed it removed its resume backups.
    assert not (faults.data_dir / "artifacts" / "jobs" / job["id"] / "backup").exists()
    assert [e["kind"] for e in history(faults, job["id"])].count("retention") == 1
    assert after["status"] == "succeeded"


def test_duplicate_deliveries_after_a_short_visibility_timeout_run_the_job_once(
    tmp_path: Path,
) -> None:
    svc = fault_service(tmp_path, FITQ_BROKER_VISIBILITY_TIMEOUT="1")
    try:
        svc.start_worker("worker2")
        job = svc.submit(eight_epochs("visible", **{"fit.epochs": 20}))
        done = svc.wait_for(job["id"], timeout=240)
        skipped = sum(
            svc.log_text(n).count("is not queued; nothing to do") for n in ("worker", "worker2")
        )
        rows = rows_by_epoch(svc, job["id"])
        print(
            f"\nvisibility_timeout=1s on a job of 20 epochs: {skipped} duplicate "
            f"deliveries skipped; attempts={done['attempts']}"
        )
        assert done["status"] == "succeeded" and done["attempts"] == 1
        assert sorted(rows) == list(range(1, 21))
        assert skipped >= 1
    finally:
        svc.stop()


def start_redis(port: int) -> None:
    """A Redis server of the test's own on ``port``, keeping nothing on disk."""
    subprocess.run(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        + ["--appendonly", "no", "--daemonize", "yes"],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def own_redis() -> Iterator[tuple[str, int]]:
    port = free_port()
    start_redis(port)
    yield f"redis://127.0.0.1:{port}/0", port
    subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True)


def test_redis_restart_without_persistence_loses_no_job(
    tmp_path: Path, own_redis: tuple[str, int]
) -> None:
    url, port = own_redis
    svc = fault_service(tmp_path, broker_url=url)
    try:
        svc.start_worker("worker2")
        svc.start_worker("worker3")
        running = [svc.submit(eight_epochs(f"run{i}", **{"fit.epochs": 30})) for i in range(3)]
        svc.wait_until(
            lambda: all(len(svc.metrics(j["id"])) >= 1 for j in running),
            240,
            "three running jobs",
        )
        waiting = [svc.submit(eight_epochs(f"wait{i}", **{"fit.epochs": 3})) for i in range(10)]
        jobs = running + waiting
        assert all(svc.job(j["id"])["status"] == "queued" for j in waiting)
        subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True)
        time.sleep(1)
        start_redis(port)
        done = [svc.wait_for(j["id"], timeout=400) for j in jobs]
        ok = sum(d["status"] == "succeeded" and d["attempts"] == 1 for d in done)
        republished = sum(
            any(e["kind"] == "republished" for e in history(svc, j["id"])) for j in waiting
        )
        print(
            f"\nRedis restarted without persistence (3 running, 10 waiting): {ok}/13 "
            f"succeeded, each once; {republished} lost messages published again"
        )
        assert ok == 13 and republished >= 1
        for j in jobs:
            assert sorted(rows_by_epoch(svc, j["id"])) == list(range(1, 31 if j in running else 4))
    finally:
        svc.stop()


class OutageProxy:
    """A TCP proxy in front of PostgreSQL that can drop every connection for a while."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.port = free_port()
        self.down = threading.Event()
        self.sockets: list[socket.socket] = []
        self.server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self.server.accept()
            if self.down.is_set():
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def outage(self) -> None:
        self.down.set()
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.sockets.clear()

    def restore(self) -> None:
        self.down.clear()


def test_a_minute_without_the_database_loses_no_epoch(tmp_path: Path) -> None:
    require_postgres()
    url = fresh_postgres_schema("fitq_outage")
    proxy = OutageProxy(5432)
    proxied = url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    svc = fault_service(tmp_path, database_url=proxied, FITQ_LEASE_SECONDS="120")
    try:
        job = svc.submit(eight_epochs("outage", **{"fit.epochs": 40}))
        svc.wait_until(lambda: len(svc.metrics(job["id"])) >= 3, 120, "three epochs")
        proxy.outage()
        cut = time.monotonic()
        time.sleep(60)
        proxy.restore()
        done = svc.wait_for(job["id"], timeout=180)
        rows = rows_by_epoch(svc, job["id"])
        during = [e for e, r in rows.items() if r["recorded_at"] > done["started_at"]]
        print(
            f"\ndatabase unreachable for {time.monotonic() - cut:.0f}s mid-training: "
            f"{done['status']} with {len(rows)}/40 epoch rows, attempts={done['attempts']}"
        )
        assert done["status"] == "succeeded" and done["attempts"] == 1
        assert sorted(rows) == list(range(1, 41)) and during
        assert "database or artifact store unavailable" in svc.log_text("worker")
    finally:
        svc.stop()
