"""Learning rates through the real API and a real worker, on both databases: a job with
a schedule records what the plain script records, and each epoch's ``lr`` is the rate
it trained with."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from tests.conftest import Service
from tests.factories import digits_spec
from tests.worker.test_schedules import CASES, plain

pytestmark = pytest.mark.e2e
# The plain script's result is the same for both databases: run it once per case.
plain_once = functools.cache(plain)


@pytest.mark.parametrize("case", ["exponential_decay", "lr_scheduler"])
def test_a_scheduled_job_records_what_plain_fit_does(service: Service, case: str) -> None:
    overrides, rates = CASES[case]
    job = service.submit(digits_spec(**{"fit.epochs": 4, **overrides}))
    done = service.wait_for(job["id"], timeout=180)
    assert done["status"] == "succeeded", done["error"]
    expected = plain_once(case)

    rows = service.metrics(job["id"])
    assert [r["epoch"] for r in rows] == [e for e, _ in expected["epochs"]] == [1, 2, 3, 4]
    for row, (epoch, logs) in zip(rows, expected["epochs"], strict=True):
        assert set(row["metrics"]) == set(logs), epoch
        diff = max(abs(row["metrics"][k] - v) for k, v in logs.items())
        assert diff <= 1e-6, (epoch, row["metrics"], logs)
    assert [r["lr"] for r in rows] == pytest.approx(expected["lr"], rel=1e-7)
    assert [r["lr"] for r in rows] == pytest.approx(rates, rel=1e-6)


def test_the_lr_column_is_the_rate_each_epoch_trained_with(service: Service) -> None:
    # Adam at 0.001; no epoch after the first improves the loss by min_delta, so with
    # patience 0 ReduceLROnPlateau halves the rate at the end of epochs 2 and 3.
    plateau: dict[str, Any] = {
        "type": "ReduceLROnPlateau",
        "monitor": "loss",
        "factor": 0.5,
        "patience": 0,
        "min_delta": 10.0,
    }
    job = service.submit(digits_spec(**{"fit.epochs": 4, "callbacks": [plateau]}))
    done = service.wait_for(job["id"], timeout=180)
    assert done["status"] == "succeeded", done["error"]
    rows = service.metrics(job["id"])
    # Epoch 2 trained at 0.001 (the reduction at its end applies from epoch 3 on).
    assert [r["lr"] for r in rows] == pytest.approx([0.001, 0.001, 0.0005, 0.00025])
    assert [r["metrics"]["learning_rate"] for r in rows] == [r["lr"] for r in rows]
