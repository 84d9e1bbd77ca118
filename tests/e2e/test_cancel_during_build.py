"""A cancel is honoured while a job builds its model, before fit() can check for one,
through a real API and worker; the worker then takes the next job."""

from __future__ import annotations

import time
from typing import Any

import pytest

from queueing.broker import make_celery, publish_job
from tests.conftest import Service
from tests.factories import digits_spec

pytestmark = pytest.mark.e2e

# An LSTM's recurrent kernel starts orthogonal: a QR decomposition of a 12000 x 3000
# matrix, which takes tens of seconds on a small CPU, inside TensorFlow. 36 M weights,
# within FITQ_MAX_PARAMS.
UNITS = 3000


def slow_to_build_spec() -> dict[str, Any]:
    def layer(cls: str, **config: Any) -> dict[str, Any]:
        return {"module": "keras.layers", "class_name": cls, "config": config}

    model = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "name": "slow",
            "layers": [
                layer("InputLayer", batch_shape=[None, 4, 2], name="in"),
                layer("LSTM", units=UNITS, name="lstm"),
                layer("Dense", units=2, activation="softmax", name="out"),
            ],
        },
    }
    return digits_spec(
        **{
            "model.builtin": ...,
            "model.params": ...,
            "model.keras_config": model,
            "data.train": {
                "x": [[[float((i + t) % 3), float(i % 2)] for t in range(4)] for i in range(16)],
                "y": [i % 2 for i in range(16)],
            },
            "data.validation": ...,
            "fit.epochs": 2,
        }
    )


def test_a_cancel_while_the_model_builds_ends_the_job_at_once(service: Service) -> None:
    job = service.submit(slow_to_build_spec())
    service.wait_for(job["id"], ("running",), timeout=60)
    time.sleep(1.0)  # well into the build, which takes far longer
    asked = time.monotonic()
    assert service.client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202
    done = service.wait_for(job["id"], timeout=30)
    elapsed = time.monotonic() - asked
    print(f"cancel during the build took {elapsed:.2f}s")
    assert (done["status"], done["stop_reason"]) == ("cancelled", "cancelled")
    assert elapsed < 5.0
    assert service.metrics(job["id"]) == []
    log = service.client.get(f"/v1/jobs/{job['id']}/logs").text
    # It never reached fit(): the log has only the line that says why it ended.
    assert "fitq: training with seed" not in log, log
    assert "cancelled while preparing to train" in log, log

    # A duplicate of its message (a redelivery) does not run it again.
    publish_job(make_celery(service.settings()), job["id"], service.queue)
    # The next job, queued behind the duplicate, trains in a fresh pool process.
    nxt = service.submit(digits_spec(**{"fit.epochs": 1}))
    assert service.wait_for(nxt["id"], timeout=120)["status"] == "succeeded"
    again = service.job(job["id"])
    assert (again["status"], again["attempts"]) == ("cancelled", 1)
    kinds = [e["kind"] for e in service.client.get(f"/v1/jobs/{job['id']}/history").json()["items"]]
    assert kinds.count("started") == 1, kinds
