"""File names a spec chooses live in their callbacks' own folders, apart from fitq's own
files in the job's folder (``train.log``, ``backup/``, ``model.keras``), through a real
service."""

from __future__ import annotations

import csv
import time
from typing import Any

import pytest

from tests.conftest import Service
from tests.factories import digits_spec

pytestmark = pytest.mark.e2e

EPOCHS = 3
# Each CSVLogger name is one of fitq's own; the other callbacks' try the same.
COLLIDING = {
    "backup": [
        {"type": "CSVLogger", "filename": "backup"},
        {"type": "ModelCheckpoint", "filepath": "backup.keras", "monitor": "loss"},
    ],
    "train.log": [
        {"type": "CSVLogger", "filename": "train.log"},
        {"type": "TensorBoard"},
        {"type": "ModelCheckpoint", "filepath": "train.log.keras", "monitor": "loss"},
    ],
    "checkpoints": [
        {"type": "CSVLogger", "filename": "checkpoints"},
        {"type": "ModelCheckpoint", "filepath": "e{epoch:02d}.keras", "monitor": "loss"},
    ],
    "tensorboard": [
        {"type": "CSVLogger", "filename": "tensorboard"},
        {"type": "TensorBoard"},
    ],
    "export": [
        {"type": "CSVLogger", "filename": "export"},
        {"type": "ModelCheckpoint", "filepath": "model.keras", "monitor": "loss"},
    ],
}


@pytest.mark.parametrize("name", list(COLLIDING))
def test_a_csv_log_named_like_fitqs_own_files_trains_beside_them(
    service: Service, name: str
) -> None:
    callbacks: list[dict[str, Any]] = COLLIDING[name]
    job = service.submit(digits_spec(**{"fit.epochs": EPOCHS, "callbacks": callbacks}))
    done = service.wait_for(job["id"], timeout=60)
    assert (done["status"], done["stop_reason"]) == ("succeeded", "completed"), done["error"]
    assert [r["epoch"] for r in service.metrics(job["id"])] == list(range(1, EPOCHS + 1))

    job_dir = service.data_dir / "artifacts" / "jobs" / job["id"]
    # The CSV log, in its own folder, one row per epoch.
    with open(job_dir / "csv" / name, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == list(range(EPOCHS))
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(rows[0])
    # fitq's own files, intact: the log is Keras' output, the backups are a folder.
    log = service.client.get(f"/v1/jobs/{job['id']}/logs").text
    assert log.startswith("fitq: training with seed 7"), log[:200]
    assert f"Epoch {EPOCHS}/{EPOCHS}" in log and "fitq: succeeded (completed)" in log
    assert not log.lstrip().startswith("epoch,")
    # The backups were a folder beside the CSV log while the job trained; the worker
    # removes them once the outcome is recorded.
    deadline = time.monotonic() + 30
    while (job_dir / "backup").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not (job_dir / "backup").exists()
    # Every checkpoint the job lists is in checkpoints/ and is the file it says.
    for c in service.client.get(f"/v1/jobs/{job['id']}/checkpoints").json()["items"]:
        assert c["path"].startswith("checkpoints/"), c
        assert (job_dir / c["path"]).stat().st_size == c["size_bytes"]
    if any(cb["type"] == "TensorBoard" for cb in callbacks):
        assert list((job_dir / "tensorboard" / "train").glob("events.out.tfevents.*"))
    # The trained model is fitq's, whatever a checkpoint is called.
    assert (job_dir / "model.keras").stat().st_size == done["final_model"]["size_bytes"]
    assert sorted(p.name for p in job_dir.iterdir()) == sorted(
        {"train.log", "csv", "model.json", "model.keras"}
        | ({"checkpoints"} if any(cb["type"] == "ModelCheckpoint" for cb in callbacks) else set())
        | ({"tensorboard"} if any(cb["type"] == "TensorBoard" for cb in callbacks) else set())
    )
