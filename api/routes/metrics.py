"""Prometheus metrics for operators."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector
from prometheus_client.exposition import generate_latest

from api.deps import SessionDep, SettingsDep
from api.metrics import REQUEST_SECONDS, JobsCollector

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "Prometheus' text format.",
        }
    },
)
def metrics(session: SessionDep, settings: SettingsDep) -> Response:
    """Prometheus metrics: jobs by status and queue, queue depth, job and epoch
    durations, epochs per second, live workers and their devices, this process's
    request latency by route, CPU and memory."""
    # No auto_describe: it would run the collector's queries once more, to name them.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobsCollector(session, settings))
    registry.register(REQUEST_SECONDS)
    ProcessCollector(registry=registry)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
