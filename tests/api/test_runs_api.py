"""Runs through the in-process API: who may run a job's model, which parents have one,
and what the data must be. The parents here are rows a worker would have finished
(status and the model's recorded SHA-256); the service-level tests run real ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from api.tokens import create_token
from core.db import make_engine, make_session_factory
from core.settings import Settings
from models.tables import Job, JobDataset
from storage.uploads import npz_bytes
from tests.factories import digits_spec

TEST_SET = {"dataset": "builtin:digits", "split": "test", "take": 10}
IMAGE = [[[0.5]] * 8] * 8


def finished(settings: Settings, job_id: str, status: str = "succeeded", **columns: Any) -> None:
    """Ends the job as a worker would have: ``status``, and for a success a saved model."""
    saved = {"model_sha256": "ab" * 32, "model_size_bytes": 1} if status == "succeeded" else {}
    factory = make_session_factory(make_engine(settings.resolved_database_url))
    with factory() as s, s.begin():
        s.execute(update(Job).where(Job.id == job_id).values(status=status, **(saved | columns)))


def submitted(client: TestClient, spec: dict[str, Any] | None = None, **headers: str) -> str:
    resp = client.post("/v1/jobs", json=spec or digits_spec(), headers=headers)
    assert resp.status_code == 201, resp.text
    job_id: str = resp.json()["id"]
    return job_id


def test_another_owners_job_and_its_runs_are_not_found(secured: Any) -> None:
    client, settings = secured
    factory = make_session_factory(make_engine(settings.resolved_database_url))
    with factory() as s:
        alice = {"Authorization": f"Bearer {create_token(s, 'alice')}"}
        bob = {"Authorization": f"Bearer {create_token(s, 'bob')}"}
    parent = submitted(client, **alice)
    finished(settings, parent)
    for kind in ("evaluate", "predict"):
        resp = client.post(f"/v1/jobs/{parent}/{kind}", json={"data": TEST_SET}, headers=bob)
        assert resp.status_code == 404, resp.text
    assert client.get(f"/v1/jobs/{parent}/runs", headers=bob).status_code == 404

    resp = client.post(f"/v1/jobs/{parent}/predict", json={"data": TEST_SET}, headers=alice)
    assert resp.status_code == 201, resp.text
    run = resp.json()
    assert (run["kind"], run["parent_job_id"], run["status"]) == ("predict", parent, "queued")
    assert client.get(f"/v1/jobs/{parent}/runs", headers=alice).json()["items"] == [run]
    assert client.get(f"/v1/jobs/{run['id']}", headers=bob).status_code == 404
    assert client.get(f"/v1/jobs/{run['id']}/predictions", headers=bob).status_code == 404
    assert client.get("/v1/jobs", params={"parent": parent}, headers=bob).json()["items"] == []


def test_only_a_succeeded_job_with_a_saved_model_can_be_run(client: TestClient) -> None:
    settings = client.app.state.settings  # type: ignore[attr-defined]
    queued = submitted(client)
    resp = client.post(f"/v1/jobs/{queued}/evaluate", json={"data": TEST_SET})
    assert resp.status_code == 409 and "queued" in resp.json()["detail"]
    assert "wait until it succeeds" in resp.json()["detail"]

    failed = submitted(client)
    finished(settings, failed, "failed")
    resp = client.post(f"/v1/jobs/{failed}/predict", json={"data": TEST_SET})
    assert resp.status_code == 409 and "it is failed" in resp.json()["detail"]
    assert "wait" not in resp.json()["detail"]

    older = submitted(client)
    finished(settings, older, model_sha256=None, model_size_bytes=None)
    resp = client.post(f"/v1/jobs/{older}/predict", json={"data": TEST_SET})
    assert resp.status_code == 409 and "before fitq kept trained models" in resp.json()["detail"]


def test_a_model_of_several_outputs_is_refused_before_anything_runs(client: TestClient) -> None:
    settings = client.app.state.settings  # type: ignore[attr-defined]
    parent = submitted(client)
    configs = json.loads((Path(__file__).parent / "multi_io_models.json").read_text())
    spec = digits_spec(**{"model.builtin": ..., "model.keras_config": configs["two_outputs"]})
    finished(settings, parent, spec=spec)
    for kind in ("evaluate", "predict"):
        resp = client.post(f"/v1/jobs/{parent}/{kind}", json={"data": TEST_SET})
        assert resp.status_code == 409, resp.text
        assert "outputs ['cls', 'reg']" in resp.json()["detail"]
        assert "one input and one output" in resp.json()["detail"]
    assert client.get(f"/v1/jobs/{parent}/runs").json()["items"] == []


def test_labels_must_be_what_the_parents_loss_reads(client: TestClient) -> None:
    settings = client.app.state.settings  # type: ignore[attr-defined]
    sparse = submitted(client)
    finished(settings, sparse)
    resp = client.post(
        f"/v1/jobs/{sparse}/evaluate", json={"data": {"x": [IMAGE, IMAGE], "y": [0.5, 1.0]}}
    )
    assert resp.status_code == 422
    [error] = resp.json()["detail"]
    assert error["loc"] == ["body", "data", "y"] and "class indices" in error["msg"]

    regression = submitted(
        client,
        digits_spec(
            **{
                "compile": {"optimizer": "adam", "loss": "mse"},
                "data.train": {"x": [[0.1, 0.2]] * 4, "y": [1.0, 2.0, 3.0, 4.0]},
                "data.validation": ...,
            }
        ),
    )
    finished(settings, regression)
    resp = client.post(
        f"/v1/jobs/{regression}/evaluate", json={"data": {"x": [[0.1, 0.2]], "y": [[1.0, 2.0]]}}
    )
    assert resp.status_code == 422
    [error] = resp.json()["detail"]
    assert error["loc"] == ["body", "data", "y"] and "2 target value(s), expected 1" in error["msg"]
    resp = client.post(f"/v1/jobs/{regression}/predict", json={"data": {"x": [[0.1, 0.2]]}})
    assert resp.status_code == 201, resp.text


def test_an_uploaded_dataset_is_checked_and_held_while_a_run_uses_it(client: TestClient) -> None:
    settings = client.app.state.settings  # type: ignore[attr-defined]
    parent = submitted(client)
    finished(settings, parent)
    x = np.random.default_rng(0).random((12, 8, 8, 1)).astype(np.float32)
    archive = npz_bytes(x=x, y=np.arange(12) % 10)
    uploaded = client.post("/v1/datasets", files={"file": ("d.npz", archive)}).json()["id"]

    resp = client.post(
        f"/v1/jobs/{parent}/evaluate", json={"data": {"dataset": uploaded, "split": "test"}}
    )
    assert resp.status_code == 422
    [error] = resp.json()["detail"]
    assert error["loc"] == ["body", "data", "split"] and "no test arrays" in error["msg"]

    resp = client.post(f"/v1/jobs/{parent}/evaluate", json={"data": {"dataset": uploaded}})
    assert resp.status_code == 201, resp.text
    factory = make_session_factory(make_engine(settings.resolved_database_url))
    with factory() as s:
        used = s.scalars(select(JobDataset.job_id).where(JobDataset.dataset_id == uploaded))
        assert list(used) == [resp.json()["id"]]
    assert client.delete(f"/v1/datasets/{uploaded}").status_code == 409


def test_an_idempotency_key_finds_the_same_run_and_refuses_another(client: TestClient) -> None:
    settings = client.app.state.settings  # type: ignore[attr-defined]
    parent, other = submitted(client), submitted(client)
    finished(settings, parent)
    finished(settings, other)
    key = {"Idempotency-Key": "run-1"}
    first = client.post(f"/v1/jobs/{parent}/evaluate", json={"data": TEST_SET}, headers=key)
    again = client.post(f"/v1/jobs/{parent}/evaluate", json={"data": TEST_SET}, headers=key)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == f"/v1/jobs/{first.json()['id']}"
    for kind, job_id in (("predict", parent), ("evaluate", other)):
        resp = client.post(f"/v1/jobs/{job_id}/{kind}", json={"data": TEST_SET}, headers=key)
        assert resp.status_code == 409 and first.json()["id"] in resp.json()["detail"]
    runs = client.get(f"/v1/jobs/{parent}/runs").json()["items"]
    assert [r["id"] for r in runs] == [first.json()["id"]]
