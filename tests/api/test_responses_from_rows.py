"""Responses read from rows (``model_validate`` on the ORM objects): each body, byte for
byte, key order included, for rows with every optional column empty and every one set."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import update

from models.tables import Checkpoint, Dataset, EpochMetric, Job, JobEvent, Worker, utcnow
from tests.factories import digits_spec

T = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC)
AT = "2024-05-06T07:08:09.123456Z"
NO_INSIGHT: dict[str, Any] = {
    "monitor": "loss",
    "mode": "min",
    "best_epoch": None,
    "best_value": None,
    "early_stopping_epoch": None,
    "final_weights_epoch": None,
    "overfitting_epoch": None,
    "findings": [],
}


def body(value: Any) -> str:
    """What the API sends for ``value``: compact JSON, keys in the order given."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def stored(client: TestClient, **columns: Any) -> tuple[str, dict[str, Any]]:
    """A job submitted through the API, then given ``columns``; its id and stored spec."""
    job = client.post("/v1/jobs", json=digits_spec()).json()
    with client.app.state.session_factory() as s, s.begin():  # type: ignore[attr-defined]
        s.execute(update(Job).where(Job.id == job["id"]).values(created_at=T, **columns))
    return job["id"], job["spec"]


def job_body(job_id: str, spec: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "id": job_id,
        "name": "test-digits",
        "queue": "default",
        "kind": "fit",
        "parent_job_id": None,
        "status": "queued",
        "stop_reason": None,
        "spec": spec,
        "created_at": AT,
        "started_at": None,
        "finished_at": None,
        "attempts": 0,
        "cancel_requested": False,
        "progress": {"epoch": None, "epochs": 3, "step": None, "steps": None},
        "latest_metrics": None,
        "best": None,
        "test_metrics": None,
        "class_weight": None,
        "warnings": [],
        "error": None,
        "final_model": None,
        "insight": NO_INSIGHT,
        "model_id": None,
        "artifacts_removed_at": None,
    } | fields


def test_a_job_with_every_column_empty_or_set(client: TestClient) -> None:
    empty, empty_spec = stored(client, warnings=None, best={}, error_type="")
    full, full_spec = stored(
        client,
        status="failed",
        stop_reason="error",
        started_at=T,
        finished_at=T,
        attempts=2,
        cancel_requested=True,
        progress_epoch=2,
        progress_step=5,
        progress_steps=10,
        latest_metrics={"loss": 0.5, "accuracy": None},
        best={"epoch": 2, "monitor": "val_loss", "value": 0.25},
        test_metrics={"loss": 1.0},
        class_weight={"0": 1.5, "1": 0.5},
        warnings=["one", "two"],
        error_type="ValueError",
        error_message=None,
        error_traceback="Traceback\n  line",
        model_size_bytes=2**40,
        model_sha256="ab" * 32,
        kind="evaluate",
        parent_job_id="cd" * 16,
        model_id="m" * 32,
        artifacts_removed_at=T,
    )
    assert client.get(f"/v1/jobs/{empty}").text == body(job_body(empty, empty_spec))
    expected_full = job_body(
        full,
        full_spec,
        status="failed",
        stop_reason="error",
        started_at=AT,
        finished_at=AT,
        attempts=2,
        cancel_requested=True,
        progress={"epoch": 2, "epochs": 3, "step": 5, "steps": 10},
        latest_metrics={"loss": 0.5, "accuracy": None},
        best={"epoch": 2, "monitor": "val_loss", "value": 0.25},
        test_metrics={"loss": 1.0},
        class_weight={"0": 1.5, "1": 0.5},
        warnings=["one", "two"],
        error={"type": "ValueError", "message": "", "traceback_tail": "Traceback\n  line"},
        final_model={"size_bytes": 2**40, "sha256": "ab" * 32, "savedmodel": False},
        kind="evaluate",
        parent_job_id="cd" * 16,
        model_id="m" * 32,
        artifacts_removed_at=AT,
        insight=None,
    )
    assert client.get(f"/v1/jobs/{full}").text == body(expected_full)
    newest_first = sorted([expected_full, job_body(empty, empty_spec)], key=lambda j: j["id"])[::-1]
    assert client.get("/v1/jobs").text == body({"items": newest_first, "next_cursor": None})


