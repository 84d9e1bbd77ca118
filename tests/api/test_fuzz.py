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
from core.settings import Settings  # noqa: E402
from migrations.migrate import upgrade  # noqa: E402

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
    data_dir=_TMP,
    database_url=f"sqlite:///{_TMP / 'fuzz.db'}",
    max_upload_bytes=1 << 20,
    events_max_seconds=0.2,  # event streams of unfinished jobs end, so the checks can read them
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


@pytest.fixture(scope="module")
def real_ids(running_app: None) -> dict[str, str]:
    """Real jobs and a dataset, so generated requests reach existing sub-resources too."""
    import numpy as np

    from storage.uploads import npz_bytes
    from tests.factories import digits_spec

    with TestClient(APP) as client:
        jobs = [
            client.post("/v1/jobs", json=digits_spec(name=f"fuzz{i}")).json()["id"]
            for i in range(3)
        ]
        ds = client.post(
            "/v1/datasets", files={"file": ("d.npz", npz_bytes(x=np.zeros((4, 2)), y=np.zeros(4)))}
        ).json()["id"]
    return {"job_id": jobs[0], "dataset_id": ds}


@pytest.mark.slow
@pytest.mark.parametrize("label", sorted(k for k in OPERATIONS if "{" in k))
def test_api_never_errs_on_existing_resources(real_ids: dict[str, str], label: str) -> None:
    operation = OPERATIONS[label]
    calls: list[int] = []

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES // 5,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def check(case: Any) -> None:
        for name, value in real_ids.items():
            if name in (case.path_parameters or {}):
                case.path_parameters[name] = value
        calls.append(case.call_and_validate(checks=CHECKS).status_code)

    check()
    print(f"\n{label} on existing ids: {len(calls)} requests, statuses {sorted(set(calls))}")
    assert calls and all(code < 500 for code in calls)


@pytest.mark.slow
def test_stateful_links_never_err(real_ids: dict[str, str]) -> None:
    """Sequences of calls that follow the schema's links (a list's ids into the
    sub-resources, a created job into its metrics, checkpoints, logs and cancel)."""
    from hypothesis.stateful import run_state_machine_as_test

    class Workflow(SCHEMA.as_state_machine()):  # type: ignore[misc]
        def validate_response(
            self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any
        ) -> None:
            case.validate_response(
                response, checks=CHECKS, transport_kwargs=kwargs or None, recorder=self.recorder
            )

    run_state_machine_as_test(
        Workflow,
        settings=settings(
            max_examples=max(10, EXAMPLES // 10),
            stateful_step_count=8,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        ),
    )
