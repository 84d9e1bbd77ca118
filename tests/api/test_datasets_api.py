"""Dataset uploads in-process: metadata, listing, deletion, and hostile files refused."""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from core.settings import Settings
from migrations.migrate import upgrade
from storage.uploads import npz_bytes
from tests.factories import digits_spec


def upload(client: TestClient, data: bytes, filename: str = "d.npz", **form: str) -> Any:
    return client.post("/v1/datasets", files={"file": (filename, data)}, data=form)


def good_npz() -> bytes:
    rng = np.random.default_rng(0)
    return npz_bytes(
        x=rng.random((40, 8, 8, 1), dtype=np.float32),
        y=np.array([0] * 30 + [1] * 10),
        x_val=rng.random((10, 8, 8, 1)),
        y_val=np.arange(10) % 2,
    )


def leftovers(settings: Settings) -> list[str]:
    root = settings.resolved_artifacts_dir / "datasets"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_upload_describes_the_arrays(client: TestClient, settings: Settings) -> None:
    data = good_npz()
    resp = upload(client, data, name="toy")
    assert resp.status_code == 201, resp.text
    ds = resp.json()
    assert resp.headers["location"] == f"/v1/datasets/{ds['id']}"
    assert ds["name"] == "toy" and ds["size_bytes"] == len(data)
    import hashlib

    assert ds["sha256"] == hashlib.sha256(data).hexdigest()
    train = ds["splits"]["train"]
    assert train["n_samples"] == 40 and train["x_shape"] == [8, 8, 1]
    assert train["x_dtype"] == "float32" and train["class_counts"] == [30, 10]
    assert ds["splits"]["validation"]["n_samples"] == 10 and "test" not in ds["splits"]
    assert client.get(f"/v1/datasets/{ds['id']}").json() == ds
    assert [d["id"] for d in client.get("/v1/datasets").json()["items"]] == [ds["id"]]
    assert leftovers(settings) == [ds["id"]]


def test_jobs_use_a_dataset_by_id_and_it_cannot_be_deleted_while_queued(
    client: TestClient, settings: Settings
) -> None:
    ds = upload(client, good_npz()).json()
    spec = digits_spec(
        **{
            "data.train": {"dataset": ds["id"]},
            "data.validation": {"dataset": ds["id"], "split": "validation"},
            "fit.class_weight": {"0": 1.0, "1": 3.0},
        }
    )
    job = client.post("/v1/jobs", json=spec)
    assert job.status_code == 201, job.text
    refused = client.delete(f"/v1/datasets/{ds['id']}")
    assert refused.status_code == 409 and job.json()["id"] in refused.json()["detail"]
    client.post(f"/v1/jobs/{job.json()['id']}/cancel")
    assert client.delete(f"/v1/datasets/{ds['id']}").status_code == 204
    assert client.get(f"/v1/datasets/{ds['id']}").status_code == 404
    assert leftovers(settings) == []


def test_spec_checks_against_the_uploaded_metadata(client: TestClient) -> None:
    ds = upload(client, good_npz()).json()
    bad = digits_spec(
        **{
            "data.train": {"dataset": ds["id"]},
            "data.validation": {"dataset": ds["id"], "split": "test"},
            "fit.class_weight": {"5": 1.0},
        }
    )
    detail = client.post("/v1/jobs", json=bad).json()["detail"]
    locs = {tuple(d["loc"]) for d in detail}
    assert ("body", "data", "validation", "split") in locs
    assert ("body", "fit", "class_weight", 5) in locs


def npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}".encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def zip_of(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, payload in members.items():
            z.writestr(name, payload)
    return buf.getvalue()


def zip_bomb() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("x.npy", "w") as f:
            f.write(npy_header((16 * 1024 * 1024,), "|u1"))
            for _ in range(16):
                f.write(bytes(1024 * 1024))
        z.writestr("y.npy", npy_header((1,), "<i8") + bytes(8))
    return buf.getvalue()


