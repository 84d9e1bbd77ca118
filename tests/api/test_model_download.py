"""``GET /v1/jobs/{id}/model``: a job's trained model, its SavedModel as a .tar.gz, and
every reason there is none; with the files a worker would have left in the job's folder."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from api.files import tar_gz
from api.main import create_app
from api.tokens import create_token
from core.db import make_engine, make_session_factory
from core.settings import Settings
from migrations.migrate import upgrade
from models.tables import Job
from tests.factories import digits_spec

MODEL_BYTES = b"PK\x03\x04 a model.keras stand-in " * 1000


def submitted(client: TestClient, headers: dict[str, str] | None = None, **overrides: Any) -> str:
    resp = client.post("/v1/jobs", json=digits_spec(**overrides), headers=headers or {})
    assert resp.status_code == 201, resp.text
    job_id: str = resp.json()["id"]
    return job_id


def set_row(settings: Settings, job_id: str, **columns: Any) -> None:
    factory = make_session_factory(make_engine(settings.resolved_database_url))
    with factory() as s, s.begin():
        s.execute(update(Job).where(Job.id == job_id).values(**columns))


def succeeded_with_model(settings: Settings, job_id: str, data: bytes = MODEL_BYTES) -> Path:
    """The job as a worker leaves a succeeded one: model.keras written, its row finished."""
    job_dir = settings.job_dir(job_id)
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "model.keras").write_bytes(data)
    set_row(
        settings,
        job_id,
        status="succeeded",
        stop_reason="completed",
        model_size_bytes=len(data),
        model_sha256=hashlib.sha256(data).hexdigest(),
    )
    return job_dir


def a_savedmodel(folder: Path) -> dict[str, bytes]:
    """The files of a SavedModel folder (stand-ins), as ``model.export()`` lays them out."""
    files = {
        "saved_model.pb": os.urandom(3000),
        "fingerprint.pb": b"fp",
        "variables/variables.index": b"index",
        "variables/variables.data-00000-of-00001": os.urandom(2 * 1024 * 1024 + 7),
    }
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    (folder / "assets").mkdir()
    return files


def test_the_model_of_a_succeeded_job_downloads_with_its_sha256(
    client: TestClient, settings: Settings
) -> None:
    job_id = submitted(client)
    succeeded_with_model(settings, job_id)
    sha = hashlib.sha256(MODEL_BYTES).hexdigest()

    resp = client.get(f"/v1/jobs/{job_id}/model")
    assert resp.status_code == 200
    assert resp.content == MODEL_BYTES
    assert resp.headers["content-type"] == "application/octet-stream"
    assert resp.headers["content-disposition"] == f'attachment; filename="model-{job_id}.keras"'
    assert resp.headers["etag"] == f'"{sha}"'
    assert resp.headers["content-length"] == str(len(MODEL_BYTES))
    again = client.get(f"/v1/jobs/{job_id}/model", headers={"If-None-Match": f'"{sha}"'})
    assert again.status_code == 304 and again.content == b""
    assert client.get(f"/v1/jobs/{job_id}/model?format=keras").content == MODEL_BYTES

    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["final_model"] == {
        "size_bytes": len(MODEL_BYTES),
        "sha256": sha,
        "savedmodel": False,
    }


def test_no_model_until_the_job_succeeds_and_none_for_a_failed_one(
    client: TestClient, settings: Settings
) -> None:
    job_id = submitted(client)
    for status, stop_reason, says in [
        ("queued", None, "the job is queued; its model is saved once it succeeds"),
        ("running", None, "the job is running; its model is saved once it succeeds"),
        ("failed", "nan_loss", "the job failed (nan_loss); only a succeeded job saves its model"),
        ("cancelled", "cancelled", "the job was cancelled; only a succeeded job saves"),
        ("succeeded", "completed", "the job finished before fitq kept trained models"),
    ]:
        set_row(settings, job_id, status=status, stop_reason=stop_reason)
        for query in ("", "?format=savedmodel"):
            resp = client.get(f"/v1/jobs/{job_id}/model{query}")
            assert resp.status_code == 404, (status, query)
            detail = resp.json()["detail"]
            assert detail.startswith(f"model of job '{job_id}' not found: {says}"), detail
        assert client.get(f"/v1/jobs/{job_id}").json()["final_model"] is None


def test_a_savedmodel_only_when_the_spec_asked_for_one(
    client: TestClient, settings: Settings
) -> None:
    job_id = submitted(client)
    succeeded_with_model(settings, job_id)
    resp = client.get(f"/v1/jobs/{job_id}/model", params={"format": "savedmodel"})
    assert resp.status_code == 404
    assert "did not ask for one (output: {export: true})" in resp.json()["detail"]

    asked = submitted(client, **{"output": {"export": True}})
    job_dir = succeeded_with_model(settings, asked)
    assert client.get(f"/v1/jobs/{asked}").json()["final_model"]["savedmodel"] is True
    missing = client.get(f"/v1/jobs/{asked}/model?format=savedmodel")
    assert missing.status_code == 404 and "not in the artifact folder" in missing.text

    files = a_savedmodel(job_dir / "export")
    resp = client.get(f"/v1/jobs/{asked}/model?format=savedmodel")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/gzip"
    name = f"savedmodel-{asked}"
    assert resp.headers["content-disposition"] == f'attachment; filename="{name}.tar.gz"'
    with tarfile.open(fileobj=io.BytesIO(resp.content), mode="r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {
            name,
            f"{name}/assets",
            f"{name}/variables",
            *(f"{name}/{f}" for f in files),
        }
        assert members[f"{name}/variables"].isdir()
        for member, data in files.items():
            extracted = tar.extractfile(f"{name}/{member}")
            assert extracted is not None and extracted.read() == data, member


def test_the_archive_leaves_out_links_and_streams_in_chunks(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    files = a_savedmodel(folder)
    secret = tmp_path / "secret.txt"
    secret.write_text("not for download")
    (folder / "link.txt").symlink_to(secret)
    (folder / "linked_dir").symlink_to(tmp_path, target_is_directory=True)

    chunks = list(tar_gz(folder, "top"))
    assert len(chunks) > 2 and all(chunks)  # sent as it is made, never an empty chunk
    assert max(len(c) for c in chunks) < 2 * 1024 * 1024  # the 2 MiB file came in pieces
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks)), mode="r:gz") as tar:
        names = set(tar.getnames())
    assert names == {"top", "top/assets", "top/variables", *(f"top/{f}" for f in files)}


def test_a_model_file_missing_from_the_folder_is_404(
    client: TestClient, settings: Settings
) -> None:
    job_id = submitted(client)
    job_dir = succeeded_with_model(settings, job_id)
    (job_dir / "model.keras").unlink()
    resp = client.get(f"/v1/jobs/{job_id}/model")
    assert resp.status_code == 404
    assert resp.json()["detail"] == (
        f"model file 'model.keras' not found: it is not in the artifact folder of job '{job_id}'"
    )


def test_an_unknown_format_or_job_is_refused(client: TestClient) -> None:
    job_id = submitted(client)
    resp = client.get(f"/v1/jobs/{job_id}/model?format=h5")
    assert resp.status_code == 422
    (error,) = resp.json()["detail"]
    assert error["loc"] == ["query", "format"]
    assert "'keras' or 'savedmodel'" in error["msg"]
    assert client.get("/v1/jobs/nope/model").status_code == 404


def test_the_api_answers_422_at_the_field_and_stores_what_was_asked(client: TestClient) -> None:
    refused = client.post("/v1/jobs", json=digits_spec(output={"export": "true"}))
    assert refused.status_code == 422
    (error,) = refused.json()["detail"]
    assert error["loc"] == ["body", "output", "export"] and error["type"] == "bool_type"
    default = client.post("/v1/jobs", json=digits_spec())
    assert "output" not in default.json()["spec"]
    asked = client.post("/v1/jobs", json=digits_spec(output={"export": True}))
    assert asked.status_code == 201 and asked.json()["spec"]["output"] == {"export": True}


@pytest.fixture
def owners(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, dict[str, str]], Settings]]:
    settings = Settings(
        data_dir=tmp_path / "d", database_url=f"sqlite:///{tmp_path / 'a.db'}", auth="on"
    )
    upgrade(settings.resolved_database_url)
    with make_session_factory(make_engine(settings.resolved_database_url))() as s:
        headers = {
            name: {"Authorization": f"Bearer {create_token(s, name, admin=name == 'root')}"}
            for name in ("alice", "bob", "root")
        }
    with TestClient(create_app(settings)) as client:
        yield client, headers, settings


def test_only_the_owner_and_admins_download_a_model(owners: Any) -> None:
    client, headers, settings = owners
    job_id = submitted(client, headers["bob"], **{"output": {"export": True}})
    a_savedmodel(succeeded_with_model(settings, job_id) / "export")
    for query in ("", "?format=savedmodel"):
        assert client.get(f"/v1/jobs/{job_id}/model{query}").status_code == 401
        refused = client.get(f"/v1/jobs/{job_id}/model{query}", headers=headers["alice"])
        assert refused.status_code == 404
        assert refused.json()["detail"] == f"job {job_id!r} not found"
        for who in ("bob", "root"):
            assert client.get(f"/v1/jobs/{job_id}/model{query}", headers=headers[who]).is_success
