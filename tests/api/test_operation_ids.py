"""The OpenAPI document names each operation after its handler (``submit_job``, not
``submit_job_v1_jobs_post``), so a generated client reads as the API's own code."""

from __future__ import annotations

import importlib
import pkgutil
from collections import Counter

from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

import api.routes


def handlers() -> list[str]:
    """The names of the handlers of every route module's documented operations."""
    names: list[str] = []
    for module in pkgutil.iter_modules(api.routes.__path__):
        router = importlib.import_module(f"api.routes.{module.name}").router
        names += [
            route.endpoint.__name__
            for route in router.routes
            if isinstance(route, APIRoute) and route.include_in_schema
            for _method in route.methods or ()  # one operation each
        ]
    return names


def test_operation_ids_are_the_handler_names_and_unique(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    ids = [op["operationId"] for path in document["paths"].values() for op in path.values()]
    assert [name for name, n in Counter(ids).items() if n > 1] == []
    assert sorted(ids) == sorted(handlers())
    assert {"submit_job", "get_job", "get_metrics", "job_events", "upload_dataset"} <= set(ids)
