"""resources.gpus at submit time, GET /v1/workers and GET /metrics through the real app."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.main import create_app
from api.tokens import create_token
from core.db import make_engine, make_session_factory
from core.settings import Settings
from migrations.migrate import upgrade
from models.tables import Worker, utcnow
from tests.factories import digits_spec


def test_more_gpus_than_any_worker_has_is_refused_naming_the_field(client: TestClient) -> None:
    resp = client.post("/v1/jobs", json=digits_spec(**{"resources.gpus": 2}))
    assert resp.status_code == 422
    (error,) = resp.json()["detail"]
    assert error["loc"] == ["body", "resources", "gpus"]
    assert "received gpus=2" in error["msg"] and "FITQ_MAX_GPUS_PER_WORKER" in error["msg"]
    assert client.get("/v1/jobs").json()["items"] == []


@pytest.mark.parametrize(
    ("overrides", "loc", "msg"),
    [
        ({"resources.gpus": 0}, ["body", "resources", "gpus"], "greater than or equal to 1"),
        ({"resources.gpus": "2"}, ["body", "resources", "gpus"], "valid integer"),
        ({"resources.cpus": 2}, ["body", "resources", "cpus"], "Extra inputs"),
        (
            {"resources.gpus": 4, "fit.batch_size": 2},
            ["body", "fit", "batch_size"],
            "expected at least 4",
        ),
        ({"queue": "gpu.gpus2"}, ["body", "queue"], "set resources.gpus instead"),
    ],
)
def test_bad_resources_answer_422(
    tmp_path: Path, overrides: dict[str, object], loc: list[str], msg: str
) -> None:
    settings = Settings(
        data_dir=tmp_path / "d",
        database_url=f"sqlite:///{tmp_path / 'a.db'}",
        max_gpus_per_worker=4,
    )
    upgrade(settings.resolved_database_url)
    with TestClient(create_app(settings)) as client:
        resp = client.post("/v1/jobs", json=digits_spec(**overrides))
        assert resp.status_code == 422, resp.text
        assert [e["loc"] for e in resp.json()["detail"]] == [loc]
        assert msg in resp.json()["detail"][0]["msg"]
        ok = client.post("/v1/jobs", json=digits_spec(**{"resources.gpus": 4}))
        assert ok.status_code == 201, ok.text
        assert ok.json()["spec"]["resources"] == {"gpus": 4}


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str], Settings]]:
    settings = Settings(
        data_dir=tmp_path / "d", database_url=f"sqlite:///{tmp_path / 'a.db'}", auth="on"
    )
    upgrade(settings.resolved_database_url)
    now = utcnow()
    with make_session_factory(make_engine(settings.resolved_database_url))() as s:
        tokens = {name: create_token(s, name, admin=name == "root") for name in ("alice", "root")}
        for name, beat, devices in (
            ("live@h", now, 2),
            ("silent@h", now - dt.timedelta(hours=1), 1),
        ):
            s.add(
                Worker(
                    name=name,
                    host="h",
                    pid=1,
                    queues=["gpu", "gpu.gpus2"][:devices],
                    device_kind="gpu",
                    devices=devices,
                    gpus="0,1"[: 2 * devices - 1],
                    started_at=beat,
                    heartbeat_at=beat,
                )
            )
        s.commit()
    with TestClient(create_app(settings)) as client:
        yield client, tokens, settings


def test_workers_are_listed_to_admins_live_ones_first(
    secured: tuple[TestClient, dict[str, str], Settings],
) -> None:
    client, tokens, _ = secured
    assert client.get("/v1/workers").status_code == 401
    refused = client.get("/v1/workers", headers={"Authorization": f"Bearer {tokens['alice']}"})
    assert refused.status_code == 403 and "admin" in refused.json()["detail"]
    resp = client.get("/v1/workers", headers={"Authorization": f"Bearer {tokens['root']}"})
    assert resp.status_code == 200
    items = resp.json()["items"]
    assert [(w["name"], w["alive"], w["devices"], w["gpus"]) for w in items] == [
        ("live@h", True, 2, "0,1"),
        ("silent@h", False, 1, "0"),
    ]
    assert items[0]["queues"] == ["gpu", "gpu.gpus2"] and items[0]["job"] is None


def test_metrics_count_live_workers_and_need_no_token(
    secured: tuple[TestClient, dict[str, str], Settings],
) -> None:
    client, tokens, _ = secured
    resp = client.get("/metrics")
    assert resp.status_code == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }
    assert samples[("fitq_workers", (("device_kind", "gpu"), ("state", "idle")))] == 1
    assert samples[("fitq_worker_devices", (("device_kind", "gpu"),))] == 2
    # A request counts under its route template, never under its raw path.
    auth = {"Authorization": f"Bearer {tokens['alice']}"}
    assert client.get("/v1/jobs/nope", headers=auth).status_code == 404
    text = client.get("/metrics").text
    assert 'route="/v1/jobs/{job_id}"' in text and "nope" not in text
