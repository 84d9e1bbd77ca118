"""ModelCheckpoint to ``.h5``, Keras' legacy HDF5 format, through a real service: the
files Keras writes are recorded, listed and downloaded as ``.keras`` ones are."""

from __future__ import annotations

import io

import pytest

from tests.conftest import Service
from tests.factories import digits_spec

pytestmark = pytest.mark.e2e

h5py = pytest.importorskip("h5py")
keras = pytest.importorskip("keras")
np = pytest.importorskip("numpy")


def test_a_whole_model_checkpointed_to_h5_is_recorded_and_downloads(service: Service) -> None:
    callbacks = [
        {"type": "ModelCheckpoint", "filepath": "e{epoch:02d}-{val_loss:.3f}.h5"},
        {"type": "ModelCheckpoint", "filepath": "e{epoch:02d}.keras"},
    ]
    job = service.submit(digits_spec(**{"fit.epochs": 2, "callbacks": callbacks}))
    assert job["warnings"] == []
    done = service.wait_for(job["id"], timeout=120)
    assert done["status"] == "succeeded", done["error"]
    rows = service.metrics(job["id"])

    items = service.client.get(f"/v1/jobs/{job['id']}/checkpoints").json()["items"]
    h5 = [c for c in items if c["path"].endswith(".h5")]
    assert [c["path"] for c in h5] == [
        f"checkpoints/e{r['epoch']:02d}-{r['metrics']['val_loss']:.3f}.h5" for r in rows
    ]
    job_dir = service.data_dir / "artifacts" / "jobs" / job["id"]
    for c in h5:
        got = service.client.get(f"/v1/jobs/{job['id']}/checkpoints/{c['id']}/file")
        assert got.status_code == 200
        assert got.content == (job_dir / c["path"]).read_bytes()
        assert len(got.content) == c["size_bytes"]
        # Keras' legacy HDF5 model file: the model's config and its weights.
        with h5py.File(io.BytesIO(got.content), "r") as f:
            assert "model_config" in f.attrs and "model_weights" in f
    # The last .h5 holds the same model as the .keras file of the same epoch.
    from_h5 = keras.models.load_model(job_dir / h5[-1]["path"])
    from_keras = keras.models.load_model(job_dir / "checkpoints" / "e02.keras")
    assert len(from_h5.get_weights()) == len(from_keras.get_weights()) > 0
    for a, b in zip(from_h5.get_weights(), from_keras.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
