"""schemathesis against fitq's own OpenAPI schema: every operation, generated requests,
never a 5xx and never a response that breaks the schema."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis import checks  # noqa: E402

from api.main import create_app  # noqa: E402
from models.migrate import upgrade  # noqa: E402
from models.settings import Settings  # noqa: E402

# What the API promises of every response. A schema-valid spec may still be refused for
# what the schema can't express (an unknown metric, a shape mismatch): that is a 422,
# documented, so positive_data_acceptance is not among them.
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]
EXAMPLES = int(os.environ.get("FITQ_FUZZ_EXAMPLES", "500"))
_TMP = Path(tempfile.mkdtemp(prefix="fitq-fuzz-"))
SETTINGS = Settings(
    data_dir=_TMP, database_url=f"sqlite:///{_TMP / 'fuzz.db'}", max_upload_bytes=1 << 20
)
upgrade(SETTINGS.resolved_database_url)
APP = create_app(SETTINGS)
SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", APP)
OPERATIONS = {op.ok().label: op.ok() for op in SCHEMA.get_all_operations()}


@pytest.fixture(scope="module")
def running_app() -> Iterator[None]:
    with TestClient(APP):  # the app's start-up: database, broker, settings
        yield


@pytest.mark.slow
@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_api_never_errs(running_app: None, label: str) -> None:
    operation = OPERATIONS[label]
    calls: list[int] = []

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def check(case: Any) -> None:
        response = case.call_and_validate(checks=CHECKS)
        calls.append(response.status_code)

    check()
    print(f"\n{label}: {len(calls)} generated requests, statuses {sorted(set(calls))}")
    assert calls and all(code < 500 for code in calls)
