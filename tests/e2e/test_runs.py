"""Evaluate and predict runs of a trained job's model through a real service, on both
backends: what they record equals Keras' own evaluate() and predict() of the model the
job kept; runs are queued, cancelled and listed like jobs; bad requests are refused."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, Service
from tests.factories import digits_spec

pytestmark = pytest.mark.e2e

TEST_SET = {"dataset": "builtin:digits", "split": "test", "take": 100}
TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def parent(service: Service) -> dict[str, Any]:
    """A digits job with a test split, succeeded: the model the runs use."""
    spec = digits_spec(**{"name": "runs-parent", "data.test": TEST_SET, "fit.epochs": 2})
    done = service.wait_for(service.submit(spec)["id"], timeout=180)
    assert done["status"] == "succeeded", done["error"]
    assert set(done["test_metrics"]) == {"loss", "accuracy"}
    return done


def run(service: Service, job_id: str, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = service.client.post(f"/v1/jobs/{job_id}/{kind}", json=body)
    assert resp.status_code == 201, resp.text
    created: dict[str, Any] = resp.json()
    assert resp.headers["location"] == f"/v1/jobs/{created['id']}"
    return created


def trained_model(service: Service, job_id: str, tmp_path: Path) -> Any:
    keras = pytest.importorskip("keras")
    resp = service.client.get(f"/v1/jobs/{job_id}/model")
    assert resp.status_code == 200, resp.text
    path = tmp_path / "model.keras"
    path.write_bytes(resp.content)
    return keras.saving.load_model(path)


def fitq(service: Service, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fitq", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "FITQ_API_URL": service.base_url},
        timeout=300,
        cwd=ROOT,
    )


def test_an_evaluate_run_records_the_test_metrics_of_its_parent(
    service: Service, parent: dict[str, Any]
) -> None:
    created = run(service, parent["id"], "evaluate", {"data": TEST_SET})
    assert (created["kind"], created["parent_job_id"]) == ("evaluate", parent["id"])
    assert created["spec"] == {
        "data": {**TEST_SET, "x": None, "y": None},
        "batch_size": None,
        "name": None,
        "kind": "evaluate",
        "queue": parent["queue"],
    }
    done = service.wait_for(created["id"], timeout=120)
    assert (done["status"], done["stop_reason"]) == ("succeeded", "completed"), done["error"]
    # The parent evaluated data.test with fit.batch_size 32; the run with Keras' default, 32.
    assert set(done["test_metrics"]) == set(parent["test_metrics"])
    for key, value in parent["test_metrics"].items():
        assert abs(done["test_metrics"][key] - value) <= TOLERANCE, key
    assert done["progress"]["epochs"] is None and done["insight"] is None
    assert done["final_model"] is None

    for path in (f"/v1/jobs?parent={parent['id']}", f"/v1/jobs/{parent['id']}/runs"):
        items = service.client.get(path).json()["items"]
        assert created["id"] in [j["id"] for j in items]
        assert {(j["kind"] in ("evaluate", "predict"), j["parent_job_id"]) for j in items} == {
            (True, parent["id"])
        }
    evaluations = service.client.get("/v1/jobs", params={"kind": "evaluate"}).json()["items"]
    assert created["id"] in [j["id"] for j in evaluations]
    assert service.client.get(f"/v1/jobs/{created['id']}/predictions").status_code == 404
    assert "fitq: evaluate" in service.client.get(f"/v1/jobs/{created['id']}/logs").text


def test_predictions_equal_keras_predict_of_the_downloaded_model(
    service: Service, parent: dict[str, Any], tmp_path: Path
) -> None:
    np = pytest.importorskip("numpy")
    from tests.worker.plain_fit import digits

    x, _ = digits("test", 25)
    created = run(service, parent["id"], "predict", {"data": {"x": x.tolist()}, "batch_size": 8})
    assert created["kind"] == "predict"
    assert service.client.get(f"/v1/jobs/{created['id']}/predictions").status_code == 404
    done = service.wait_for(created["id"], timeout=120)
    assert done["status"] == "succeeded", done["error"]
    resp = service.client.get(f"/v1/jobs/{created['id']}/predictions")
    assert resp.status_code == 200
    predictions = np.load(io.BytesIO(resp.content), allow_pickle=False)
    expected = trained_model(service, parent["id"], tmp_path).predict(x, verbose=0)
    assert predictions.shape == expected.shape == (25, 10)
    assert float(np.max(np.abs(predictions - expected))) <= TOLERANCE
    log = service.client.get(f"/v1/jobs/{created['id']}/logs").text
    assert "fitq: predict ended after 4 batches" in log  # 25 samples, 8 a batch


def test_the_cli_evaluates_and_writes_predictions(
    service: Service, parent: dict[str, Any], tmp_path: Path
) -> None:
    np = pytest.importorskip("numpy")
    from tests.worker.plain_fit import digits

    out = fitq(
        service, "jobs", "evaluate", parent["id"], "--data", "builtin:digits", "--split",
        "test", "--take", "100", "--wait",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    shown = dict(line.split(": ") for line in out.stdout.splitlines())
    for key, value in parent["test_metrics"].items():
        assert abs(float(shown[key]) - value) <= TOLERANCE, key

    target = tmp_path / "preds.npy"
    out = fitq(
        service, "jobs", "predict", parent["id"], "--data", "builtin:digits", "--split", "test",
        "--take", "30", "-o", str(target),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    x, _ = digits("test", 30)
    expected = trained_model(service, parent["id"], tmp_path).predict(x, verbose=0)
    assert float(np.max(np.abs(np.load(target) - expected))) <= TOLERANCE

    refused = fitq(service, "jobs", "evaluate", parent["id"], "--data", "builtin:iris")
    assert refused.returncode == 2
    assert "data.dataset" in refused.stderr and "[8, 8, 1]" in refused.stderr


def test_a_queued_run_cancelled_never_runs(service: Service, parent: dict[str, Any]) -> None:
    # The worker trains one job at a time: while this one trains, the run waits.
    blocker = service.submit(digits_spec(**{"fit.epochs": 500, "fit.batch_size": 8}))
    service.wait_for(blocker["id"], ("running",), timeout=60)
    refused = service.client.post(f"/v1/jobs/{blocker['id']}/evaluate", json={"data": TEST_SET})
    assert refused.status_code == 409 and "running" in refused.json()["detail"]

    created = run(service, parent["id"], "predict", {"data": TEST_SET})
    assert service.job(created["id"])["status"] == "queued"
    resp = service.client.post(f"/v1/jobs/{created['id']}/cancel")
    assert resp.status_code == 202
    assert (resp.json()["status"], resp.json()["stop_reason"]) == ("cancelled", "cancelled")

    service.client.post(f"/v1/jobs/{blocker['id']}/cancel")
    service.wait_for(blocker["id"], timeout=30)
    time.sleep(1.0)  # a redelivered message would claim the run now, if it could
    after = service.job(created["id"])
    assert (after["status"], after["attempts"], after["started_at"]) == ("cancelled", 0, None)
    assert service.client.get(f"/v1/jobs/{created['id']}/predictions").status_code == 404


def test_requests_that_cannot_run_are_refused(service: Service, parent: dict[str, Any]) -> None:
    post = service.client.post
    unknown = "0" * 32
    for kind in ("evaluate", "predict"):
        assert post(f"/v1/jobs/{unknown}/{kind}", json={"data": TEST_SET}).status_code == 404
    assert service.client.get(f"/v1/jobs/{unknown}/runs").status_code == 404
    assert service.client.get(f"/v1/jobs/{unknown}/predictions").status_code == 404
    assert service.client.get(f"/v1/jobs/{parent['id']}/predictions").status_code == 404

    a_run = run(service, parent["id"], "evaluate", {"data": TEST_SET})
    resp = post(f"/v1/jobs/{a_run['id']}/predict", json={"data": TEST_SET})
    assert resp.status_code == 409 and "evaluate run" in resp.json()["detail"]

    def refused(kind: str, body: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
        resp = post(f"/v1/jobs/{parent['id']}/{kind}", json=body)
        assert resp.status_code == 422, resp.text
        return [(tuple(e["loc"]), e["msg"]) for e in resp.json()["detail"]]

    [(loc, msg)] = refused("evaluate", {"data": {"dataset": "builtin:iris"}})
    assert loc == ("body", "data", "dataset") and "[4]" in msg and "[8, 8, 1]" in msg
    [(loc, msg)] = refused("predict", {"data": {"x": [[0.5] * 4]}})
    assert loc == ("body", "data", "x") and "[8, 8, 1]" in msg
    image = [[[0.5]] * 8] * 8
    [(loc, msg)] = refused("evaluate", {"data": {"x": [image], "y": [12]}})
    assert loc == ("body", "data", "y") and "10 classes" in msg
    [(loc, _)] = refused("predict", {"data": {"x": [image], "y": [1]}})
    assert loc == ("body", "data", "y")
    [(loc, msg)] = refused("evaluate", {"data": {"x": [image]}})
    assert loc == ("body", "data") and "'y'" in msg
    [(loc, _)] = refused("predict", {"data": {"dataset": "builtin:digits", "take": 5000}})
    assert loc == ("body", "data", "take")
    [(loc, _)] = refused("predict", {"data": TEST_SET, "batch_size": 0})
    assert loc == ("body", "batch_size")
