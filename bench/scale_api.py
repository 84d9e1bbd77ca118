"""How the API's answers grow with the database: latency at 1k to 1M epoch rows.

For each size, the benchmark fills a fresh fitq database with jobs and epoch rows by
bulk inserts (``executemany`` on SQLite, ``COPY`` on PostgreSQL; not through the API)
at migration 0010, upgrades it to the latest migration (which builds the ``/metrics``
rollups from those rows: its time is reported), starts the real API with uvicorn in a
subprocess, and times sequential requests over one keep-alive connection:

- ``GET /metrics`` (the Prometheus scrape);
- ``GET /v1/jobs/{id}`` of an ordinary job and of the job with the most epochs, and of
  that job again after each change a training worker makes (one new epoch row and the
  job row's ``updated_at``, written by this process before each request);
- ``GET /v1/jobs/{id}/metrics?after_epoch=`` near the end of the biggest job;
- ``GET /v1/jobs``: the first page, ``?status=succeeded`` and ``?status=running``
  (a rare status; pages of 10, as many as the smallest size has), the next page by
  cursor, and a page from a cursor half-way down.

It reports p50 and p99 per endpoint and size, and the ratio of the largest size's p99
to the smallest's (goal: at most 2).

Sizes (jobs, epoch rows): 1k/1k, 100k/100k and 100k/1M, the biggest job holding a
fifth of the epoch rows (200,000 at 1M); ``--quick`` runs 1k/1k and 10k/20k with fewer
requests, as a smoke test. Jobs are 90 % succeeded, 4 % failed, 3 % cancelled, 1 %
queued, 1 % running, a tenth of them on a second queue.

``--followers 1,10,50,200`` measures the event stream instead: the API runs in this
process (so that a SQLAlchemy listener counts its queries), one running job gets an
epoch row a second from a simulated worker, and N clients follow
``/v1/jobs/{id}/events``; it reports the API's database queries per second for each N
(the change feed reads all followed jobs' markers in one query a tick, so the rate
should not grow with N).

``--write-cost`` times a worker's epoch write with and without the rollup triggers
(``bench/scale_writes.py``). ``--explain`` prints the plans of the SQL the API sends
for each endpoint instead, at 100,000 jobs and 100,000 epoch rows, flagging any full
scan of jobs or epochs (``bench/scale_explain.py``).

    python -m bench.scale_api [--quick] [--db sqlite|postgres|both]
        [--followers 1,10,50,200] [--explain] [--write-cost] [--json FILE]

PostgreSQL is ``FITQ_BENCH_POSTGRES_URL`` (default: the test database on 127.0.0.1),
in a schema of its own per size (``fitq_bench_scale_0``, ...; dropped and made again at
the next run, left in place after it).
All the sizes' APIs run at once and answer in turn, request by request, so that the
rest of the machine's load weighs on each size alike.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get(
    "FITQ_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
SCHEMA = "fitq_bench_scale"
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
FULL_SIZES = ((1_000, 1_000), (100_000, 100_000), (100_000, 1_000_000))
QUICK_SIZES = ((1_000, 1_000), (10_000, 20_000))
SPEC = {
    "name": "bench",
    "seed": 1,
    "model": {"builtin": "mlp", "params": {"hidden_units": [16]}},
    "compile": {"optimizer": "adam", "loss": "sparse_categorical_crossentropy"},
    "data": {"train": {"dataset": "builtin:digits", "split": "train"}},
    "fit": {"batch_size": 32, "epochs": 10},
    "callbacks": [],
}


@dataclass(frozen=True)
class Layout:
    """Which rows a fill makes: ``jobs`` jobs, ``epochs`` epoch rows."""

    jobs: int
    epochs: int

    @property
    def big(self) -> int:
        """The epochs of the biggest job (job 1, running)."""
        return self.epochs // 5

    def status(self, i: int) -> str:
        r = i % 100
        if r == 0:
            return "queued"
        if r == 1:
            return "running"
        return "failed" if r < 6 else "cancelled" if r < 9 else "succeeded"

    def job_id(self, i: int) -> str:
        return f"{i:032d}"


def _job_row(layout: Layout, i: int) -> tuple[Any, ...]:
    status = layout.status(i)
    created = T0 + dt.timedelta(seconds=i)
    started = created + dt.timedelta(seconds=5) if status != "queued" else None
    finished = (
        started + dt.timedelta(seconds=30 + i % 5000)
        if started and status not in ("running",)
        else None
    )
    queue = "gpu" if i % 10 == 7 else "default"
    return (layout.job_id(i), queue, status, created, created, started, finished)


def _epoch_rows(layout: Layout) -> Iterator[tuple[Any, ...]]:
    """The biggest job's epochs, then 20 each for the other jobs that started."""
    left = layout.epochs
    i = 1
    while left > 0 and i < layout.jobs:
        if layout.status(i) != "queued":
            n = min(left, layout.big if i == 1 else 20)
            for e in range(1, n + 1):
                loss = 1.0 / e
                metrics = {"loss": loss, "accuracy": 1 - loss / 2, "val_loss": loss * 1.1}
                at = T0 + dt.timedelta(seconds=i, milliseconds=e)
                yield (layout.job_id(i), e, json.dumps(metrics), 0.001, 0.05 + e % 7, at, 1)
            left -= n
        i += 1


