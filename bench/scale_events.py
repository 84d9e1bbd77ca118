"""The event stream's database load as followers grow (``bench.scale_api --followers``).

The API runs in this process under uvicorn, on a database filled by
``bench.scale_api`` (1,000 jobs, 1,000 epoch rows), so that a SQLAlchemy
``before_cursor_execute`` listener counts the statements its engine sends. A simulated
worker (its own engine, not counted) records an epoch of one running job every second
(the epoch row, then the job row's progress, as the worker's jobstore does). N clients
follow that job's ``/v1/jobs/{id}/events`` from its current epoch; once every one has
had its catch-up (its first ``job`` event) and 2 s more have passed, the API's
statements are counted for ``seconds`` and reported per second, with the epoch events
each follower received in that time. Connecting costs a few queries per follower
(authorisation, catch-up), so they are left out of the count: it is the steady state.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlalchemy import create_engine, event, insert, update
from sqlalchemy.engine import Engine

from bench.scale_api import Layout, _free_port, prepare


class _Counter:
    def __init__(self, excluded: Engine) -> None:
        self.excluded = excluded
        self.n = 0
        self.lock = threading.Lock()

    def __call__(self, conn: Any, *_args: Any) -> None:
        if conn.engine is not self.excluded:
            with self.lock:
                self.n += 1


def _worker(url: str, job_id: str, stop: threading.Event) -> int:
    """Records an epoch of ``job_id`` every second until ``stop``; returns the last."""
    from models.tables import EpochMetric, Job

    engine = create_engine(url)
    epoch = 1000
    while not stop.wait(1.0):
        epoch += 1
        now = dt.datetime.now(dt.UTC)
        with engine.begin() as conn:
            conn.execute(
                insert(EpochMetric).values(
                    job_id=job_id, epoch=epoch, metrics={"loss": 1 / epoch}, duration_s=1.0
                )
            )
            conn.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(updated_at=now, progress_epoch=epoch, latest_metrics={"loss": 1 / epoch})
            )
    engine.dispose()
    return epoch


async def _follow(base: str, path: str, epochs: list[int], ready: asyncio.Event) -> None:
    """Follows until cancelled; ``ready`` once the catch-up is in (the first ``job``)."""
    async with (
        httpx.AsyncClient(base_url=base, timeout=None) as client,
        client.stream("GET", path) as response,
    ):
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line == "event: job":
                ready.set()
            elif line == "event: epoch":
                epochs.append(1)


async def _measure(
    base: str, job_id: str, n: int, seconds: float, count: _Counter
) -> dict[str, Any]:
    received: list[list[int]] = [[] for _ in range(n)]
    ready = [asyncio.Event() for _ in range(n)]
    async with httpx.AsyncClient(base_url=base) as client:
        listed = await client.get(f"/v1/jobs/{job_id}/metrics?after_epoch=1000&limit=10000")
        epoch = listed.json()["last_epoch"]
    path = f"/v1/jobs/{job_id}/events?after_epoch={epoch}"
    tasks = [asyncio.create_task(_follow(base, path, received[i], ready[i])) for i in range(n)]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), timeout=300)
    await asyncio.sleep(2.0)
    for r in received:
        r.clear()
    before, start = count.n, time.perf_counter()
    await asyncio.sleep(seconds)
    queries, elapsed = count.n - before, time.perf_counter() - start
    epochs = [len(r) for r in received]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "followers": n,
        "queries_per_s": queries / elapsed,
        "epoch_events_per_follower_min": min(epochs),
        "epoch_events_per_follower_max": max(epochs),
    }


def run_followers(db: str, counts: list[int], seconds: float) -> list[dict[str, Any]]:
    """Queries per second of the API with each number of followers of one running job."""
    from api.main import create_app
    from core.settings import Settings

    layout = Layout(1_000, 1_000)
    job_id = layout.job_id(101)  # running, 20 epochs
    out = []
    with tempfile.TemporaryDirectory(prefix="fitq-events-") as tmp:
        work = Path(tmp) / "events"
        url, _ = prepare(db, layout, work)
        settings = Settings(
            database_url=url,
            data_dir=work / "data",
            events_max_streams_per_owner=max(counts) + 10,
            events_max_seconds=3600,
        )
        port = _free_port()
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings), port=port, log_level="warning", access_log=False)
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.1)
        worker_engine = create_engine(url)
        counter = _Counter(worker_engine)
        event.listen(Engine, "before_cursor_execute", counter)
        stop = threading.Event()
        writer = threading.Thread(target=_worker, args=(url, job_id, stop), daemon=True)
        writer.start()
        try:
            for n in counts:
                row = asyncio.run(_measure(f"http://127.0.0.1:{port}", job_id, n, seconds, counter))
                print(
                    f"[{db}] followers {n:4d}: {row['queries_per_s']:6.1f} queries/s, "
                    f"epoch events per follower {row['epoch_events_per_follower_min']}-"
                    f"{row['epoch_events_per_follower_max']}",
                    flush=True,
                )
                out.append(row)
        finally:
            stop.set()
            writer.join()
            event.remove(Engine, "before_cursor_execute", counter)
            server.should_exit = True
            thread.join(timeout=30)
    print(json.dumps(out))
    return out
