"""``GET /v1/jobs/{id}/events`` on the wire, in-process: ``retry`` first, an ``id`` on
epoch events only, ``end`` last; ``: ping`` comments while nothing happens and the close
after ``FITQ_EVENTS_MAX_SECONDS``; the stream's slot freed once it ends; JSON errors."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path

import fastapi.routing
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from api.main import create_app
from core.settings import Settings
from migrations.migrate import upgrade
from models.tables import Checkpoint, EpochMetric, Job
from tests.factories import digits_spec

T = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC)


@pytest.fixture
def quick(tmp_path: Path) -> Iterator[TestClient]:
    """The app, with streams of unfinished jobs closed after one second."""
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'api.db'}",
        events_max_seconds=1.0,
    )
    upgrade(settings.resolved_database_url)
    with TestClient(create_app(settings)) as client:
        yield client


def blocks(text: str) -> list[list[str]]:
    """The stream's blocks (events and comments), each as its lines."""
    assert text.endswith("\n\n"), text[-200:]
    return [block.split("\n") for block in text[:-2].split("\n\n")]


def test_a_finished_job_is_sent_whole_then_end(client: TestClient) -> None:
    job_id = client.post("/v1/jobs", json=digits_spec()).json()["id"]
    with client.app.state.session_factory() as s, s.begin():  # type: ignore[attr-defined]
        s.execute(
            update(Job).where(Job.id == job_id).values(status="succeeded", stop_reason="completed")
        )
        for epoch in (1, 2):
            s.add(EpochMetric(job_id=job_id, epoch=epoch, metrics={"loss": 1.0 / epoch},
                              lr=None, duration_s=0.1, recorded_at=T, attempt=1))  # fmt: skip
        s.add(Checkpoint(job_id=job_id, epoch=2, path="e2.keras", monitor="loss", value=0.5,
                         is_best=True, size_bytes=3, created_at=T))  # fmt: skip
    resp = client.get(f"/v1/jobs/{job_id}/events")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert resp.headers["cache-control"] == "no-cache"
    assert resp.headers["x-accel-buffering"] == "no"
    got = blocks(resp.text)
    assert got[0] == ["retry: 1000"]
    events = [sorted(block) for block in got[1:]]
    metrics = client.get(f"/v1/jobs/{job_id}/metrics").json()["items"]
    checkpoints = client.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"]
    job = client.get(f"/v1/jobs/{job_id}").json()

    def event(kind: str, data: object, event_id: str | None = None) -> list[str]:
        payload = json.dumps(data, separators=(",", ":"))
        return sorted(
            [f"event: {kind}", f"data: {payload}"] + ([f"id: {event_id}"] * bool(event_id))
        )

    assert events == [
        event("epoch", metrics[0], "1"),
        event("epoch", metrics[1], "2"),
        event("checkpoint", checkpoints[0]),
        event("job", job),
        event("end", {"job_id": job_id, "log_offset": -1}),
    ]
    # Resuming after epoch 1 sends epoch 2 alone, whichever way the client says so.
    for resumed in (
        client.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": "1"}),
        client.get(f"/v1/jobs/{job_id}/events?after_epoch=1&after_checkpoint=1"),
    ):
        kinds = [line for block in blocks(resumed.text) for line in block if "event:" in line]
        assert kinds[0] == "event: epoch" and "event: epoch" not in kinds[1:], kinds
    assert client.app.state.event_streams.open_by_owner == {}  # type: ignore[attr-defined]


def test_a_quiet_stream_is_pinged_then_closed_after_the_max_seconds(
    quick: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fastapi.routing, "_PING_INTERVAL", 0.2)
    job_id = quick.post("/v1/jobs", json=digits_spec()).json()["id"]  # queued: stays so
    started = time.monotonic()
    resp = quick.get(f"/v1/jobs/{job_id}/events")
    took = time.monotonic() - started
    got = blocks(resp.text)
    assert got[0] == ["retry: 1000"] and got[1][0] == "event: job", got[:2]
    assert ["event: end"] not in [block[:1] for block in got]
    assert got.count([": ping"]) >= 2, got
    assert 1.0 <= took < 10, took
    assert quick.app.state.event_streams.open_by_owner == {}  # type: ignore[attr-defined]


def test_errors_are_json_before_any_event(client: TestClient) -> None:
    missing = client.get("/v1/jobs/0123456789abcdef/events")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/json"
    assert "0123456789abcdef" in missing.json()["detail"]
    job_id = client.post("/v1/jobs", json=digits_spec()).json()["id"]
    bad = client.get(f"/v1/jobs/{job_id}/events?after_epoch=-1")
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "after_epoch"]
    assert client.app.state.event_streams.open_by_owner == {}  # type: ignore[attr-defined]
    operation = client.get("/openapi.json").json()["paths"]["/v1/jobs/{job_id}/events"]["get"]
    for code in ("401", "404", "422", "429"):
        assert list(operation["responses"][code]["content"]) == ["application/json"], code
    assert list(operation["responses"]["200"]["content"]) == ["text/event-stream"]
