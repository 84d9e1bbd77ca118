"""Bring a saved model, take a warm start: through the real API and worker, on both
databases. An uploaded ``.keras`` model trained further, and a warm start from that
job's best checkpoint, each record the history of ``keras.saving.load_model()`` and
``fit()`` in a plain script with the same seed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Service
from tests.factories import digits_spec
from tests.worker.test_fit_semantics import plain
from tests.worker.test_model_sources import assert_same, trained_model_file

pytestmark = pytest.mark.e2e
BEST = {
    "type": "ModelCheckpoint",
    "filepath": "best-{epoch:02d}.keras",
    "monitor": "val_loss",
    "save_best_only": True,
}


def recorded(service: Service, job_id: str) -> list[list[object]]:
    return [[row["epoch"], row["metrics"]] for row in service.metrics(job_id)]


def test_an_upload_and_a_warm_start_from_its_job_train_as_plain_scripts(
    service: Service, tmp_path: Path
) -> None:
    original = trained_model_file(tmp_path / "mine.keras")
    resp = service.client.post("/v1/models", files={"file": ("mine.keras", original.read_bytes())})
    assert resp.status_code == 201, resp.text
    model_id = resp.json()["id"]

    parent = service.submit(digits_spec(model={"uploaded": model_id}, callbacks=[BEST]))
    assert parent["model_id"] == model_id
    done = service.wait_for(parent["id"], timeout=180)
    assert done["status"] == "succeeded", done["error"]
    assert_same(
        recorded(service, parent["id"]), plain(f"keras:{original}", tmp_path / "a")["epochs"]
    )

    checkpoints = service.client.get(f"/v1/jobs/{parent['id']}/checkpoints").json()["items"]
    best = [c for c in checkpoints if c["is_best"]][-1]
    child = service.submit(digits_spec(model={"from_job": parent["id"]}))
    assert child["parent_job_id"] == parent["id"]
    assert child["spec"]["model"] == {"from_job": parent["id"], "checkpoint": best["id"]}
    done = service.wait_for(child["id"], timeout=180)
    assert done["status"] == "succeeded", done["error"]
    best_file = service.data_dir / "artifacts" / "jobs" / parent["id"] / best["path"]
    assert_same(
        recorded(service, child["id"]), plain(f"keras:{best_file}", tmp_path / "b")["epochs"]
    )
    listed = service.client.get("/v1/jobs", params={"limit": 5}).json()["items"]
    assert {j["id"]: j["parent_job_id"] for j in listed}[child["id"]] == parent["id"]
