"""The trained model out of a real service, on both backends: downloaded, loaded with
Keras and evaluated on the job's test data, it gives the job's test metrics."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from tests.conftest import Service
from tests.factories import digits_spec

pytestmark = pytest.mark.e2e

TEST_SET = {"dataset": "builtin:digits", "split": "test", "take": 120}


def test_the_downloaded_model_reproduces_the_test_metrics(service: Service, tmp_path: Path) -> None:
    keras = pytest.importorskip("keras")
    np = pytest.importorskip("numpy")
    tf = pytest.importorskip("tensorflow")
    from tests.worker.plain_fit import digits

    spec = digits_spec(
        **{
            "data.test": TEST_SET,
            "fit.epochs": 4,
            "fit.validation_batch_size": 40,
            "callbacks": [
                {"type": "EarlyStopping", "monitor": "val_loss", "restore_best_weights": True}
            ],
            "output": {"export": True},
        }
    )
    done = service.wait_for(service.submit(spec)["id"], timeout=180)
    assert done["status"] == "succeeded", done["error"]
    model = done["final_model"]
    assert model["savedmodel"] is True and model["size_bytes"] > 0

    resp = service.client.get(f"/v1/jobs/{done['id']}/model")
    assert resp.status_code == 200, resp.text
    assert len(resp.content) == model["size_bytes"]
    assert hashlib.sha256(resp.content).hexdigest() == model["sha256"]
    assert resp.headers["etag"] == f'"{model["sha256"]}"'
    path = tmp_path / "model.keras"
    path.write_bytes(resp.content)
    trained = keras.saving.load_model(path)
    x_test, y_test = digits("test", 120)
    metrics = trained.evaluate(x_test, y_test, batch_size=40, verbose=0, return_dict=True)
    assert set(metrics) == set(done["test_metrics"]) == {"loss", "accuracy"}
    for key, value in metrics.items():
        assert abs(float(value) - done["test_metrics"][key]) <= 1e-6, key

    tarball = service.client.get(f"/v1/jobs/{done['id']}/model", params={"format": "savedmodel"})
    assert tarball.status_code == 200 and tarball.headers["content-type"] == "application/gzip"
    top = f"savedmodel-{done['id']}"
    with tarfile.open(fileobj=io.BytesIO(tarball.content), mode="r:gz") as tar:
        assert f"{top}/saved_model.pb" in tar.getnames()
        tar.extractall(tmp_path, filter="data")
    loaded = tf.saved_model.load(str(tmp_path / top))  # held: serve() reads its variables
    served = loaded.serve(tf.constant(x_test)).numpy()
    assert float(np.max(np.abs(served - trained.predict(x_test, verbose=0)))) <= 1e-6


def test_no_model_while_running_nor_an_export_not_asked_for(service: Service) -> None:
    job = service.submit(digits_spec(**{"fit.epochs": 200, "fit.batch_size": 8}))
    service.wait_for(job["id"], ("running",), timeout=60)
    resp = service.client.get(f"/v1/jobs/{job['id']}/model")
    assert resp.status_code == 404
    assert "the job is running; its model is saved once it succeeds" in resp.json()["detail"]
    service.client.post(f"/v1/jobs/{job['id']}/cancel")
    assert service.wait_for(job["id"], timeout=30)["status"] == "cancelled"
    resp = service.client.get(f"/v1/jobs/{job['id']}/model")
    assert resp.status_code == 404 and "was cancelled" in resp.json()["detail"]

    done = service.wait_for(service.submit(digits_spec(**{"fit.epochs": 1}))["id"], timeout=120)
    assert done["status"] == "succeeded" and done["final_model"]["savedmodel"] is False
    assert service.client.get(f"/v1/jobs/{done['id']}/model").status_code == 200
    resp = service.client.get(f"/v1/jobs/{done['id']}/model?format=savedmodel")
    assert resp.status_code == 404 and "output: {export: true}" in resp.json()["detail"]
