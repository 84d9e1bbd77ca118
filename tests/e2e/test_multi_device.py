"""Jobs on several devices: MirroredStrategy over two logical CPU devices, routed to a
worker that has them, refused when no worker could ever have them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Backend, Service
from tests.factories import digits_spec

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def events(svc: Service, job_id: str) -> list[dict[str, str]]:
    items: list[dict[str, str]] = svc.client.get(f"/v1/jobs/{job_id}/history").json()["items"]
    return items


def test_two_device_job_waits_for_a_two_device_worker_and_records_the_same_schema(
    tmp_path: Path,
) -> None:
    backend = Backend("sqlite", f"sqlite:///{tmp_path / 'fitq.db'}", None)
    svc = Service(backend, tmp_path, "multi", extra_env={"FITQ_MAX_GPUS_PER_WORKER": "2"})
    svc.start()  # the API and a worker with one device
    try:
        too_big = svc.client.post(
            "/v1/jobs", json={**digits_spec(**{"resources.gpus": 3}), "queue": svc.queue}
        )
        assert too_big.status_code == 422, too_big.text
        assert [e["loc"] for e in too_big.json()["detail"]] == [["body", "resources", "gpus"]]
        assert "FITQ_MAX_GPUS_PER_WORKER" in too_big.json()["detail"][0]["msg"]

        multi = svc.submit(digits_spec(**{"resources.gpus": 2}))
        svc.wait_until(
            lambda: any(e["kind"] == "forwarded" for e in events(svc, multi["id"])),
            60,
            "the one-device worker to forward the two-device job",
        )
        single = svc.submit(digits_spec())
        assert svc.wait_for(single["id"])["status"] == "succeeded"
        assert svc.job(multi["id"])["status"] == "queued"

        svc.extra_env["FITQ_LOGICAL_CPUS"] = "2"
        svc.start_worker("worker2")
        done = svc.wait_for(multi["id"], timeout=180)
        assert done["status"] == "succeeded", done["error"]
        assert done["stop_reason"] == "completed"

        rows, single_rows = svc.metrics(multi["id"]), svc.metrics(single["id"])
        assert [r["epoch"] for r in rows] == [r["epoch"] for r in single_rows] == [1, 2, 3]
        for row, single_row in zip(rows, single_rows, strict=True):
            assert set(row) == set(single_row)
            assert set(row["metrics"]) == set(single_row["metrics"])
            assert set(row["metrics"]) == {"loss", "accuracy", "val_loss", "val_accuracy"}
            assert row["lr"] == pytest.approx(0.001) and row["duration_s"] > 0
            assert all(v is not None for v in row["metrics"].values())
        assert set(done["latest_metrics"]) == set(svc.job(single["id"])["latest_metrics"])
        log = svc.client.get(f"/v1/jobs/{multi['id']}/logs").text
        assert "MirroredStrategy with 2 replicas" in log and "global batch 32" in log
        assert "MirroredStrategy" not in svc.client.get(f"/v1/jobs/{single['id']}/logs").text

        workers = svc.client.get("/v1/workers").json()["items"]
        assert [w["alive"] for w in workers] == [True, True]
        by_devices = {w["devices"]: w for w in workers}
        assert by_devices[1]["queues"] == ["multi"]
        assert by_devices[2]["queues"] == ["multi", "multi.gpus2"]
        assert {w["device_kind"] for w in workers} == {"cpu"}
        started = [e for e in events(svc, multi["id"]) if e["kind"] == "started"]
        assert [by_devices[2]["name"] in e["message"] for e in started] == [True]
    finally:
        svc.stop()
