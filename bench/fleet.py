"""A fleet of simulated workers on one PostgreSQL database: how the worker's writes scale.

Run it from the repository root with the project's virtualenv, PostgreSQL up:

    .venv/bin/python bench/fleet.py --workers 10,25,50,100,200

Each simulated worker runs fitq's own worker code paths against the database: it
claims a queued job (``JobStore.claim``), reports through a ``JobWriter`` (in-epoch
progress every ``--progress-s``, lease renewals, each epoch's row with its callback
state, a checkpoint row per epoch) and ends the job (``JobStore.finish``), then takes
the next one. Only the training is replaced: each epoch is a sleep of ``--epoch-s``.
Workers are threads, ``--per-process`` of them in each of several processes, each
worker with its own engine, as each pool process has its own.

For each fleet size it prints claims per second, p50/p99 latency of each kind of
write (measured around the database call, on the writer's thread), the database's
CPU (all ``postgres`` processes, from /proc) and the connections it held at the peak.
Every size gets a fresh schema. ``--json FILE`` keeps the raw figures.

While a size runs it samples, twice a second, the backends waiting on a lock and what
they wait for: a table, or ``transactionid`` for a row another transaction holds.

PostgreSQL's ``max_connections`` bounds the fleet: a worker keeps one connection open
while it trains (``worker.execution.WORKER_POOL_SIZE``) and may open a few more for a
moment while it claims a job. A size the server cannot hold (one connection per worker
plus a margin) is skipped unless ``--no-check-connections``. ``--own-postgres N``
starts a throwaway cluster with ``max_connections`` N from the installed PostgreSQL
binaries (``initdb`` in a temporary folder, a free port, run as the ``postgres`` user
when this runs as root) and removes it at the end:

    .venv/bin/python bench/fleet.py --workers 10,50,100,200 --own-postgres 300
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import glob
import json
import multiprocessing as mp
import os
import pwd
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PG_URL = os.environ.get(
    "FITQ_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
SCHEMA = "fitq_bench_fleet"
CONNECTIONS_PER_WORKER = 1
METRICS = {"loss": 0.3412, "accuracy": 0.8821, "val_loss": 0.3977, "val_accuracy": 0.8615}
# What an EarlyStopping and a ModelCheckpoint leave in each epoch's row for a resume.
CALLBACK_STATE = {
    "EarlyStopping": {"wait": 1, "best": 0.3977, "best_epoch": 4, "stopped_epoch": 0},
    "ModelCheckpoint": {"best": 0.3977},
    "reporter": {"best": {"epoch": 4, "monitor": "val_loss", "value": 0.3977}, "watched": [0.3977]},
}


def fresh_schema(url: str) -> str:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as c:
        c.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')
        c.execute(f'CREATE SCHEMA "{SCHEMA}"')
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{SCHEMA}"


def server_setting(url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as c:
        row = c.execute(f"SHOW {name}").fetchone()
    assert row is not None
    return str(row[0])


@contextlib.contextmanager
def own_postgres(max_connections: int) -> Iterator[str]:
    """A throwaway PostgreSQL cluster; yields its URL (database ``test``)."""

    def version(path: str) -> int:
        major = Path(path).parent.parent.name
        return int(major) if major.isdigit() else 0

    found = [
        *sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version, reverse=True),
        shutil.which("initdb"),
    ]
    initdb = next((f for f in found if f), None)
    if initdb is None:
        raise SystemExit("--own-postgres: no initdb found (install PostgreSQL's server)")
    bindir = Path(initdb).parent
    folder = Path(tempfile.mkdtemp(prefix="fitq-fleet-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = folder / "data"
    run = functools.partial(subprocess.run, check=True, capture_output=True)
    pg_ctl = [*as_user, str(bindir / "pg_ctl"), "-D", str(data)]
    options = f"-c max_connections={max_connections} -p {port} -k {folder} -c fsync=on"
    try:
        run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"])
        run([*pg_ctl, "-l", str(folder / "server.log"), "-o", options, "-w", "start"])
        createdb = [*as_user, str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port)]
        run([*createdb, "-U", "postgres", "test"])
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/test"
    finally:
        subprocess.run([*pg_ctl, "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def server_state(url: str) -> tuple[int, list[str]]:
    """Backends of this database, and the tables those waiting on a lock wait for."""
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as c:
        row = c.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        ).fetchone()
        waits = c.execute(
            "SELECT coalesce(l.relation::regclass::text, l.locktype) FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE NOT l.granted AND a.datname = current_database()"
        ).fetchall()
    assert row is not None
    return int(row[0]), [str(w[0]).rsplit(".", 1)[-1] for w in waits]


def create_jobs(url: str, n: int) -> list[str]:
    """``n`` queued jobs, stored as the API stores them."""
    from api.jobs import create_job
    from api.tokens import OPEN
    from core.db import make_engine, make_session_factory
    from core.settings import Settings
    from migrations.migrate import upgrade
    from models.spec import JobSpec

    upgrade(url)
    settings = Settings(database_url=url, max_jobs_in_flight=n + 1)
    spec = JobSpec.model_validate(
        {
            "name": "fleet",
            "model": {"builtin": "mlp", "params": {"hidden_units": [8]}},
            "compile": {"optimizer": "adam", "loss": "sparse_categorical_crossentropy"},
            "data": {"train": {"dataset": "builtin:iris", "split": "train"}},
            "fit": {"epochs": 5},
        }
    )
    engine = make_engine(url)
    factory = make_session_factory(engine)
    ids = []
    with factory() as session:
        for _ in range(n):
            job, _ = create_job(session, spec, settings, None, OPEN)
            ids.append(job.id)
    engine.dispose()
    return ids


class Timings:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spans: dict[str, list[float]] = {}
        self.errors: list[str] = []
        self.jobs: list[tuple[str, float, float]] = []  # (worker, started, ended)

    def timed(self, name: str, fn: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                with self.lock:
                    self.spans.setdefault(name, []).append(time.perf_counter() - t)

        return run


def simulated_worker(
    name: str, url: str, jobs: Any, args: argparse.Namespace, timings: Timings
) -> None:
    from core.db import make_engine, make_session_factory
    from models.states import JobStatus, StopReason
    from worker.execution import WORKER_MAX_OVERFLOW, WORKER_POOL_SIZE
    from worker.jobstore import JobStore
    from worker.writer import JobWriter

    # The engine a pool process makes (worker.execution.session_factory), one per worker.
    engine = make_engine(url, pool_size=WORKER_POOL_SIZE, max_overflow=WORKER_MAX_OVERFLOW)
    factory = make_session_factory(engine)
    try:
        while True:
            try:
                # Not get_nowait(): it gives up at once while another process holds
                # the queue's lock, and the worker would leave with work left.
                job_id = jobs.get(timeout=2)
            except Exception:  # noqa: BLE001 - queue.Empty: no work left
                return
            store = JobStore(factory, job_id, args.lease_s)
            for op in ("progress", "heartbeat", "record_epoch", "record_checkpoint"):
                setattr(store, op, timings.timed(op, getattr(store, op)))
            if timings.timed("claim", store.claim)(name) is None:
                continue
            writer = JobWriter(store, args.lease_s / 3, 1.0)
            started = time.time()
            try:
                run_epochs(writer, args)
                finish = functools.partial(
                    timings.timed("finish", store.finish), JobStatus.SUCCEEDED, StopReason.COMPLETED
                )
                writer.call(finish)
            except Exception as exc:  # noqa: BLE001 - counted, reported
                with timings.lock:
                    timings.errors.append(f"{type(exc).__name__}: {exc}"[:200])
            finally:
                writer.close()
                with timings.lock:
                    timings.jobs.append((name, started, time.time()))
    finally:
        engine.dispose()


def run_epochs(writer: Any, args: argparse.Namespace) -> None:
    steps = max(1, round(args.epoch_s / args.progress_s))
    for epoch in range(1, args.epochs + 1):
        for step in range(steps):
            time.sleep(args.epoch_s / steps)
            writer.progress(epoch, step + 1, steps)
        writer.record_checkpoint(
            epoch, f"checkpoints/epoch{epoch:02d}.keras", "val_loss", 0.39, True, 83150
        )
        writer.record_epoch(epoch, METRICS, 0.001, args.epoch_s, None, CALLBACK_STATE)


def process_main(
    index: int, n_workers: int, url: str, jobs: Any, args: argparse.Namespace, out: Any
) -> None:
    timings = Timings()
    threads = [
        threading.Thread(
            target=simulated_worker,
            args=(f"fleet-{index}-{i}", url, jobs, args, timings),
            daemon=True,
        )
        for i in range(n_workers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put({"spans": timings.spans, "errors": timings.errors, "jobs": timings.jobs})


def postgres_cpu() -> float:
    total = 0.0
    for p in psutil.process_iter(["name"]):
        if p.info["name"] and p.info["name"].startswith("postgres"):
            try:
                cpu = p.cpu_times()
            except psutil.Error:
                continue
            # A backend that has ended counts in its parent's children_* times.
            total += cpu.user + cpu.system + cpu.children_user + cpu.children_system
    return total


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(n_workers: int, args: argparse.Namespace) -> dict[str, Any]:
    url = fresh_schema(PG_URL)
    job_ids = create_jobs(url, n_workers * args.jobs_per_worker)
    ctx = mp.get_context("fork")
    jobs, out = ctx.Queue(), ctx.Queue()
    for job_id in job_ids:
        jobs.put(job_id)
    time.sleep(0.2)  # the queue's feeder thread has handed every id over
    sizes = [args.per_process] * (n_workers // args.per_process)
    if n_workers % args.per_process:
        sizes.append(n_workers % args.per_process)
    cpu0, t0 = postgres_cpu(), time.perf_counter()
    procs = [
        ctx.Process(target=process_main, args=(i, size, url, jobs, args, out))
        for i, size in enumerate(sizes)
    ]
    for p in procs:
        p.start()
    peak, samples, waiting = 0, 0, Counter[str]()
    results: list[dict[str, Any]] = []
    while len(results) < len(procs):
        connections, waits = server_state(url)
        peak, samples = max(peak, connections), samples + 1
        waiting.update(waits)
        try:
            results.append(out.get(timeout=0.5))
        except Exception:  # noqa: BLE001 - queue.Empty: still running
            continue
    for p in procs:
        p.join()
    wall, cpu = time.perf_counter() - t0, postgres_cpu() - cpu0
    spans: dict[str, list[float]] = {}
    errors: list[str] = []
    ran: list[tuple[str, float, float]] = []
    for r in results:
        errors += r["errors"]
        ran += r["jobs"]
        for k, v in r["spans"].items():
            spans.setdefault(k, []).extend(v)
    summary = summarise(n_workers, wall, cpu, peak, spans, errors)
    # Mean number of backends found waiting on a lock, by what they waited for.
    summary["lock_waits"] = {k: v / samples for k, v in waiting.most_common()}
    summary["workers_that_trained"] = len({name for name, _, _ in ran})
    summary["peak_training"] = peak_overlap([(start, end) for _, start, end in ran])
    return summary


def peak_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals that were open at one moment."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    peak = now = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


def summarise(
    n: int, wall: float, cpu: float, peak: int, spans: dict[str, list[float]], errors: list[str]
) -> dict[str, Any]:
    ops = {
        k: {
            "n": len(v),
            "p50_ms": 1000 * statistics.median(v),
            "p99_ms": 1000 * percentile(v, 0.99),
            "per_s": len(v) / wall,
        }
        for k, v in sorted(spans.items())
    }
    return {
        "workers": n,
        "wall_s": wall,
        "db_cpu_cores": cpu / wall,
        "peak_connections": peak,
        "ops": ops,
        "errors": errors[:5],
        "n_errors": len(errors),
    }


def print_row(r: dict[str, Any]) -> None:
    ops = r["ops"]
    line = (
        f"{r['workers']:4d} workers: {r['wall_s']:6.1f} s, db CPU {r['db_cpu_cores']:.2f} cores, "
        f"{r['peak_connections']} connections, {r['n_errors']} errors"
    )
    print(line)
    print(
        f"      {r['workers_that_trained']} workers trained a job; "
        f"at most {r['peak_training']} jobs trained at once"
    )
    waits = ", ".join(f"{k} {v:.2f}" for k, v in r.get("lock_waits", {}).items()) or "none seen"
    print(f"      backends waiting on a lock (mean of samples): {waits}")
    for k, v in ops.items():
        print(
            f"      {k:18s} {v['n']:6d} ({v['per_s']:7.1f}/s)"
            f"  p50 {v['p50_ms']:7.2f} ms  p99 {v['p99_ms']:7.2f} ms"
        )
    for e in r["errors"]:
        print(f"      error: {e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="10,25,50,100,200")
    parser.add_argument("--per-process", type=int, default=10)
    parser.add_argument("--jobs-per-worker", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--epoch-s", type=float, default=2.0)
    parser.add_argument("--progress-s", type=float, default=1.0)
    parser.add_argument("--lease-s", type=float, default=60.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-check-connections", dest="check", action="store_false")
    parser.add_argument("--own-postgres", type=int, metavar="MAX_CONNECTIONS")
    args = parser.parse_args()
    global PG_URL
    with contextlib.ExitStack() as stack:
        if args.own_postgres:
            PG_URL = stack.enter_context(own_postgres(args.own_postgres))
        run_sizes(args)


def run_sizes(args: argparse.Namespace) -> None:
    limit = int(server_setting(PG_URL, "max_connections"))
    print(f"fleet: PostgreSQL max_connections={limit} at {PG_URL}; run {uuid.uuid4().hex[:8]}")
    rows = []
    for n in (int(x) for x in args.workers.split(",")):
        need = n * CONNECTIONS_PER_WORKER + 10
        if args.check and need > limit:
            print(f"{n:4d} workers: skipped, may hold {need} connections (max {limit})")
            continue
        rows.append(measure(n, args))
        print_row(rows[-1])
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
