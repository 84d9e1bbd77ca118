"""A real API without a worker, for the client's tests: what it accepts stays queued."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Backend, Service, free_port


@pytest.fixture(scope="module")
def api_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """``fitq api`` on SQLite and the embedded broker, migrated; no worker runs."""
    from migrations.migrate import upgrade

    tmp = tmp_path_factory.mktemp("api")
    service = Service(
        Backend("sqlite", f"sqlite:///{tmp / 'fitq.db'}", None), tmp, f"api-{uuid.uuid4().hex[:6]}"
    )
    upgrade(service.backend.database_url)
    service.port = free_port()
    service.base_url = f"http://127.0.0.1:{service.port}"
    service.start_process("api", "api", "--port", str(service.port))
    service.client = httpx.Client(base_url=service.base_url, timeout=30)

    def ready() -> bool:
        try:
            return service.client.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    try:
        service.wait_until(ready, 60, "the API to answer /readyz")
        yield service
    finally:
        service.stop()
