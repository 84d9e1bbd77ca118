"""Artifacts in an S3-compatible store (``FITQ_ARTIFACTS_URL``), against a real server
(moto's server mode, a separate process): a real API, workers and dispatcher on
PostgreSQL and Redis, each process with its own local artifact folder, so that
nothing reaches another process but through the bucket, as on separate hosts.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.file_names import ARCHITECTURE_FILE
from storage.uploads import npz_bytes
from tests.conftest import (
    REDIS_URL,
    Backend,
    S3Server,
    Service,
    fresh_postgres_schema,
    require_postgres,
)
from tests.e2e.test_faults import FAST, eight_epochs, rows_by_epoch
from tests.factories import digits_spec, retained_checkpoints_spec

# Each test trains real jobs through real processes: over 20 s on a shared 2-core machine.
pytestmark = [pytest.mark.e2e, pytest.mark.slow]
PREFIX = "deploy/artifacts"
TEST_SET = {"dataset": "builtin:digits", "split": "test", "take": 60}


class HostsService(Service):
    """A service whose processes share no folder: each has its own FITQ_ARTIFACTS_DIR."""

    def start_process(self, name: str, *args: str) -> None:
        self.extra_env["FITQ_ARTIFACTS_DIR"] = str(self.local(name))
        super().start_process(name, *args)

    def local(self, name: str) -> Path:
        return self.data_dir / f"host-{name}"


@pytest.fixture(scope="module")
def stored(
    s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[HostsService, Any, str]]:
    require_postgres()
    bucket = s3_server.new_bucket()
    svc = HostsService(
        Backend("postgres", fresh_postgres_schema("fitq_s3"), REDIS_URL),
        tmp_path_factory.mktemp("s3-svc"),
        f"s3-{uuid.uuid4().hex[:8]}",
        extra_env={
            **FAST,
            **s3_server.env(),
            "FITQ_ARTIFACTS_URL": f"s3://{bucket}/{PREFIX}",
            "FITQ_LIVE_SYNC_SECONDS": "0.5",
        },
    )
    svc.start()
    svc.start_dispatcher()
    yield svc, s3_server.client(), bucket
    svc.stop()


def objects(client: Any, bucket: str, key: str) -> dict[str, int]:
    """The bucket's objects under fitq's ``key``, by key relative to it, with sizes."""
    base = f"{PREFIX}/{key}/"
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base)
    return {o["Key"][len(base) :]: o["Size"] for p in pages for o in p.get("Contents", [])}


def body(client: Any, bucket: str, key: str) -> bytes:
    data: bytes = client.get_object(Bucket=bucket, Key=f"{PREFIX}/{key}")["Body"].read()
    return data


def test_checkpoints_models_tensorboard_and_logs_live_in_the_bucket(
    stored: tuple[HostsService, Any, str],
) -> None:
    svc, client, bucket = stored
    spec = digits_spec(
        **{
            "data.test": TEST_SET,
            "callbacks": [
                {"type": "ModelCheckpoint", "filepath": "epoch{epoch:02d}.keras"},
                {"type": "TensorBoard"},
            ],
            "output": {"export": True},
        }
    )
    done = svc.wait_for(svc.submit(spec)["id"], timeout=180)
    assert done["status"] == "succeeded", done["error"]
    job_id = done["id"]
    files = objects(client, bucket, f"jobs/{job_id}")
    assert {"model.keras", "export/saved_model.pb", "train.log", ARCHITECTURE_FILE} <= set(files)
    assert any(re.fullmatch(r"tensorboard/train/events\.out\.tfevents\..*", k) for k in files)
    assert any(re.fullmatch(r"tensorboard/validation/events\.out\.tfevents\..*", k) for k in files)
    assert not any(k.startswith(".staging") or ".partial-" in k for k in files), files
    # The API's own folder never held the job: every answer below came from the bucket.
    assert not (svc.local("api") / "jobs" / job_id).exists()

    checkpoints = svc.client.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"]
    assert [c["path"] for c in checkpoints] == [f"checkpoints/epoch0{e}.keras" for e in (1, 2, 3)]
    for c in checkpoints:
        assert files[c["path"]] == c["size_bytes"]
        download = svc.client.get(f"/v1/jobs/{job_id}/checkpoints/{c['id']}/file")
        assert download.status_code == 200
        assert download.content == body(client, bucket, f"jobs/{job_id}/{c['path']}")

    model = done["final_model"]
    resp = svc.client.get(f"/v1/jobs/{job_id}/model")
    assert resp.status_code == 200 and resp.headers["etag"] == f'"{model["sha256"]}"'
    assert int(resp.headers["content-length"]) == model["size_bytes"] == files["model.keras"]
    assert hashlib.sha256(resp.content).hexdigest() == model["sha256"]
    assert 'filename="model-' in resp.headers["content-disposition"]
    again = svc.client.get(
        f"/v1/jobs/{job_id}/model", headers={"If-None-Match": resp.headers["etag"]}
    )
    assert again.status_code == 304

    tarball = svc.client.get(f"/v1/jobs/{job_id}/model", params={"format": "savedmodel"})
    assert tarball.status_code == 200 and tarball.headers["content-type"] == "application/gzip"
    top = f"savedmodel-{job_id}"
    with tarfile.open(fileobj=io.BytesIO(tarball.content), mode="r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        exported = {
            k.removeprefix("export/"): v for k, v in files.items() if k.startswith("export/")
        }
        for rel, size in exported.items():
            assert members[f"{top}/{rel}"].size == size, rel
            extracted = tar.extractfile(members[f"{top}/{rel}"])
            assert extracted is not None
            assert extracted.read() == body(client, bucket, f"jobs/{job_id}/export/{rel}")
        assert members[top].isdir() and members[f"{top}/variables"].isdir()

    log = svc.client.get(f"/v1/jobs/{job_id}/logs")
    assert "Epoch 3/3" in log.text and int(log.headers["x-log-size"]) == files["train.log"]

    # A predict run on a worker that lacks the model: it fetches it from the bucket.
    shutil.rmtree(svc.local("worker") / "jobs" / job_id)
    run = svc.client.post(f"/v1/jobs/{job_id}/predict", json={"data": TEST_SET})
    assert run.status_code == 201, run.text
    ran = svc.wait_for(run.json()["id"], timeout=120)
    assert ran["status"] == "succeeded", ran["error"]
    predictions = svc.client.get(f"/v1/jobs/{ran['id']}/predictions")
    assert predictions.status_code == 200
    assert np.load(io.BytesIO(predictions.content)).shape == (60, 10)


def test_a_running_job_s_log_and_tensorboard_files_reach_the_bucket_while_it_trains(
    stored: tuple[HostsService, Any, str],
) -> None:
    svc, client, bucket = stored
    spec = digits_spec(
        **{"fit.epochs": 400, "fit.batch_size": 8, "callbacks": [{"type": "TensorBoard"}]}
    )
    job_id = svc.submit(spec)["id"]
    seen: dict[str, Any] = {}

    def live() -> bool:
        job = svc.job(job_id)
        assert job["status"] in ("queued", "running"), job
        files = objects(client, bucket, f"jobs/{job_id}")
        seen.update(job=job, files=files, log=svc.client.get(f"/v1/jobs/{job_id}/logs").text)
        tensorboard = any(k.startswith("tensorboard/train/events.out.tfevents.") for k in files)
        return "Epoch 3/400" in seen["log"] and tensorboard

    svc.wait_until(live, 120, "the log and TensorBoard files of a running job in the bucket")
    # Served by the API from the bucket while the job runs: its folder never held the job.
    assert seen["job"]["status"] == "running" and "model.keras" not in seen["files"]
    assert not (svc.local("api") / "jobs" / job_id).exists()
    assert not any(k.startswith(".staging") for k in seen["files"]), seen["files"]
    # The event stream carries the log lines too, read from the bucket.
    logged = ""
    path = f"/v1/jobs/{job_id}/events?log_offset=0"
    with svc.client.stream("GET", path, timeout=60) as resp:
        assert resp.status_code == 200
        event = ""
        for line in resp.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "log":
                logged += json.loads(line[5:])["text"]
                if "Epoch 3/400" in logged:
                    break
    assert logged.startswith(seen["log"][:200]) and "Epoch 3/400" in logged
    assert svc.client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    assert svc.wait_for(job_id, timeout=60)["status"] == "cancelled"


def test_an_uploaded_dataset_is_trained_from_the_bucket_and_deleted_from_it(
    stored: tuple[HostsService, Any, str],
) -> None:
    svc, client, bucket = stored
    rng = np.random.default_rng(3)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    upload = svc.client.post("/v1/datasets", files={"file": ("d.npz", npz_bytes(x=x, y=y))})
    assert upload.status_code == 201, upload.text
    dataset_id = upload.json()["id"]
    assert set(objects(client, bucket, f"datasets/{dataset_id}")) >= {"x.npy", "y.npy"}
    assert not (svc.local("api") / "datasets" / dataset_id).exists()

    spec = digits_spec(
        **{"data": {"train": {"dataset": dataset_id}}, "fit.epochs": 2, "fit.batch_size": 16}
    )
    done = svc.wait_for(svc.submit(spec)["id"], timeout=120)
    assert done["status"] == "succeeded", done["error"]
    assert (svc.local("worker") / "datasets" / dataset_id / "x.npy").is_file()

    assert svc.client.delete(f"/v1/datasets/{dataset_id}").status_code == 204
    assert objects(client, bucket, f"datasets/{dataset_id}") == {}


def test_an_uploaded_model_and_a_warm_start_train_from_the_bucket_as_plain_scripts(
    stored: tuple[HostsService, Any, str], tmp_path: Path
) -> None:
    from tests.e2e.test_model_uploads import BEST, recorded
    from tests.worker.test_fit_semantics import plain
    from tests.worker.test_model_sources import assert_same, trained_model_file

    svc, client, bucket = stored
    original = trained_model_file(tmp_path / "mine.keras")
    resp = svc.client.post("/v1/models", files={"file": ("mine.keras", original.read_bytes())})
    assert resp.status_code == 201, resp.text
    model_id = resp.json()["id"]
    assert objects(client, bucket, f"models/{model_id}")
    assert not (svc.local("api") / "models" / model_id).exists()

    parent = svc.submit(digits_spec(model={"uploaded": model_id}, callbacks=[BEST]))
    done = svc.wait_for(parent["id"], timeout=180)
    assert done["status"] == "succeeded", done["error"]
    assert_same(recorded(svc, parent["id"]), plain(f"keras:{original}", tmp_path / "a")["epochs"])

    # The warm start runs where the parent's files are not: they come from the bucket.
    shutil.rmtree(svc.local("worker") / "jobs" / parent["id"])
    checkpoints = svc.client.get(f"/v1/jobs/{parent['id']}/checkpoints").json()["items"]
    best = [c for c in checkpoints if c["is_best"]][-1]
    child = svc.submit(digits_spec(model={"from_job": parent["id"]}))
    assert child["spec"]["model"] == {"from_job": parent["id"], "checkpoint": best["id"]}
    done = svc.wait_for(child["id"], timeout=180)
    assert done["status"] == "succeeded", done["error"]
    best_file = tmp_path / "best.keras"
    best_file.write_bytes(body(client, bucket, f"jobs/{parent['id']}/{best['path']}"))
    assert_same(recorded(svc, child["id"]), plain(f"keras:{best_file}", tmp_path / "b")["epochs"])

    assert svc.client.delete(f"/v1/models/{model_id}").status_code == 204
    assert objects(client, bucket, f"models/{model_id}") == {}


def test_a_killed_worker_s_job_resumes_on_another_host_from_the_stored_backup(
    stored: tuple[HostsService, Any, str],
) -> None:
    svc, client, bucket = stored
    job = svc.submit(eight_epochs("s3-killed", **{"fit.batch_size": 4}))
    svc.wait_until(lambda: len(svc.metrics(job["id"])) >= 3, 120, "three epochs")
    assert svc.job(job["id"])["status"] == "running"
    svc.kill("worker")
    backups = objects(client, bucket, f"jobs/{job['id']}/backup")
    assert backups, "backups reach the bucket as they are written"
    # The killed host is gone with its disk; the job goes on elsewhere.
    shutil.rmtree(svc.local("worker"))
    svc.start_worker("worker2")
    done = svc.wait_for(job["id"], timeout=180)
    assert done["status"] == "succeeded", done["error"]
    assert sorted(rows_by_epoch(svc, job["id"])) == list(range(1, 9))
    assert done["attempts"] == 2
    log = svc.client.get(f"/v1/jobs/{job['id']}/logs").text
    resumed = re.findall(r"resuming after epoch (\d+) \(the last recorded epoch is (\d+)\)", log)
    assert resumed and int(resumed[0][0]) >= 3, log[-2000:]
    assert not svc.local("worker").exists()
    # The resume read the backup back from the bucket (the killed host's folder is
    # gone); once the job has ended, its backups leave the bucket and worker2's folder.
    deadline = time.monotonic() + 30
    while objects(client, bucket, f"jobs/{job['id']}/backup") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not objects(client, bucket, f"jobs/{job['id']}/backup")
    assert not (svc.local("worker2") / "jobs" / job["id"] / "backup").exists()


def test_retention_and_deleting_a_job_s_artifacts_empty_the_bucket_of_them(
    stored: tuple[HostsService, Any, str],
) -> None:
    """keep_best 1 and keep_last 1 of 6 epochs leave exactly those objects (and no
    backups) in the bucket and in the worker's folder; DELETE .../artifacts leaves only
    the training log; downloads of what went answer 410."""
    svc, client, bucket = stored
    spec = retained_checkpoints_spec(6, keep_best=1, keep_last=1)
    done = svc.wait_for(svc.submit(spec)["id"], timeout=180)
    assert done["status"] == "succeeded", done["error"]
    job_id = done["id"]
    rows = svc.metrics(job_id)
    best = min(rows, key=lambda r: (r["metrics"]["val_loss"], r["epoch"]))["epoch"]
    kept_epochs = {best, 6}

    # The worker records the outcome, then marks the rows, then deletes the objects.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        history = svc.client.get(f"/v1/jobs/{job_id}/history").json()["items"]
        if any(e["kind"] == "retention" for e in history):
            break
        time.sleep(0.2)
    items = svc.client.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"]
    kept = [c for c in items if c["removed_at"] is None]
    removed = [c for c in items if c["removed_at"] is not None]
    assert {c["epoch"] for c in kept} == kept_epochs
    assert {c["removed_reason"] for c in removed} == {"retention"}
    while True:
        files = objects(client, bucket, f"jobs/{job_id}")
        if time.monotonic() > deadline or not any(k.startswith("backup/") for k in files):
            break
        time.sleep(0.2)
    assert sorted(k for k in files if k.startswith("checkpoints/")) == sorted(
        f"checkpoints/e{e:02d}.weights.h5" for e in kept_epochs
    )
    assert not any(k.startswith("backup/") for k in files), files
    # The worker that ran it: "worker", or "worker2" after the kill test above.
    [worker_dir] = [
        d for d in (svc.local(n) / "jobs" / job_id for n in ("worker", "worker2")) if d.exists()
    ]
    assert sorted(p.name for p in (worker_dir / "checkpoints").iterdir()) == sorted(
        f"e{e:02d}.weights.h5" for e in kept_epochs
    )
    assert not (worker_dir / "backup").exists()
    base = f"/v1/jobs/{job_id}/checkpoints"
    assert svc.client.get(f"{base}/{removed[0]['id']}/file").status_code == 410
    assert svc.client.get(f"{base}/{kept[0]['id']}/file").status_code == 200

    usage = svc.client.get("/v1/usage").json()
    deleted = svc.client.delete(f"/v1/jobs/{job_id}/artifacts")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["checkpoints_removed"] == len(kept)
    assert deleted.json()["bytes_freed"] == sum(v for k, v in files.items() if k != "train.log")
    assert list(objects(client, bucket, f"jobs/{job_id}")) == ["train.log"]
    after = svc.client.get("/v1/usage").json()
    assert usage["checkpoints"]["bytes"] - after["checkpoints"]["bytes"] == sum(
        c["size_bytes"] for c in kept
    )
    assert svc.client.get(f"{base}/{kept[0]['id']}/file").status_code == 410
    assert svc.client.get(f"/v1/jobs/{job_id}/model").status_code == 410
    assert "Epoch 6/6" in svc.client.get(f"/v1/jobs/{job_id}/logs").text
