"""``GET /v1/jobs/{id}/events``: a real job followed as server-sent events, on both backends."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.conftest import Service
from tests.factories import digits_spec

pytestmark = pytest.mark.e2e


def read_events(service: Service, path: str, **headers: str) -> list[tuple[str, Any, str | None]]:
    """(event, payload, id) for each event, until the server ends the stream."""
    events: list[tuple[str, Any, str | None]] = []
    with service.client.stream("GET", path, headers=headers, timeout=120) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        event, data, event_id = "message", [], None
        for line in resp.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif line.startswith("id:"):
                event_id = line[3:].strip()
            elif line == "" and data:
                events.append((event, json.loads("\n".join(data)), event_id))
                event, data, event_id = "message", [], None
    return events


def test_events_follow_a_job_to_its_end_and_resume_after_an_epoch(service: Service) -> None:
    spec = digits_spec(
        **{
            "fit.epochs": 4,
            "callbacks": [
                {"type": "ModelCheckpoint", "filepath": "e{epoch}.keras", "monitor": "val_loss"}
            ],
        }
    )
    job = service.submit(spec)
    started = time.monotonic()
    events = read_events(service, f"/v1/jobs/{job['id']}/events?log_offset=0")
    assert time.monotonic() - started < 120
    kinds = [e[0] for e in events]
    assert kinds[0] == "job" and kinds[-1] == "end"
    epochs = [e[1] for e in events if e[0] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4]
    assert [e[2] for e in events if e[0] == "epoch"] == ["1", "2", "3", "4"]
    assert epochs == service.metrics(job["id"])
    jobs = [e[1] for e in events if e[0] == "job"]
    assert jobs[0]["id"] == job["id"] and jobs[-1]["status"] == "succeeded"
    assert jobs[-1]["insight"]["best_epoch"] is not None
    assert len(jobs) > 2  # the job was pushed again as it changed
    latest = {e[1]["id"]: e[1] for e in events if e[0] == "checkpoint"}  # the last word on each
    listed = service.client.get(f"/v1/jobs/{job['id']}/checkpoints").json()["items"]
    assert list(latest.values()) == listed and len(listed) == 4
    log = "".join(e[1]["text"] for e in events if e[0] == "log")
    assert log == service.client.get(f"/v1/jobs/{job['id']}/logs").text
    assert "Epoch 4/4" in log

    again = read_events(service, f"/v1/jobs/{job['id']}/events", **{"Last-Event-ID": "2"})
    assert [e[1]["epoch"] for e in again if e[0] == "epoch"] == [3, 4]
    # after_checkpoint not given: every checkpoint, as it is now; no log without log_offset
    assert [e[1] for e in again if e[0] == "checkpoint"] == listed
    assert not [e for e in again if e[0] == "log"]
    assert again[-1][0] == "end"


def test_events_of_another_owner_or_no_job_are_404(service: Service) -> None:
    assert service.client.get("/v1/jobs/0123456789abcdef/events").status_code == 404
