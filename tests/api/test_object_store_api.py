"""The in-process API with its artifacts in a real S3-compatible server (moto's, a
separate process): uploads land in the bucket and leave nothing in the API's folder,
deletes empty it, and a folder streamed from the bucket as a tar is the tar the
folder itself makes."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.files import tar, tar_objects
from api.main import create_app
from core.settings import Settings
from migrations.migrate import upgrade
from storage.artifacts import S3ArtifactStore, artifact_store
from storage.uploads import npz_bytes
from tests.conftest import S3Server
from tests.factories import image_zip


@pytest.fixture
def s3_settings(s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'api.db'}",
        artifacts_url=f"s3://{s3_server.new_bucket()}/fitq",
    )
    upgrade(settings.resolved_database_url)
    return settings


@pytest.fixture
def s3_client(s3_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(s3_settings)) as c:
        yield c


def stored_keys(settings: Settings, prefix: str) -> list[str]:
    return [e.key for e in artifact_store(settings).list(prefix)]


@pytest.mark.parametrize("kind", ["npz", "images"])
def test_an_upload_lives_in_the_bucket_until_it_is_deleted(
    s3_client: TestClient, s3_settings: Settings, kind: str
) -> None:
    x = np.arange(40, dtype="float32").reshape(20, 2)
    payload = (
        ("d.npz", npz_bytes(x=x, y=np.arange(20) % 2))
        if kind == "npz"
        else ("d.zip", image_zip(per_class=3, size=8))
    )
    resp = s3_client.post("/v1/datasets", files={"file": payload})
    assert resp.status_code == 201, resp.text
    dataset_id = resp.json()["id"]
    keys = stored_keys(s3_settings, f"datasets/{dataset_id}")
    if kind == "npz":
        assert keys == [f"datasets/{dataset_id}/x.npy", f"datasets/{dataset_id}/y.npy"]
    else:
        assert f"datasets/{dataset_id}/images/vert/002.png" in keys and len(keys) >= 6
    # The API's folder keeps nothing: not the upload, not a half-checked copy.
    datasets = s3_settings.resolved_artifacts_dir / "datasets"
    assert not datasets.exists() or list(datasets.iterdir()) == []

    assert s3_client.delete(f"/v1/datasets/{dataset_id}").status_code == 204
    assert stored_keys(s3_settings, f"datasets/{dataset_id}") == []


def test_a_refused_upload_leaves_nothing_in_the_bucket(
    s3_client: TestClient, s3_settings: Settings
) -> None:
    bad = npz_bytes(x=np.array([[np.nan, 1.0]] * 4, dtype="float32"), y=np.zeros(4))
    resp = s3_client.post("/v1/datasets", files={"file": ("d.npz", bad)})
    assert resp.status_code == 422, resp.text
    assert stored_keys(s3_settings, "datasets") == []


def test_a_folder_from_the_bucket_tars_as_the_folder_does(
    s3_settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "export"
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"p" * 1000)
    (folder / "variables" / "variables.index").write_bytes(b"i" * 3)
    (folder / "variables" / "variables.data-00000-of-00001").write_bytes(b"d" * 70_000)
    store = artifact_store(s3_settings)
    assert isinstance(store, S3ArtifactStore)
    store.put_tree(folder, "jobs/j/export")

    def members(data: bytes) -> dict[str, tuple[bool, bytes]]:
        out = {}
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            for m in archive.getmembers():
                f = archive.extractfile(m) if m.isfile() else None
                out[m.name] = (m.isdir(), f.read() if f else b"")
        return out

    from_bucket = b"".join(tar_objects(store, "jobs/j/export", store.list("jobs/j/export"), "top"))
    assert members(from_bucket) == members(b"".join(tar(folder, "top")))
    assert from_bucket.endswith(b"\0" * 2 * tarfile.BLOCKSIZE)