JOB_COLUMNS = "id, queue, status, created_at, updated_at, started_at, finished_at"
EPOCH_COLUMNS = "job_id, epoch, metrics, lr, duration_s, recorded_at, attempt"
JOB_CONSTANTS = {"spec": json.dumps(SPEC), "warnings": "[]", "spec_hash": "0" * 64}


def _sqlite_time(value: dt.datetime | None) -> str | None:
    return value.strftime("%Y-%m-%d %H:%M:%S.%f") if value is not None else None


def fill_sqlite(path: Path, layout: Layout) -> None:
    """Bulk inserts into a SQLite database at migration 0010."""
    with sqlite3.connect(path) as conn:
        extra = ", ".join(JOB_CONSTANTS)
        conn.executemany(
            f"INSERT INTO jobs ({JOB_COLUMNS}, {extra}, attempts, cancel_requested) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, 0)",
            (
                (*row[:3], *map(_sqlite_time, row[3:]), *JOB_CONSTANTS.values())
                for row in (_job_row(layout, i) for i in range(layout.jobs))
            ),
        )
        conn.executemany(
            f"INSERT INTO epoch_metrics ({EPOCH_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            ((*r[:5], _sqlite_time(r[5]), r[6]) for r in _epoch_rows(layout)),
        )


def fill_postgres(schema: str, layout: Layout) -> None:
    """``COPY`` into the PostgreSQL schema at migration 0010."""
    import psycopg

    dsn = POSTGRES_URL.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(f'SET search_path TO "{schema}"')
        extra = ", ".join(JOB_CONSTANTS)
        with cur.copy(
            f"COPY jobs ({JOB_COLUMNS}, {extra}, attempts, cancel_requested) FROM STDIN"
        ) as copy:
            for i in range(layout.jobs):
                copy.write_row((*_job_row(layout, i), *JOB_CONSTANTS.values(), 1, False))
        with cur.copy(f"COPY epoch_metrics ({EPOCH_COLUMNS}) FROM STDIN") as copy:
            for row in _epoch_rows(layout):
                copy.write_row(row)
        cur.execute("ANALYZE")


def _postgres_schema_url(schema: str) -> str:
    import psycopg

    plain = POSTGRES_URL.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"


