"""Checkpoint retention through a real service: a 30-epoch job that keeps its 2 best
and its last checkpoint ends with exactly those files, and rows that say which were
removed; its resume backups are gone, and the owner's usage counts what is left."""

from __future__ import annotations

import time

import pytest

from fitq.client import Client
from tests.conftest import Service
from tests.factories import retained_checkpoints_spec

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.parametrize("service", ["sqlite"], indirect=True)
def test_keep_best_2_and_last_1_of_30_epochs_leaves_exactly_those(service: Service) -> None:
    spec = retained_checkpoints_spec(30, keep_best=2, keep_last=1)
    job = service.submit(spec)
    done = service.wait_for(job["id"], timeout=180)
    assert done["status"] == "succeeded", done["error"]
    rows = service.metrics(job["id"])
    assert len(rows) == 30
    # Keras' val_loss improves downwards; on a tie the earlier epoch ranks first.
    ranked = sorted(rows, key=lambda r: (r["metrics"]["val_loss"], r["epoch"]))
    kept_epochs = {ranked[0]["epoch"], ranked[1]["epoch"], 30}

    # The worker records the outcome first, then applies the retention: wait for it.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        history = service.client.get(f"/v1/jobs/{job['id']}/history").json()["items"]
        if any(e["kind"] == "retention" for e in history):
            break
        time.sleep(0.2)
    items = service.client.get(f"/v1/jobs/{job['id']}/checkpoints").json()["items"]
    assert [c["epoch"] for c in items] == list(range(1, 31))
    kept = [c for c in items if c["removed_at"] is None]
    removed = [c for c in items if c["removed_at"] is not None]
    assert {c["epoch"] for c in kept} == kept_epochs
    assert all(c["removed_reason"] is None for c in kept)
    assert {c["removed_reason"] for c in removed} == {"retention"}
    assert len(removed) == 30 - len(kept_epochs)

    job_dir = service.data_dir / "artifacts" / "jobs" / job["id"]
    while (job_dir / "backup").exists() and time.monotonic() < deadline:
        time.sleep(0.1)  # the rows are marked first, the files removed after
    on_disk = sorted(p.name for p in (job_dir / "checkpoints").iterdir())
    assert on_disk == sorted(f"e{e:02d}.weights.h5" for e in kept_epochs)
    assert not (job_dir / "backup").exists()
    assert (job_dir / "model.keras").is_file() and (job_dir / "train.log").is_file()

    base = f"/v1/jobs/{job['id']}/checkpoints"
    gone = service.client.get(f"{base}/{removed[0]['id']}/file")
    assert gone.status_code == 410
    assert "removed" in gone.json()["detail"] and "output.retention" in gone.json()["detail"]
    best = service.client.get(f"{base}/{kept[0]['id']}/file")
    assert best.status_code == 200
    assert best.content == (job_dir / kept[0]["path"]).read_bytes()

    history = service.client.get(f"/v1/jobs/{job['id']}/history").json()["items"]
    retention = [e for e in history if e["kind"] == "retention"]
    assert len(retention) == 1
    assert f"removed {len(removed)} checkpoint(s)" in retention[0]["message"]
    assert "resume backups" in retention[0]["message"]

    # Through the Python client: the usage counts the files left, and deleting the
    # job's artifacts frees exactly them.
    client = Client(service.base_url)
    before = client.usage()
    left = sum((job_dir / c["path"]).stat().st_size for c in kept)
    assert left == sum(c["size_bytes"] for c in kept)
    model_bytes = (job_dir / "model.keras").stat().st_size
    deleted = client.delete_artifacts(job["id"])
    assert deleted["checkpoints_removed"] == len(kept)
    assert [p.name for p in job_dir.iterdir()] == ["train.log"]
    after = client.usage()
    assert before["checkpoints"]["bytes"] - after["checkpoints"]["bytes"] == left
    assert before["final_models"]["bytes"] - after["final_models"]["bytes"] == model_bytes
    assert service.client.get(f"{base}/{kept[0]['id']}/file").status_code == 410
