"""The jobs API in-process: submit, read, list, cancel, ETag, idempotency."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import ROOT
from tests.factories import digits_spec


def test_submit_returns_201_with_location_and_a_recorded_seed(client: TestClient) -> None:
    spec = digits_spec(seed=...)
    resp = client.post("/v1/jobs", json=spec)
    assert resp.status_code == 201, resp.text
    job = resp.json()
    assert resp.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["attempts"] == 0
    assert isinstance(job["spec"]["seed"], int)
    assert job["progress"] == {"epoch": None, "epochs": 3, "step": None, "steps": None}


def test_yaml_body_is_accepted(client: TestClient) -> None:
    with open("examples/digits.yaml", "rb") as f:
        resp = client.post(
            "/v1/jobs", content=f.read(), headers={"Content-Type": "application/yaml"}
        )
    assert resp.status_code == 201, resp.text
    assert (
        resp.json()["spec"]["callbacks"][1]["filepath"] == "epoch{epoch:02d}-{val_loss:.3f}.keras"
    )


def test_get_job_supports_etag(client: TestClient) -> None:
    job = client.post("/v1/jobs", json=digits_spec()).json()
    first = client.get(f"/v1/jobs/{job['id']}")
    etag = first.headers["etag"]
    again = client.get(f"/v1/jobs/{job['id']}", headers={"If-None-Match": etag})
    assert again.status_code == 304
    client.post(f"/v1/jobs/{job['id']}/cancel")
    changed = client.get(f"/v1/jobs/{job['id']}", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.json()["status"] == "cancelled"


def test_unknown_job_is_404(client: TestClient) -> None:
    for path in ("", "/metrics", "/checkpoints", "/logs", "/history"):
        resp = client.get(f"/v1/jobs/nope{path}")
        assert resp.status_code == 404, path
        assert "nope" in resp.json()["detail"]


def test_list_filters_and_paginates_newest_first(client: TestClient) -> None:
    ids = [
        client.post("/v1/jobs", json=digits_spec(name=f"j{i}", queue="q" + str(i % 2))).json()["id"]
        for i in range(5)
    ]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/jobs", params=params).json()
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ids[::-1]
    q1 = client.get("/v1/jobs", params={"queue": "q1"}).json()["items"]
    assert [j["name"] for j in q1] == ["j3", "j1"]
    assert client.get("/v1/jobs", params={"name": "j4"}).json()["items"][0]["id"] == ids[4]
    assert client.get("/v1/jobs", params={"status": "running"}).json()["items"] == []
    bad = client.get("/v1/jobs", params={"status": "done"})
    assert bad.status_code == 422 and "done" in bad.text
    assert client.get("/v1/jobs", params={"cursor": "%%%"}).status_code == 422


def test_cancel_queued_job_is_immediate_and_idempotent(client: TestClient) -> None:
    job = client.post("/v1/jobs", json=digits_spec()).json()
    first = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert first.status_code == 202
    assert first.json()["status"] == "cancelled" and first.json()["stop_reason"] == "cancelled"
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202
    kinds = [e["kind"] for e in client.get(f"/v1/jobs/{job['id']}/history").json()["items"]]
    assert kinds == ["created", "cancelled"]


def test_idempotency_key_returns_the_same_job_and_refuses_another_spec(client: TestClient) -> None:
    spec = digits_spec()
    first = client.post("/v1/jobs", json=spec, headers={"Idempotency-Key": "ci-123"})
    second = client.post("/v1/jobs", json=spec, headers={"Idempotency-Key": "ci-123"})
    assert first.status_code == 201 and second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    other = client.post(
        "/v1/jobs", json=digits_spec(**{"fit.epochs": 4}), headers={"Idempotency-Key": "ci-123"}
    )
    assert other.status_code == 409 and "ci-123" in other.json()["detail"]
    assert len(client.get("/v1/jobs").json()["items"]) == 1


def test_healthz_and_readyz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["database"] == "ok"
    assert ready.json()["broker"] == "ok"


def test_openapi_docs_are_served(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert "/v1/jobs/{job_id}/metrics" in schema["paths"]
    assert client.get("/docs").status_code == 200


def test_a_spec_sent_without_content_type_is_read_as_yaml(client: TestClient) -> None:
    with open("examples/digits.yaml", "rb") as f:
        body = f.read()
    resp = client.post(
        "/v1/jobs", content=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert resp.status_code == 201, resp.text
    schema = client.get("/openapi.json").json()
    content = schema["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]
    assert set(content) == {"application/json", "application/yaml"}


def test_embedded_broker_keeps_all_its_files_in_the_data_dir(client: TestClient, settings) -> None:  # type: ignore[no-untyped-def]
    assert client.post("/v1/jobs", json=digits_spec()).status_code == 201
    assert len(list((settings.broker_folder / "queue").iterdir())) == 1
    # kombu's filesystem transport would put exchange files in the working directory.
    assert (settings.broker_folder / "control").is_dir()
    assert not (ROOT / "control").exists()
