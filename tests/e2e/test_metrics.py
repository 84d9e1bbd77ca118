"""GET /metrics scraped before, during and after a real job, read with prometheus_client's
own parser: the job counters and the duration histograms move as the job trains."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Service
from tests.factories import digits_spec

pytestmark = pytest.mark.e2e

Samples = list[tuple[str, dict[str, str], float]]
EPOCHS = 12


def scrape(svc: Service) -> Samples:
    resp = svc.client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    ]


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(v for n, lab, v in samples if n == name and labels.items() <= lab.items())


def buckets(samples: Samples, name: str, **labels: str) -> list[tuple[float, float]]:
    found = [
        (float(lab["le"]), v)
        for n, lab, v in samples
        if n == f"{name}_bucket" and labels.items() <= lab.items()
    ]
    return sorted(found)


def seconds(a: str, b: str) -> float:
    return (dt.datetime.fromisoformat(b) - dt.datetime.fromisoformat(a)).total_seconds()


def test_metrics_move_while_a_job_trains(service: Service) -> None:
    q = service.queue
    before = scrape(service)
    job = service.submit(digits_spec(**{"fit.epochs": EPOCHS, "fit.batch_size": 8}))

    during: Samples = []
    workers: list[dict[str, Any]] = []

    def scraped_while_training() -> bool:
        nonlocal during, workers
        rows = service.metrics(job["id"])
        if service.job(job["id"])["status"] != "running" or len(rows) < 2:
            return False
        during = scrape(service)
        workers = service.client.get("/v1/workers").json()["items"]
        # Only what was read while the job still ran counts.
        return service.job(job["id"])["status"] == "running"

    service.wait_until(scraped_while_training, 120, "a scrape while the job trains")
    assert value(during, "fitq_jobs", queue=q, status="running") == 1
    assert value(during, "fitq_jobs_created_total", queue=q) == (
        value(before, "fitq_jobs_created_total", queue=q) + 1
    )
    epochs_during = value(during, "fitq_epoch_duration_seconds_count", queue=q)
    assert value(before, "fitq_epoch_duration_seconds_count", queue=q) + 2 <= epochs_during
    assert epochs_during < value(before, "fitq_epoch_duration_seconds_count", queue=q) + EPOCHS
    assert value(during, "fitq_epochs_per_second", queue=q) > 0
    assert value(during, "fitq_workers", state="busy") >= 1
    (busy,) = [w for w in workers if w["job"] is not None]
    assert busy["alive"] and busy["job"]["id"] == job["id"] and busy["job"]["epochs"] == EPOCHS
    assert busy["job"]["epoch"] >= 2 and q in busy["queues"]

    done = service.wait_for(job["id"])
    assert done["status"] == "succeeded", done["error"]
    after = scrape(service)
    rows = service.metrics(job["id"])
    assert len(rows) == EPOCHS

    assert value(after, "fitq_jobs", queue=q, status="running") == 0
    assert value(after, "fitq_jobs", queue=q, status="succeeded") == (
        value(before, "fitq_jobs", queue=q, status="succeeded") + 1
    )
    job_labels = {"queue": q, "status": "succeeded"}
    assert value(after, "fitq_job_duration_seconds_count", **job_labels) == (
        value(before, "fitq_job_duration_seconds_count", **job_labels) + 1
    )
    added = value(after, "fitq_job_duration_seconds_sum", **job_labels) - value(
        before, "fitq_job_duration_seconds_sum", **job_labels
    )
    assert added == pytest.approx(seconds(done["started_at"], done["finished_at"]), abs=0.01)

    assert value(after, "fitq_epoch_duration_seconds_count", queue=q) == (
        value(before, "fitq_epoch_duration_seconds_count", queue=q) + EPOCHS
    )
    added = value(after, "fitq_epoch_duration_seconds_sum", queue=q) - value(
        before, "fitq_epoch_duration_seconds_sum", queue=q
    )
    assert added == pytest.approx(sum(r["duration_s"] for r in rows), rel=1e-6)

    for name, labels in (
        ("fitq_epoch_duration_seconds", {"queue": q}),
        ("fitq_job_duration_seconds", job_labels),
    ):
        counts = buckets(after, name, **labels)
        assert counts[-1][0] == math.inf
        assert counts[-1][1] == value(after, f"{name}_count", **labels)
        assert [c for _, c in counts] == sorted(c for _, c in counts)

    # The polling above went through the API: its latency histogram counted it.
    route = {"method": "GET", "route": "/v1/jobs/{job_id}", "status": "200"}
    assert value(after, "fitq_http_request_duration_seconds_count", **route) > value(
        before, "fitq_http_request_duration_seconds_count", **route
    )
    assert value(after, "fitq_http_request_duration_seconds_sum", **route) > 0
    assert value(after, "fitq_queue_depth", queue=q) == 0
