"""What the ``/metrics`` rollup triggers add to a worker's epoch write
(``bench.scale_api --write-cost``).

Two databases filled alike (1,000 jobs, 1,000 epoch rows, at the latest migration); the
second has its rollup triggers dropped. One epoch write as the worker makes it (a
transaction: the epoch row, then the job row's progress) is timed on each in turn, in
blocks of 100, 1,000 on each.
"""

from __future__ import annotations

import datetime as dt
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert, text, update
from sqlalchemy.engine import Engine

from bench.scale_api import Layout, prepare

BLOCKS = 10
PER_BLOCK = 100


def _drop_triggers(engine: Engine) -> None:
    with engine.begin() as conn:
        for table in ("jobs", "epoch_metrics"):
            if engine.dialect.name == "postgresql":
                conn.execute(text(f"DROP FUNCTION IF EXISTS rollup_{table}() CASCADE"))
                continue
            for event in ("insert", "delete", "update"):
                conn.execute(text(f"DROP TRIGGER IF EXISTS rollup_{table}_{event}"))


def _writes(engine: Engine, job_id: str, first: int) -> list[float]:
    from models.tables import EpochMetric, Job

    times = []
    for epoch in range(first, first + PER_BLOCK):
        start = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(
                insert(EpochMetric).values(
                    job_id=job_id, epoch=epoch, metrics={"loss": 0.1}, duration_s=1.5
                )
            )
            conn.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(updated_at=dt.datetime.now(dt.UTC), progress_epoch=epoch)
            )
        times.append((time.perf_counter() - start) * 1000)
    return times


def run_write_cost(db: str) -> dict[str, Any]:
    """Median and mean ms of an epoch write, with and without the triggers."""
    layout = Layout(1_000, 1_000)
    job_id = layout.job_id(101)
    with tempfile.TemporaryDirectory(prefix="fitq-writes-") as tmp:
        engines = [
            create_engine(prepare(db, layout, Path(tmp) / name)[0])
            for name in ("triggers", "plain")
        ]
        _drop_triggers(engines[1])
        times: list[list[float]] = [[], []]
        for block in range(BLOCKS):
            for engine, out in zip(engines, times, strict=True):
                out += _writes(engine, job_id, 2000 + block * PER_BLOCK)
        for engine in engines:
            engine.dispose()
    result = {
        name: {"p50_ms": statistics.median(t), "mean_ms": statistics.mean(t)}
        for name, t in zip(("with_triggers", "without_triggers"), times, strict=True)
    }
    print(f"[{db}] epoch write {result}", flush=True)
    return result
