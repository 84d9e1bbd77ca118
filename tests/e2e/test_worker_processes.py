"""Each job trains in a pool process of its own, gone before the next job starts: the
CUDA context and the GPU memory a job held go back to the device with it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import Service
from tests.factories import digits_spec

pytestmark = pytest.mark.e2e


def training_pid(svc: Service, job_id: str) -> int:
    log = svc.client.get(f"/v1/jobs/{job_id}/logs").text
    match = re.search(r"^fitq: training on /device:CPU:0 \(pid (\d+)\)$", log, flags=re.M)
    assert match, log
    return int(match.group(1))


def test_consecutive_jobs_train_in_processes_that_do_not_outlive_them(service: Service) -> None:
    first = service.submit(digits_spec(**{"fit.epochs": 1}))
    assert service.wait_for(first["id"])["status"] == "succeeded"
    pid = training_pid(service, first["id"])
    service.wait_until(lambda: not Path(f"/proc/{pid}").exists(), 30, f"pool process {pid} to exit")
    second = service.submit(digits_spec(**{"fit.epochs": 1}))
    assert service.wait_for(second["id"])["status"] == "succeeded"
    assert training_pid(service, second["id"]) != pid
    assert pid not in service.pool_children()
