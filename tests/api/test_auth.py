"""Tokens and owners: who may see and run what."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.tokens import create_token, revoke_token
from core.db import make_engine, make_session_factory
from core.settings import Settings
from migrations.migrate import upgrade
from storage.uploads import npz_bytes
from tests.factories import digits_spec


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str], Settings]]:
    settings = Settings(
        data_dir=tmp_path / "d",
        database_url=f"sqlite:///{tmp_path / 'a.db'}",
        auth="on",
        max_jobs_in_flight=3,
    )
    upgrade(settings.resolved_database_url)
    with make_session_factory(make_engine(settings.resolved_database_url))() as s:
        tokens = {
            name: create_token(s, name, admin=name == "root") for name in ("alice", "bob", "root")
        }
    with TestClient(create_app(settings)) as client:
        yield client, tokens, settings


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_requests_without_a_valid_token_are_refused(secured: Any) -> None:
    client, tokens, _ = secured
    for headers in ({}, auth("fitq_forged"), {"Authorization": f"Basic {tokens['alice']}"}):
        resp = client.get("/v1/jobs", headers=headers)
        assert resp.status_code == 401 and resp.headers["www-authenticate"] == "Bearer"
        assert "fitq token create" in resp.json()["detail"]
    assert client.post("/v1/jobs", json=digits_spec()).status_code == 401
    assert client.get("/healthz").status_code == 200
    assert client.get("/v1/jobs", headers=auth(tokens["alice"])).status_code == 200


def test_a_revoked_token_stops_working(secured: Any) -> None:
    client, tokens, settings = secured
    assert client.get("/v1/jobs", headers=auth(tokens["bob"])).status_code == 200
    with make_session_factory(make_engine(settings.resolved_database_url))() as s:
        revoke_token(s, "bob")
    assert client.get("/v1/jobs", headers=auth(tokens["bob"])).status_code == 401


def test_owners_see_only_their_own_jobs_and_datasets(secured: Any) -> None:
    client, tokens, _ = secured
    own: dict[str, dict[str, str]] = {}
    for who in ("alice", "bob"):
        ds = client.post(
            "/v1/datasets",
            headers=auth(tokens[who]),
            files={"file": ("d.npz", npz_bytes(x=np.zeros((8, 2)), y=np.zeros(8)))},
        )
        job = client.post("/v1/jobs", json=digits_spec(name=who), headers=auth(tokens[who]))
        assert ds.status_code == 201 and job.status_code == 201
        own[who] = {"job": job.json()["id"], "dataset": ds.json()["id"]}

    alice, bob = auth(tokens["alice"]), own["bob"]
    job, ds = bob["job"], bob["dataset"]
    tried = [
        ("GET", f"/v1/jobs/{job}"),
        ("GET", f"/v1/jobs/{job}/metrics"),
        ("GET", f"/v1/jobs/{job}/checkpoints"),
        ("GET", f"/v1/jobs/{job}/checkpoints/1/file"),
        ("GET", f"/v1/jobs/{job}/logs"),
        ("GET", f"/v1/jobs/{job}/history"),
        ("POST", f"/v1/jobs/{job}/cancel"),
        ("GET", f"/v1/datasets/{ds}"),
        ("DELETE", f"/v1/datasets/{ds}"),
    ]
    for method, path in tried:
        resp = client.request(method, path, headers=alice)
        assert resp.status_code == 404, (method, path, resp.status_code)
    assert [j["id"] for j in client.get("/v1/jobs", headers=alice).json()["items"]] == [
        own["alice"]["job"]
    ]
    assert [d["id"] for d in client.get("/v1/datasets", headers=alice).json()["items"]] == [
        own["alice"]["dataset"]
    ]
    uses_bobs = digits_spec(**{"data.train": {"dataset": ds}, "data.validation": ...})
    refused = client.post("/v1/jobs", json=uses_bobs, headers=alice)
    assert refused.status_code == 422 and "unknown dataset" in refused.text
    # Bob's job was not cancelled by Alice's attempt; the admin sees both.
    assert client.get(f"/v1/jobs/{job}", headers=auth(tokens["bob"])).json()["status"] == "queued"
    everyone = client.get("/v1/jobs", headers=auth(tokens["root"])).json()["items"]
    assert {j["id"] for j in everyone} == {own["alice"]["job"], own["bob"]["job"]}


def test_jobs_in_flight_per_owner_are_capped(secured: Any) -> None:
    client, tokens, _ = secured
    for _ in range(3):
        assert (
            client.post("/v1/jobs", json=digits_spec(), headers=auth(tokens["alice"])).status_code
            == 201
        )
    over = client.post("/v1/jobs", json=digits_spec(), headers=auth(tokens["alice"]))
    assert over.status_code == 429 and "FITQ_MAX_JOBS_IN_FLIGHT" in over.json()["detail"]
    assert (
        client.post("/v1/jobs", json=digits_spec(), headers=auth(tokens["bob"])).status_code == 201
    )


def test_idempotency_keys_belong_to_their_owner(secured: Any) -> None:
    client, tokens, _ = secured
    a = client.post(
        "/v1/jobs", json=digits_spec(), headers={**auth(tokens["alice"]), "Idempotency-Key": "k"}
    )
    b = client.post(
        "/v1/jobs", json=digits_spec(), headers={**auth(tokens["bob"]), "Idempotency-Key": "k"}
    )
    assert a.status_code == 201 and b.status_code == 201 and a.json()["id"] != b.json()["id"]


def test_auth_defaults_to_on_beyond_loopback() -> None:
    assert not Settings().auth_enabled("127.0.0.1")
    assert Settings().auth_enabled("0.0.0.0")
    assert not Settings(auth="off").auth_enabled("0.0.0.0")
    assert Settings(auth="on").auth_enabled("127.0.0.1")
