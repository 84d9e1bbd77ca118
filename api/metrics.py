"""Prometheus metrics for operators: what the database says, and the API's own latency.

Job and epoch figures are read from the database at each scrape (``JobsCollector``),
so every API process reports the same numbers, however many there are and whichever
of them trained nothing. A scrape reads no history: the counts and the two duration
histograms come from ``metric_rollups``, which triggers keep on every write (migration
0011); the rest are bounded queries (queued and running jobs, the last minute's
epochs, live workers). Request latency is measured in this process by
``RequestLatencyMiddleware``.
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.settings import Settings
from models.states import STATUSES, JobStatus
from models.tables import EpochMetric, Job, MetricRollup, Worker, utcnow

JOB_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
EPOCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
RATE_WINDOW_S = 60

REQUEST_SECONDS = Histogram(
    "fitq_http_request_duration_seconds",
    "Seconds from a request's arrival to its response's status line, by route template.",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS,
    registry=None,
)


class RequestLatencyMiddleware:
    """Observes each HTTP request in ``fitq_http_request_duration_seconds``.

    The ``route`` label is the matched path template (``/v1/jobs/{job_id}``), or
    ``unmatched``, so that ids and stray paths add no series. The time ends when the
    response starts, so a long download or an event stream counts as one quick answer.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        observed = False

        def observe(status: int) -> None:
            nonlocal observed
            if observed:
                return
            observed = True
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            REQUEST_SECONDS.labels(scope["method"], route, str(status)).observe(
                time.perf_counter() - start
            )

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                observe(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            observe(500)


def _histograms(
    family: HistogramMetricFamily,
    rows: Iterable[Any],
    buckets: Sequence[float],
) -> HistogramMetricFamily:
    """Adds rollup rows ``(labels, bucket index, count, sum)`` to ``family``.

    A bucket index is that of the first bucket the value fits in, ``len(buckets)`` for
    none; the family's buckets are cumulative, as Prometheus wants them.
    """
    by_labels: dict[tuple[str, ...], tuple[list[int], float]] = {}
    for labels, bucket, n, total in rows:
        counts, sum_ = by_labels.get(labels, ([0] * (len(buckets) + 1), 0.0))
        counts[min(int(bucket), len(buckets))] += int(n)
        by_labels[labels] = (counts, sum_ + float(total))
    for labels, (counts, total) in sorted(by_labels.items()):
        cumulative = list(itertools.accumulate(counts))
        family.add_metric(
            list(labels),
            [(str(float(b)), c) for b, c in zip(buckets, cumulative, strict=False)]
            + [("+Inf", cumulative[-1])],
            total,
        )
    return family


class JobsCollector(Collector):
    """What the database says of jobs, epochs and workers, read at scrape time.

    Args:
        session: A session on the job database.
        settings: For the lease, which tells a live worker from a silent one.
    """

    def __init__(self, session: Session, settings: Settings) -> None:
        self.session = session
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        now = utcnow()
        yield from self._jobs(now)
        yield self._job_durations()
        yield from self._epochs(now)
        yield from self._workers(now)

    def _jobs(self, now: dt.datetime) -> Iterator[Metric]:
        s = self.session
        counts: dict[str, dict[str, int]] = {}
        for queue, status, n in s.execute(
            select(MetricRollup.queue, MetricRollup.status, func.sum(MetricRollup.n))
            .where(MetricRollup.metric == "jobs")
            .group_by(MetricRollup.queue, MetricRollup.status)
        ):
            counts.setdefault(queue, {})[status] = int(n)
        jobs = GaugeMetricFamily(
            "fitq_jobs", "Jobs in each status, by queue.", labels=["queue", "status"]
        )
        created = CounterMetricFamily(
            "fitq_jobs_created", "Jobs ever submitted, by queue.", labels=["queue"]
        )
        depth = GaugeMetricFamily(
            "fitq_queue_depth", "Jobs waiting for a worker, by queue.", labels=["queue"]
        )
        for queue, by_status in sorted(counts.items()):
            for status in STATUSES:
                jobs.add_metric([queue, status], by_status.get(status, 0))
            created.add_metric([queue], sum(by_status.values()))
            depth.add_metric([queue], by_status.get(JobStatus.QUEUED, 0))
        oldest = GaugeMetricFamily(
            "fitq_queue_oldest_job_age_seconds",
            "Seconds the longest-waiting queued job has waited, by queue.",
            labels=["queue"],
        )
        for queue, by_status in sorted(counts.items()):
            if not by_status.get(JobStatus.QUEUED):
                continue
            # One index seek per queue (ix_jobs_status_queue_created_at), however long
            # the backlog.
            created_at = s.scalar(
                select(func.min(Job.created_at)).where(
                    Job.status == JobStatus.QUEUED, Job.queue == queue
                )
            )
            if created_at is not None:
                oldest.add_metric([queue], (now - _utc(created_at)).total_seconds())
        yield from (jobs, created, depth, oldest)

    def _rollup(self, metric: str) -> Iterator[tuple[tuple[str, ...], int, int, float]]:
        for queue, status, bucket, n, total in self.session.execute(
            select(
                MetricRollup.queue,
                MetricRollup.status,
                MetricRollup.bucket,
                func.sum(MetricRollup.n),
                func.sum(MetricRollup.total),
            )
            .where(MetricRollup.metric == metric)
            .group_by(MetricRollup.queue, MetricRollup.status, MetricRollup.bucket)
        ):
            labels = (queue, status) if status else (queue,)
            yield labels, bucket, n, total

    def _job_durations(self) -> Metric:
        family = HistogramMetricFamily(
            "fitq_job_duration_seconds",
            "Seconds from a job's first start to its end, by queue and final status.",
            labels=["queue", "status"],
        )
        return _histograms(family, self._rollup("job_duration"), JOB_BUCKETS)

    def _epochs(self, now: dt.datetime) -> Iterator[Metric]:
        s = self.session
        family = HistogramMetricFamily(
            "fitq_epoch_duration_seconds",
            "Wall-clock seconds of each recorded epoch, by queue.",
            labels=["queue"],
        )
        yield _histograms(family, self._rollup("epoch_duration"), EPOCH_BUCKETS)
        rate = GaugeMetricFamily(
            "fitq_epochs_per_second",
            f"Epochs recorded per second over the last {RATE_WINDOW_S} s, by queue.",
            labels=["queue"],
        )
        since = now - dt.timedelta(seconds=RATE_WINDOW_S)
        for queue, n in s.execute(
            select(Job.queue, func.count())
            .select_from(EpochMetric)
            .join(Job, Job.id == EpochMetric.job_id)
            .where(EpochMetric.recorded_at >= since)
            .group_by(Job.queue)
        ):
            rate.add_metric([queue], int(n) / RATE_WINDOW_S)
        yield rate

    def _workers(self, now: dt.datetime) -> Iterator[Metric]:
        s = self.session
        alive_since = now - dt.timedelta(seconds=self.settings.lease_seconds)
        busy = {
            w for (w,) in s.execute(select(Job.worker).where(Job.status == JobStatus.RUNNING)) if w
        }
        states: dict[tuple[str, str], int] = {}
        devices: dict[str, int] = {}
        for name, kind, count in s.execute(
            select(Worker.name, Worker.device_kind, Worker.devices).where(
                Worker.stopped_at.is_(None), Worker.heartbeat_at >= alive_since
            )
        ):
            key = (kind, "busy" if name in busy else "idle")
            states[key] = states.get(key, 0) + 1
            devices[kind] = devices.get(kind, 0) + int(count)
        workers = GaugeMetricFamily(
            "fitq_workers",
            "Live workers, by device kind and whether they train a job now.",
            labels=["device_kind", "state"],
        )
        for kind in sorted({k for k, _ in states} | {"gpu", "cpu"}):
            for state in ("busy", "idle"):
                workers.add_metric([kind, state], states.get((kind, state), 0))
        total = GaugeMetricFamily(
            "fitq_worker_devices",
            "Devices of the live workers (GPUs, or logical CPUs), by kind.",
            labels=["device_kind"],
        )
        for kind in ("gpu", "cpu"):
            total.add_metric([kind], devices.get(kind, 0))
        yield from (workers, total)


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
