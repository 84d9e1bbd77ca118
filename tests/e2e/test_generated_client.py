"""A typed client generated from fitq's OpenAPI document works against the real service.

openapi-python-client drops any operation whose schema it cannot type; this test
generates the client from the running API's ``/openapi.json``, checks that every
path of the document has an operation in it, then submits a job and reads its
metrics through it.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import Service
from tests.factories import digits_spec

pytestmark = pytest.mark.e2e
GENERATOR = Path(sys.executable).parent / "openapi-python-client"


@pytest.fixture
def generated(service: Service, tmp_path: Path) -> Iterator[ModuleType]:
    if not GENERATOR.exists():
        pytest.skip("openapi-python-client is not installed (pip install -e '.[dev]')")
    document = tmp_path / "openapi.json"
    document.write_text(service.client.get("/openapi.json").text)
    package = f"fitq_generated_{uuid.uuid4().hex[:8]}"
    out = subprocess.run(
        [str(GENERATOR), "generate", "--path", str(document), "--meta", "none",
         "--output-path", str(tmp_path / package)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    # Any schema the generator could not type is reported, and its operations dropped.
    assert "Unable to process schema" not in out.stdout, out.stdout[-3000:]
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(package)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
            del sys.modules[name]


def operations(package: ModuleType) -> set[str]:
    root = Path(package.__file__ or "").parent / "api"
    return {p.stem for p in root.rglob("*.py") if p.stem != "__init__"}


def test_every_endpoint_is_in_the_client_and_a_job_runs_through_it(
    service: Service, generated: ModuleType
) -> None:
    document: dict[str, Any] = service.client.get("/openapi.json").json()
    expected = {
        op["operationId"]
        for path in document["paths"].values()
        for op in path.values()
        if isinstance(op, dict) and "operationId" in op
    }
    assert expected <= operations(generated), expected - operations(generated)

    name = generated.__name__
    client = importlib.import_module(f"{name}.client").Client(base_url=service.base_url)
    job_spec = importlib.import_module(f"{name}.models").JobSpec
    jobs = {
        op: importlib.import_module(f"{name}.api.jobs.{op}")
        for op in ("submit_job", "get_job", "get_metrics")
    }
    spec = digits_spec(**{"fit.epochs": 2, "queue": service.queue, "fit.verbose": "auto"})
    submitted = jobs["submit_job"].sync(client=client, body=job_spec.from_dict(spec))
    assert submitted.status == "queued", submitted
    assert submitted.spec.to_dict()["fit"]["verbose"] == "auto"

    deadline = time.monotonic() + 120
    while (job := jobs["get_job"].sync(submitted.id, client=client)).status not in (
        "succeeded", "failed", "cancelled",
    ):  # fmt: skip
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    assert job.status == "succeeded", json.dumps(job.to_dict())[-2000:]
    metrics = jobs["get_metrics"].sync(submitted.id, client=client, after_epoch=0)
    assert [row.epoch for row in metrics.items] == [1, 2]
    assert (
        metrics.items[1].metrics.to_dict()["loss"]
        == service.metrics(submitted.id)[1]["metrics"]["loss"]
    )