def prepare(db: str, layout: Layout, work: Path) -> tuple[str, dict[str, float]]:
    """A filled, migrated database: its URL, and the seconds the fill and upgrade took.

    SQLite's file is in ``work``; PostgreSQL's schema is named after ``work``'s name.
    """
    from migrations.migrate import upgrade

    schema = f"{SCHEMA}_{work.name}"
    work.mkdir(parents=True, exist_ok=True)
    (work / "fitq.db").unlink(missing_ok=True)
    url = f"sqlite:///{work / 'fitq.db'}" if db == "sqlite" else _postgres_schema_url(schema)
    upgrade(url, "0010")
    start = time.perf_counter()
    if db == "sqlite":
        fill_sqlite(work / "fitq.db", layout)
    else:
        fill_postgres(schema, layout)
    filled = time.perf_counter()
    upgrade(url)
    if db == "sqlite":
        with sqlite3.connect(work / "fitq.db") as conn:
            conn.execute("ANALYZE")
    return url, {"fill_s": filled - start, "upgrade_s": time.perf_counter() - filled}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def api_process(url: str, work: Path) -> Iterator[str]:
    """The real API (uvicorn, one process) on the database; yields its base URL."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FITQ_")}
    env.update(FITQ_DATABASE_URL=url, FITQ_DATA_DIR=str(work / "data"), PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.main:app_factory", "--factory"]
        + ["--port", str(port), "--log-level", "warning", "--no-access-log"],
        env=env,
        cwd=ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code < 500:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            raise RuntimeError("the API did not start")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _cursor(layout: Layout, i: int) -> str:
    created = T0 + dt.timedelta(seconds=i)
    raw = f"{created.isoformat()}|{layout.job_id(i)}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def endpoints(client: httpx.Client, layout: Layout) -> dict[str, str]:
    """The paths timed, by the name the report gives them."""
    big = layout.job_id(1)
    first = client.get("/v1/jobs").json()
    return {
        "GET /metrics": "/metrics",
        "GET /v1/jobs/{id}": f"/v1/jobs/{layout.job_id(layout.jobs // 2 + 2)}",
        "GET /v1/jobs/{id} (biggest job)": f"/v1/jobs/{big}",
        CHANGED: f"/v1/jobs/{big}",
        "GET /v1/jobs/{id}/metrics?after_epoch=": (
            f"/v1/jobs/{big}/metrics?after_epoch={max(layout.big - 10, 0)}"
        ),
        "GET /v1/jobs": "/v1/jobs",
        "GET /v1/jobs?status=succeeded": "/v1/jobs?status=succeeded",
        # A page of 10: the smallest size has 10 running jobs, the larger ones 1,000.
        "GET /v1/jobs?status=running&limit=10": "/v1/jobs?status=running&limit=10",
        "GET /v1/jobs?cursor= (next page)": f"/v1/jobs?cursor={first['next_cursor']}",
        "GET /v1/jobs?cursor= (half-way)": f"/v1/jobs?cursor={_cursor(layout, layout.jobs // 2)}",
    }


CHANGED = "GET /v1/jobs/{id} (biggest job, after each change)"


class Trainer:
    """Writes what a worker training the biggest job writes between two requests: its
    next epoch row and the job row's ``updated_at``."""

    def __init__(self, url: str, layout: Layout) -> None:
        from sqlalchemy import create_engine

        self.engine = create_engine(url)
        self.job_id = layout.job_id(1)
        self.epoch = layout.big

    def epoch_done(self) -> None:
        from sqlalchemy import text

        self.epoch += 1
        now = dt.datetime.now(dt.UTC)
        loss = 1.0 / self.epoch
        with self.engine.begin() as conn:
            conn.execute(
                text("UPDATE jobs SET updated_at = :now WHERE id = :id"),
                {"now": now.replace(tzinfo=None), "id": self.job_id},
            )
            conn.execute(
                text(
                    f"INSERT INTO epoch_metrics ({EPOCH_COLUMNS}) "
                    "VALUES (:id, :epoch, :metrics, 0.001, 0.05, :now, 1)"
                ),
                {
                    "id": self.job_id,
                    "epoch": self.epoch,
                    "metrics": json.dumps({"loss": loss, "val_loss": loss * 1.1}),
                    "now": now.replace(tzinfo=None),
                },
            )

    def close(self) -> None:
        self.engine.dispose()


def _summary(times: list[float]) -> dict[str, float]:
    cold, warm = times[0], sorted(times[3:])
    return {
        "cold_ms": cold,
        "p50_ms": statistics.median(warm),
        "p99_ms": warm[min(len(warm) - 1, round(0.99 * (len(warm) - 1)))],
    }


