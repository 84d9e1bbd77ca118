"""``DELETE /v1/jobs/{id}/artifacts`` and ``GET /v1/usage`` in-process, with auth on,
on SQLite and PostgreSQL: who may delete, what goes, what answers 410 after, and an
owner's usage against the sizes of the real files."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from api.main import create_app
from api.tokens import create_token
from core.db import make_engine, make_session_factory
from core.settings import Settings
from models.tables import Checkpoint, Job
from storage.uploads import npz_bytes
from tests.conftest import Backend
from tests.factories import digits_spec


@dataclass
class Api:
    client: TestClient
    settings: Settings
    headers: dict[str, dict[str, str]]

    def submit(self, who: str, **overrides: Any) -> str:
        resp = self.client.post(
            "/v1/jobs", json=digits_spec(**overrides), headers=self.headers[who]
        )
        assert resp.status_code == 201, resp.text
        job_id: str = resp.json()["id"]
        return job_id

    def set_row(self, job_id: str, **columns: Any) -> None:
        factory = make_session_factory(make_engine(self.settings.resolved_database_url))
        with factory() as s, s.begin():
            s.execute(update(Job).where(Job.id == job_id).values(**columns))

    def finished(self, job_id: str, sizes: tuple[int, ...] = (300, 200)) -> Path:
        """The job as a worker leaves a succeeded one: checkpoints, model.keras,
        TensorBoard files and its log on disk, their rows written."""
        job_dir = self.settings.job_dir(job_id)
        (job_dir / "checkpoints").mkdir(parents=True)
        (job_dir / "tensorboard" / "train").mkdir(parents=True)
        (job_dir / "tensorboard" / "train" / "events").write_bytes(b"t" * 123)
        (job_dir / "train.log").write_text("Epoch 1/2\n")
        model = b"m" * 777
        (job_dir / "model.keras").write_bytes(model)
        factory = make_session_factory(make_engine(self.settings.resolved_database_url))
        with factory() as s, s.begin():
            for epoch, size in enumerate(sizes, start=1):
                rel = f"checkpoints/e{epoch}.keras"
                (job_dir / rel).write_bytes(b"c" * size)
                s.add(
                    Checkpoint(
                        job_id=job_id,
                        epoch=epoch,
                        path=rel,
                        monitor="val_loss",
                        value=1.0 / epoch,
                        is_best=epoch == len(sizes),
                        size_bytes=size,
                    )
                )
        self.set_row(
            job_id,
            status="succeeded",
            stop_reason="completed",
            model_size_bytes=len(model),
            model_sha256=hashlib.sha256(model).hexdigest(),
        )
        return job_dir


@pytest.fixture
def api(migrated_backend: Backend, tmp_path: Path) -> Iterator[Api]:
    settings = Settings(
        data_dir=tmp_path / "d", database_url=migrated_backend.database_url, auth="on"
    )
    with make_session_factory(make_engine(settings.resolved_database_url))() as s:
        tokens = {n: create_token(s, n, admin=n == "root") for n in ("alice", "bob", "root")}
    headers = {n: {"Authorization": f"Bearer {t}"} for n, t in tokens.items()}
    with TestClient(create_app(settings)) as client:
        yield Api(client, settings, headers)


def test_the_owner_deletes_a_finished_jobs_artifacts_and_downloads_answer_410(api: Api) -> None:
    alice, bob = api.headers["alice"], api.headers["bob"]
    job_id = api.submit("alice")
    url = f"/v1/jobs/{job_id}/artifacts"
    queued = api.client.delete(url, headers=alice)
    assert queued.status_code == 409
    assert "is queued; its artifacts can be deleted once it has ended" in queued.json()["detail"]
    api.set_row(job_id, status="running")
    assert api.client.delete(url, headers=alice).status_code == 409
    job_dir = api.finished(job_id)
    assert api.client.delete(url, headers=bob).status_code == 404
    assert job_dir.joinpath("model.keras").is_file()

    resp = api.client.delete(url, headers=alice)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "job_id": job_id,
        "checkpoints_removed": 2,
        "bytes_freed": 300 + 200 + 777 + 123,
    }
    assert [p.name for p in job_dir.iterdir()] == ["train.log"]
    job = api.client.get(f"/v1/jobs/{job_id}", headers=alice).json()
    assert job["artifacts_removed_at"] is not None
    items = api.client.get(f"/v1/jobs/{job_id}/checkpoints", headers=alice).json()["items"]
    assert [(c["epoch"], c["removed_reason"]) for c in items] == [(1, "deleted"), (2, "deleted")]
    assert all(c["removed_at"] is not None for c in items)

    gone = api.client.get(f"/v1/jobs/{job_id}/checkpoints/{items[0]['id']}/file", headers=alice)
    assert gone.status_code == 410
    assert "when the job's artifacts were deleted" in gone.json()["detail"]
    model = api.client.get(f"/v1/jobs/{job_id}/model", headers=alice)
    assert model.status_code == 410
    assert "its artifacts were deleted at" in model.json()["detail"]
    run = api.client.post(
        f"/v1/jobs/{job_id}/evaluate",
        json={"data": {"dataset": "builtin:digits", "split": "test"}},
        headers=alice,
    )
    assert run.status_code == 410, run.text
    warm = api.client.post("/v1/jobs", json=digits_spec(model={"from_job": job_id}), headers=alice)
    assert warm.status_code == 422 and "was removed by a deletion" in warm.text
    # Again: nothing left to remove, the same answer.
    again = api.client.delete(url, headers=alice).json()
    assert (again["checkpoints_removed"], again["bytes_freed"]) == (0, 0)
    assert api.client.get(f"/v1/jobs/{job_id}/logs", headers=alice).text == "Epoch 1/2\n"


def test_an_admin_deletes_any_owners_artifacts(api: Api) -> None:
    job_id = api.submit("bob")
    job_dir = api.finished(job_id, sizes=(50,))
    resp = api.client.delete(f"/v1/jobs/{job_id}/artifacts", headers=api.headers["root"])
    assert resp.status_code == 200 and resp.json()["checkpoints_removed"] == 1
    assert [p.name for p in job_dir.iterdir()] == ["train.log"]
    history = api.client.get(f"/v1/jobs/{job_id}/history", headers=api.headers["bob"]).json()
    assert [e["kind"] for e in history["items"]][-1] == "artifacts_deleted"


def test_a_job_whose_model_a_queued_run_uses_keeps_its_artifacts(api: Api) -> None:
    alice = api.headers["alice"]
    job_id = api.submit("alice")
    api.finished(job_id)
    run = api.client.post(
        f"/v1/jobs/{job_id}/evaluate",
        json={"data": {"dataset": "builtin:digits", "split": "test"}},
        headers=alice,
    )
    assert run.status_code == 201, run.text
    resp = api.client.delete(f"/v1/jobs/{job_id}/artifacts", headers=alice)
    assert resp.status_code == 409
    assert run.json()["id"] in resp.json()["detail"]


def file_sizes(folder: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in folder.glob(pattern))


def test_usage_counts_an_owners_files_by_their_real_sizes(api: Api) -> None:
    alice, bob, root = api.headers["alice"], api.headers["bob"], api.headers["root"]
    rng = np.random.default_rng(0)
    data = npz_bytes(x=rng.random((20, 4), dtype=np.float32), y=np.arange(20) % 2)
    up = api.client.post("/v1/datasets", files={"file": ("d.npz", data)}, headers=alice)
    assert up.status_code == 201, up.text
    mine = [api.submit("alice"), api.submit("alice")]
    dirs = [api.finished(mine[0], (300, 200)), api.finished(mine[1], (1000,))]
    theirs = api.submit("bob")
    api.finished(theirs, (5,))

    usage = api.client.get("/v1/usage", headers=alice).json()
    checkpoint_bytes = sum(file_sizes(d, "checkpoints/*") for d in dirs)
    model_bytes = sum(file_sizes(d, "model.keras") for d in dirs)
    assert usage == {
        "owner": "alice",
        "datasets": {"count": 1, "bytes": len(data)},
        "models": {"count": 0, "bytes": 0},
        "checkpoints": {"count": 3, "bytes": checkpoint_bytes},
        "final_models": {"count": 2, "bytes": model_bytes},
        "total_bytes": len(data) + checkpoint_bytes + model_bytes,
    }
    assert checkpoint_bytes == 1500 and model_bytes == 2 * 777

    api.client.delete(f"/v1/jobs/{mine[1]}/artifacts", headers=alice)
    after = api.client.get("/v1/usage", headers=alice).json()
    assert after["checkpoints"] == {"count": 2, "bytes": file_sizes(dirs[0], "checkpoints/*")}
    assert after["final_models"] == {"count": 1, "bytes": 777}

    assert api.client.get("/v1/usage?owner=alice", headers=bob).status_code == 403
    assert api.client.get("/v1/usage?owner=alice", headers=root).json() == after
    everyone = api.client.get("/v1/usage", headers=root).json()
    assert everyone["owner"] is None
    assert everyone["checkpoints"] == {"count": 3, "bytes": 500 + 5}


def test_the_server_default_retention_is_recorded_in_the_stored_spec(
    migrated_backend: Backend, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path / "d",
        database_url=migrated_backend.database_url,
        keep_last_checkpoints=3,
    )
    with TestClient(create_app(settings)) as client:
        plain = client.post("/v1/jobs", json=digits_spec()).json()
        assert plain["spec"]["output"] == {
            "export": False,
            "retention": {"keep_best": 0, "keep_last": 3, "keep_all": False},
        }
        own = client.post(
            "/v1/jobs", json=digits_spec(output={"retention": {"keep_all": True}})
        ).json()
        assert own["spec"]["output"]["retention"] == {
            "keep_best": 0,
            "keep_last": 0,
            "keep_all": True,
        }
        bad = client.post("/v1/jobs", json=digits_spec(output={"retention": {}}))
        assert bad.status_code == 422
        assert bad.json()["detail"][0]["loc"] == ["body", "output", "retention"]


def test_cancelling_a_requeued_job_removes_the_backups_its_attempt_left(api: Api) -> None:
    alice = api.headers["alice"]
    job_id = api.submit("alice", output={"retention": {"keep_last": 1}})
    job_dir = api.finished(job_id, sizes=(10, 20, 30))
    (job_dir / "backup").mkdir()
    (job_dir / "backup" / "epoch-000003.bin").write_bytes(b"b" * 99)
    # A worker stopped after three epochs; the job waits in the queue again.
    api.set_row(job_id, status="queued", stop_reason=None, attempts=1)
    resp = api.client.post(f"/v1/jobs/{job_id}/cancel", headers=alice)
    assert resp.status_code == 202 and resp.json()["status"] == "cancelled"
    assert not (job_dir / "backup").exists()
    assert sorted(p.name for p in (job_dir / "checkpoints").iterdir()) == ["e3.keras"]
    items = api.client.get(f"/v1/jobs/{job_id}/checkpoints", headers=alice).json()["items"]
    assert [c["removed_reason"] for c in items] == ["retention", "retention", None]