Y = npy_header((2,), "<i8") + bytes(16)
HOSTILE = {
    "pickled objects": (
        npz_bytes(x=np.array([{"a": 1}, None], dtype=object), y=np.zeros(2)),
        "objects",
    ),
    "shape bomb": (
        zip_of({"x.npy": npy_header((10**9, 10**3)) + bytes(64), "y.npy": Y}),
        "declares shape",
    ),
    "zip bomb": (zip_bomb(), "decompresses"),
    "path traversal": (zip_of({"../x.npy": Y, "y.npy": Y}), "unexpected member '../x.npy'"),
    "absolute path": (zip_of({"/tmp/x.npy": Y, "y.npy": Y}), "unexpected member"),
    "wrong array names": (
        npz_bytes(features=np.zeros((2, 3)), labels=np.zeros(2)),
        "unexpected member",
    ),
    "missing labels": (npz_bytes(x=np.zeros((2, 3))), "expected at least arrays 'x' and 'y'"),
    "truncated": (good_npz()[:300], "not a .npz"),
    "not a zip": (b"hello, world", "not a .npz"),
    "strings": (npz_bytes(x=np.array(["a", "b"]), y=np.zeros(2)), "expected numbers"),
    "length mismatch": (npz_bytes(x=np.zeros((3, 2)), y=np.zeros(2)), "one label per sample"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_uploads_are_refused_and_leave_nothing(
    client: TestClient, settings: Settings, case: str
) -> None:
    data, message = HOSTILE[case]
    resp = upload(client, data)
    assert resp.status_code == 422, resp.text
    assert message in resp.json()["detail"][0]["msg"]
    assert resp.json()["detail"][0]["loc"] == ["body", "file"]
    assert leftovers(settings) == []
    assert client.get("/v1/datasets").json()["items"] == []
    assert client.get("/healthz").status_code == 200


@pytest.fixture
def small(tmp_path: Path) -> Iterator[tuple[TestClient, Settings]]:
    s = Settings(
        data_dir=tmp_path / "d",
        database_url=f"sqlite:///{tmp_path / 's.db'}",
        max_upload_bytes=64 * 1024,
        max_dataset_bytes=256 * 1024,
        max_compression_ratio=10_000,
    )
    upgrade(s.resolved_database_url)
    with TestClient(create_app(s)) as c:
        yield c, s


def test_files_over_the_caps_answer_413_and_leave_nothing(
    small: tuple[TestClient, Settings],
) -> None:
    client, settings = small
    big = npz_bytes(x=np.random.default_rng(1).random((20_000, 8)), y=np.zeros(20_000))
    resp = upload(client, big)
    assert resp.status_code == 413, resp.text
    assert "FITQ_MAX_UPLOAD_BYTES" in resp.text
    roomy = zip_of(
        {
            "x.npy": npy_header((100_000,), "|u1") + bytes(100_000),
            "y.npy": npy_header((100_000,), "|u1") + bytes(100_000),
            "x_val.npy": npy_header((100_000,), "|u1") + bytes(100_000),
        },
        zipfile.ZIP_DEFLATED,
    )
    resp = upload(client, roomy)
    assert resp.status_code == 413 and "FITQ_MAX_DATASET_BYTES" in resp.text
    assert leftovers(settings) == []
    assert upload(client, npz_bytes(x=np.zeros((4, 2)), y=np.zeros(4))).status_code == 201


def test_only_npz_files_are_taken(client: TestClient) -> None:
    resp = upload(client, good_npz(), filename="data.pkl")
    assert resp.status_code == 422 and ".npz" in resp.json()["detail"][0]["msg"]


def test_an_image_folder_archive_is_described(client: TestClient, settings: Settings) -> None:
    from tests.factories import image_zip

    resp = upload(client, image_zip(per_class=5), filename="stripes.zip")
    assert resp.status_code == 201, resp.text
    ds = resp.json()
    assert ds["kind"] == "images"
    train = ds["splits"]["train"]
    assert train["class_names"] == ["horiz", "vert"] and train["class_counts"] == [5, 5]
    assert train["x_shape"] == [16, 16, 3] and train["n_samples"] == 10
    spec = digits_spec(
        **{
            "model": {"builtin": "cnn"},
            "data.train": {"dataset": ds["id"]},
            "data.validation": ...,
            "fit.validation_split": 0.2,
        }
    )
    assert client.post("/v1/jobs", json=spec).status_code == 201


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"../evil.png": b"x"}, "unexpected member '../evil.png'"),
        ({"a/b/c.png": b"x"}, "unexpected member"),
        ({"horiz/notes.txt": b"hello"}, "ending in one of"),
        ({"horiz/fake.png": b"not really a png"}, "not a readable image"),
    ],
)
def test_hostile_image_archives_are_refused(
    client: TestClient, settings: Settings, members: dict[str, bytes], message: str
) -> None:
    from tests.factories import image_zip

    resp = upload(client, image_zip(per_class=2, extra=members), filename="bad.zip")
    assert resp.status_code == 422, resp.text
    assert message in resp.json()["detail"][0]["msg"]
    assert leftovers(settings) == []


def _vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def test_hostile_uploads_leave_the_api_memory_bounded(client: TestClient) -> None:
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc to reset the peak resident memory")
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    before = _vm("VmRSS")
    for data, _message in HOSTILE.values():
        assert upload(client, data).status_code == 422
    grown = _vm("VmHWM") - before
    print(
        f"\npeak memory growth over {len(HOSTILE)} hostile uploads (zip and shape bombs "
        f"included): {grown >> 20} MiB"
    )
    assert grown < 64 * 1024 * 1024