def time_requests(
    bases: list[str], layouts: list[Layout], n: int, trainers: list[Trainer]
) -> list[dict[str, dict[str, float]]]:
    """p50, p99 and the first (cold) request's ms, per size and endpoint.

    The sizes' APIs answer in turn, request by request, so that the load of the rest
    of the machine falls on every size alike. Before each request of ``CHANGED``, the
    size's trainer records an epoch (outside the time).
    """
    clients = [httpx.Client(base_url=b, timeout=120) for b in bases]
    try:
        paths = [endpoints(c, layout) for c, layout in zip(clients, layouts, strict=True)]
        times: list[dict[str, list[float]]] = [{name: [] for name in p} for p in paths]
        for name in paths[0]:
            for _ in range(n + 3):
                for client, path, out, trainer in zip(clients, paths, times, trainers, strict=True):
                    if name == CHANGED:
                        trainer.epoch_done()
                    start = time.perf_counter()
                    response = client.get(path[name])
                    out[name].append((time.perf_counter() - start) * 1000)
                    if response.status_code != 200:
                        raise RuntimeError(f"{path[name]}: {response.status_code}")
        return [{name: _summary(t) for name, t in out.items()} for out in times]
    finally:
        for client in clients:
            client.close()


def run_latency(db: str, sizes: tuple[tuple[int, int], ...], n: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    layouts = [Layout(jobs, epochs) for jobs, epochs in sizes]
    labels = [f"{lay.jobs} jobs / {lay.epochs} epochs" for lay in layouts]
    with tempfile.TemporaryDirectory(prefix="fitq-scale-") as tmp, ExitStack() as apis:
        bases, trainers = [], []
        for i, (layout, label) in enumerate(zip(layouts, labels, strict=True)):
            work = Path(tmp) / str(i)
            url, setup = prepare(db, layout, work)
            print(
                f"[{db}] {label}: filled in {setup['fill_s']:.1f} s, "
                f"upgraded in {setup['upgrade_s']:.1f} s",
                flush=True,
            )
            results[label] = {"setup": setup}
            bases.append(apis.enter_context(api_process(url, work)))
            trainers.append(Trainer(url, layout))
            apis.callback(trainers[-1].close)
        timed = time_requests(bases, layouts, n, trainers)
        for label, timings in zip(labels, timed, strict=True):
            results[label]["timings"] = timings
            print(f"[{db}] {label}")
            for name, t in timings.items():
                print(
                    f"  {name:42s} p50 {t['p50_ms']:8.2f}  p99 {t['p99_ms']:8.2f}  "
                    f"cold {t['cold_ms']:8.2f} ms",
                    flush=True,
                )
    return results


def ratios(results: dict[str, Any]) -> dict[str, float]:
    """Largest size's p99 over the smallest's, per endpoint."""
    labels = list(results)
    small, large = results[labels[0]]["timings"], results[labels[-1]]["timings"]
    return {name: large[name]["p99_ms"] / small[name]["p99_ms"] for name in small}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few requests")
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--requests", type=int, default=None, help="per endpoint and size")
    parser.add_argument("--followers", default=None, help="e.g. 1,10,50,200: event streams")
    parser.add_argument("--seconds", type=float, default=10.0, help="per follower count")
    parser.add_argument("--explain", action="store_true", help="the hot queries' plans")
    parser.add_argument("--write-cost", action="store_true", help="the triggers' write cost")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    dbs = ("sqlite", "postgres") if args.db == "both" else (args.db,)
    report: dict[str, Any] = {}
    for db in dbs:
        if args.write_cost:
            from bench.scale_writes import run_write_cost

            report[db] = run_write_cost(db)
            continue
        if args.explain:
            from bench.scale_explain import run_explain

            report[db] = run_explain(db)
            continue
        if args.followers:
            from bench.scale_events import run_followers

            counts = [int(c) for c in args.followers.split(",")]
            report[db] = run_followers(db, counts, args.seconds)
            continue
        sizes = QUICK_SIZES if args.quick else FULL_SIZES
        n = args.requests or (20 if args.quick else 200)
        results = run_latency(db, sizes, n)
        report[db] = {"sizes": results, "p99_ratio_largest_to_smallest": ratios(results)}
        for name, r in report[db]["p99_ratio_largest_to_smallest"].items():
            print(f"[{db}] p99 ratio {name:42s} {r:6.2f}x", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
