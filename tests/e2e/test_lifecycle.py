"""A job's life through the real API and a real Celery worker, on both backends."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from queueing.broker import make_celery, publish_job
from tests.conftest import ROOT, Service
from tests.factories import digits_spec, keras_layer, keras_sequential, nan_loss_spec

pytestmark = pytest.mark.e2e


def test_example_spec_trains_with_rows_appearing_while_it_runs(service: Service) -> None:
    spec = yaml.safe_load((ROOT / "examples/digits.yaml").read_text())
    job = service.submit(spec)
    seen_running: set[int] = set()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        status = service.job(job["id"])["status"]
        rows = service.metrics(job["id"])
        if status == "running":
            seen_running.add(len(rows))
        if status in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.1)
    done = service.job(job["id"])
    assert done["status"] == "succeeded", done["error"]
    # Rows appeared one by one while the job ran, not all at the end.
    assert len([n for n in seen_running if n > 0]) >= 3, seen_running
    rows = service.metrics(job["id"])
    assert [r["epoch"] for r in rows] == list(range(1, len(rows) + 1))
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(rows[0]["metrics"])
    assert all(r["lr"] == pytest.approx(0.001) and r["duration_s"] > 0 for r in rows)
    assert done["stop_reason"] in ("completed", "early_stopping")
    assert set(done["test_metrics"]) == {"loss", "accuracy"}
    assert done["best"]["monitor"] == "val_loss"
    assert done["best"]["value"] == min(r["metrics"]["val_loss"] for r in rows)

    job_dir = service.data_dir / "artifacts" / "jobs" / job["id"]
    checkpoints = service.client.get(f"/v1/jobs/{job['id']}/checkpoints").json()["items"]
    assert [c["epoch"] for c in checkpoints] == [r["epoch"] for r in rows]
    for c in checkpoints:
        assert c["path"] == f"checkpoints/epoch{c['epoch']:02d}-{c['value']:.3f}.keras"
        assert (job_dir / c["path"]).stat().st_size == c["size_bytes"]
    assert sum(c["is_best"] for c in checkpoints) == 1
    first = checkpoints[0]
    download = service.client.get(f"/v1/jobs/{job['id']}/checkpoints/{first['id']}/file")
    assert download.status_code == 200
    assert download.content == (job_dir / first["path"]).read_bytes()
    assert list((job_dir / "tensorboard" / "train").glob("events.out.tfevents.*"))
    assert list((job_dir / "tensorboard" / "validation").glob("events.out.tfevents.*"))
    log = service.client.get(f"/v1/jobs/{job['id']}/logs").text
    assert f"Epoch {len(rows)}/20" in log and "val_loss" in log


def test_cancel_running_job_stops_within_two_seconds(service: Service) -> None:
    spec = digits_spec(
        **{
            "fit.epochs": 500,
            "fit.batch_size": 8,
            "callbacks": [{"type": "ModelCheckpoint", "filepath": "last.keras", "monitor": "loss"}],
        }
    )
    job = service.submit(spec)
    service.wait_until(lambda: len(service.metrics(job["id"])) >= 2, 120, "two epochs")
    asked = time.monotonic()
    resp = service.client.post(f"/v1/jobs/{job['id']}/cancel")
    assert resp.status_code == 202
    done = service.wait_for(job["id"], timeout=10)
    elapsed = time.monotonic() - asked
    print(f"cancel took {elapsed:.2f}s")
    assert done["status"] == "cancelled" and done["stop_reason"] == "cancelled"
    assert elapsed < 2.0
    rows = service.metrics(job["id"])
    assert all(r["recorded_at"] <= done["finished_at"] for r in rows)
    time.sleep(1.0)
    assert len(service.metrics(job["id"])) == len(rows)
    checkpoints = service.client.get(f"/v1/jobs/{job['id']}/checkpoints").json()["items"]
    assert (
        checkpoints
        and (service.data_dir / "artifacts" / "jobs" / job["id"] / checkpoints[0]["path"]).is_file()
    )
    # A finished job cannot be cancelled again into another state; a cancelled one says so.
    assert service.client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202


def test_queued_job_cancelled_never_starts(service: Service) -> None:
    blocker = service.submit(digits_spec(**{"fit.epochs": 500}))
    service.wait_for(blocker["id"], ("running",), timeout=60)
    waiting = service.submit(digits_spec())
    assert service.client.post(f"/v1/jobs/{waiting['id']}/cancel").json()["status"] == "cancelled"
    service.client.post(f"/v1/jobs/{blocker['id']}/cancel")
    service.wait_for(blocker["id"], timeout=20)
    time.sleep(8)  # the worker takes the cancelled job's message and must leave it alone
    job = service.job(waiting["id"])
    assert job["status"] == "cancelled" and job["attempts"] == 0 and job["started_at"] is None


def test_training_error_fails_the_job_and_the_worker_goes_on(service: Service) -> None:
    # Pixels of 1.0 index past an Embedding of one row: nothing before fit() can know
    # which values the data holds at every position, so only training finds it.
    keras_config = keras_sequential(
        keras_layer("Embedding", name="emb", input_dim=1, output_dim=2),
        keras_layer("Flatten", name="flat"),
        keras_layer("Dense", name="out", units=10, activation="softmax"),
        name="index_out_of_range",
    )
    bad = service.submit(
        digits_spec(
            **{"model.builtin": ..., "model.params": ..., "model.keras_config": keras_config}
        )
    )
    done = service.wait_for(bad["id"], timeout=120)
    assert done["status"] == "failed" and done["stop_reason"] == "error"
    assert done["error"]["type"] == "InvalidArgumentError"
    assert "[0, 1)" in done["error"]["message"]  # an index beyond the Embedding's one row
    assert "Traceback" in done["error"]["traceback_tail"]
    good = service.submit(digits_spec())
    assert service.wait_for(good["id"], timeout=120)["status"] == "succeeded"


def test_nan_loss_with_terminate_on_nan_fails_with_nan_loss(service: Service) -> None:
    spec = nan_loss_spec()
    done = service.wait_for(service.submit(spec)["id"], timeout=120)
    assert done["status"] == "failed" and done["stop_reason"] == "nan_loss"
    assert done["error"]["type"] == "NaNLoss"
    assert len(service.metrics(done["id"])) < 50


def test_a_second_delivery_of_a_finished_job_does_nothing(service: Service) -> None:
    job = service.submit(digits_spec(**{"fit.epochs": 2}))
    done = service.wait_for(job["id"], timeout=120)
    assert done["status"] == "succeeded" and done["attempts"] == 1
    publish_job(make_celery(service.settings()), job["id"], service.queue)
    probe = service.submit(digits_spec(**{"fit.epochs": 1}))  # queued behind the duplicate
    assert service.wait_for(probe["id"], timeout=120)["status"] == "succeeded"
    again = service.job(job["id"])
    assert again["attempts"] == 1 and again["finished_at"] == done["finished_at"]
    kinds = [e["kind"] for e in service.client.get(f"/v1/jobs/{job['id']}/history").json()["items"]]
    # The last event is the removal of the job's resume backups, after its end.
    assert kinds == ["created", "started", "finished", "retention"]
    assert len(service.metrics(job["id"])) == 2


def test_the_celery_parent_process_never_loads_tensorflow(service: Service) -> None:
    maps = Path(f"/proc/{service.procs['worker'].pid}/maps")
    if not maps.exists():
        pytest.skip("needs Linux /proc to read the worker's loaded libraries")
    job = service.submit(digits_spec(**{"fit.epochs": 1}))
    assert service.wait_for(job["id"], timeout=120)["status"] == "succeeded"
    loaded = maps.read_text()
    assert "libtensorflow" not in loaded and "_pywrap_tensorflow" not in loaded


def test_max_runtime_stops_the_job_and_keeps_its_checkpoints(service: Service) -> None:
    spec = digits_spec(
        **{
            "max_runtime_seconds": 4,
            "fit.epochs": 500,
            "fit.batch_size": 8,
            "callbacks": [
                {"type": "ModelCheckpoint", "filepath": "e{epoch:03d}.keras", "monitor": "loss"}
            ],
        }
    )
    done = service.wait_for(service.submit(spec)["id"], timeout=120)
    assert done["status"] == "failed" and done["stop_reason"] == "max_runtime"
    assert done["error"]["type"] == "MaxRuntimeExceeded"
    rows = service.metrics(done["id"])
    checkpoints = service.client.get(f"/v1/jobs/{done['id']}/checkpoints").json()["items"]
    # Under heavy load the deadline may pass within the first epoch: then nothing is kept.
    assert len(rows) < 500 and len(checkpoints) == len(rows)
    job_dir = service.data_dir / "artifacts" / "jobs" / done["id"]
    assert all((job_dir / c["path"]).is_file() for c in checkpoints)


def test_balanced_class_weight_is_computed_and_shown_on_the_job(service: Service) -> None:
    import numpy as np
    from sklearn.utils.class_weight import compute_class_weight

    y = [0] * 40 + [1] * 10 + [2] * 30
    spec = digits_spec(
        **{
            "data.train": {"x": [[float(i % 7), float(i % 3)] for i in range(80)], "y": y},
            "data.validation": ...,
            "fit.class_weight": "balanced",
            "fit.validation_split": 0.25,
            "fit.epochs": 1,
        }
    )
    done = service.wait_for(service.submit(spec)["id"], timeout=120)
    assert done["status"] == "succeeded", done["error"]
    fitted = np.array(y[:60])  # validation_split holds out the last quarter
    expected = compute_class_weight("balanced", classes=np.unique(fitted), y=fitted)
    assert done["class_weight"] == pytest.approx({str(c): w for c, w in enumerate(expected)})


def test_a_cnn_trains_with_augmentation(service: Service) -> None:
    spec = digits_spec(
        **{
            "model": {"builtin": "cnn", "params": {"filters": [8], "dense_units": 16}},
            "data.augmentation": [
                {"layer": "RandomRotation", "factor": 0.05},
                {"layer": "RandomZoom", "height_factor": 0.1},
                {"layer": "RandomCrop", "height": 7, "width": 7},
            ],
            "fit.epochs": 2,
        }
    )
    done = service.wait_for(service.submit(spec)["id"], timeout=120)
    assert done["status"] == "succeeded", done["error"]
    rows = service.metrics(done["id"])
    assert [r["epoch"] for r in rows] == [1, 2] and "val_accuracy" in rows[-1]["metrics"]


def test_an_image_folder_trains_a_small_cnn_with_augmentation(service: Service) -> None:
    from tests.factories import image_zip

    resp = service.client.post(
        "/v1/datasets", files={"file": ("stripes.zip", image_zip(per_class=24))}
    )
    assert resp.status_code == 201, resp.text
    spec = digits_spec(
        **{
            "model": {"builtin": "cnn", "params": {"filters": [8], "dense_units": 16}},
            "data.train": {"dataset": resp.json()["id"]},
            "data.validation": ...,
            "data.augmentation": [
                {"layer": "RandomFlip", "mode": "horizontal"},
                {"layer": "RandomCrop", "height": 14, "width": 14},
            ],
            "fit.validation_split": 0.25,
            "fit.epochs": 3,
            "fit.batch_size": 8,
        }
    )
    done = service.wait_for(service.submit(spec)["id"], timeout=120)
    assert done["status"] == "succeeded", done["error"]
    rows = service.metrics(done["id"])
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(rows[-1]["metrics"])