def test_epochs_checkpoints_and_history(client: TestClient) -> None:
    job_id, _ = stored(client)
    with client.app.state.session_factory() as s, s.begin():  # type: ignore[attr-defined]
        s.add(
            EpochMetric(
                job_id=job_id,
                epoch=1,
                metrics={"loss": 1.0, "acc": None},
                lr=None,
                duration_s=0.5,
                recorded_at=T,
                attempt=None,
            )
        )
        s.add(
            EpochMetric(
                job_id=job_id,
                epoch=2,
                metrics={"loss": 0.5},
                lr=0.001,
                duration_s=1.0,
                recorded_at=T,
                attempt=1,
            )
        )
        s.add(
            Checkpoint(
                job_id=job_id,
                epoch=1,
                path="e1.keras",
                monitor=None,
                value=None,
                is_best=False,
                size_bytes=10,
                created_at=T,
            )
        )
        s.add(
            Checkpoint(
                job_id=job_id,
                epoch=2,
                path="e2.keras",
                monitor="val_loss",
                value=0.25,
                is_best=True,
                size_bytes=20,
                created_at=T,
                removed_at=T,
                removed_reason="retention",
            )
        )
        s.execute(update(JobEvent).where(JobEvent.job_id == job_id).values(at=T))
        s.add(JobEvent(job_id=job_id, at=T, kind="started", message="on w1", attempt=1))
    epochs = [
        {
            "epoch": 1,
            "metrics": {"loss": 1.0, "acc": None},
            "lr": None,
            "duration_s": 0.5,
            "recorded_at": AT,
            "attempt": None,
        },
        {
            "epoch": 2,
            "metrics": {"loss": 0.5},
            "lr": 0.001,
            "duration_s": 1.0,
            "recorded_at": AT,
            "attempt": 1,
        },
    ]
    metrics = client.get(f"/v1/jobs/{job_id}/metrics")
    assert metrics.text == body({"items": epochs, "last_epoch": 2})
    assert client.get(f"/v1/jobs/{job_id}/checkpoints").text == body(
        {
            "items": [
                {
                    "id": 1,
                    "epoch": 1,
                    "path": "e1.keras",
                    "monitor": None,
                    "value": None,
                    "is_best": False,
                    "size_bytes": 10,
                    "created_at": AT,
                    "removed_at": None,
                    "removed_reason": None,
                },
                {
                    "id": 2,
                    "epoch": 2,
                    "path": "e2.keras",
                    "monitor": "val_loss",
                    "value": 0.25,
                    "is_best": True,
                    "size_bytes": 20,
                    "created_at": AT,
                    "removed_at": AT,
                    "removed_reason": "retention",
                },
            ]
        }
    )
    history = client.get(f"/v1/jobs/{job_id}/history").json()["items"]
    assert [list(event) for event in history] == [["at", "kind", "message", "attempt"]] * 2
    assert history[1] == {"at": AT, "kind": "started", "message": "on w1", "attempt": 1}


def test_datasets_and_workers(client: TestClient) -> None:
    job_id, _ = stored(client, status="running", worker="w1@h", started_at=T, progress_epoch=2)
    now = utcnow()
    with client.app.state.session_factory() as s, s.begin():  # type: ignore[attr-defined]
        s.add(
            Dataset(
                id="d" * 32,
                owner=None,
                name=None,
                kind="npz",
                created_at=T,
                size_bytes=12,
                sha256="ab" * 32,
                info={"train": {"n_samples": 3}},
            )
        )
        s.add(
            Worker(
                name="w1@h",
                host="h",
                pid=11,
                queues=["default", "default.gpus1"],
                device_kind="gpu",
                devices=1,
                gpus="0",
                started_at=T,
                heartbeat_at=now,
            )
        )
        s.add(
            Worker(
                name="w0@h",
                host="h",
                pid=10,
                queues=["cpu"],
                device_kind="cpu",
                devices=4,
                gpus=None,
                started_at=T,
                heartbeat_at=T,
                stopped_at=T,
            )
        )
    dataset = {
        "id": "d" * 32,
        "name": None,
        "kind": "npz",
        "created_at": AT,
        "size_bytes": 12,
        "sha256": "ab" * 32,
        "splits": {"train": {"n_samples": 3}},
    }
    assert client.get(f"/v1/datasets/{'d' * 32}").text == body(dataset)
    assert client.get("/v1/datasets").text == body({"items": [dataset]})
    heard = now.isoformat().replace("+00:00", "Z")
    assert client.get("/v1/workers").text == body(
        {
            "items": [
                {
                    "name": "w1@h",
                    "host": "h",
                    "pid": 11,
                    "queues": ["default", "default.gpus1"],
                    "device_kind": "gpu",
                    "devices": 1,
                    "gpus": "0",
                    "started_at": AT,
                    "heartbeat_at": heard,
                    "stopped_at": None,
                    "alive": True,
                    "job": {
                        "id": job_id,
                        "name": "test-digits",
                        "queue": "default",
                        "started_at": AT,
                        "epoch": 2,
                        "epochs": 3,
                    },
                },
                {
                    "name": "w0@h",
                    "host": "h",
                    "pid": 10,
                    "queues": ["cpu"],
                    "device_kind": "cpu",
                    "devices": 4,
                    "gpus": None,
                    "started_at": AT,
                    "heartbeat_at": AT,
                    "stopped_at": AT,
                    "alive": False,
                    "job": None,
                },
            ]
        }
    )
