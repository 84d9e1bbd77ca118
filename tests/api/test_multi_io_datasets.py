"""Uploaded .npz datasets with arrays by model input and output name, and sample weights."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from core.settings import Settings
from storage.uploads import npz_bytes
from tests.api.test_multi_io_specs import MODELS, two_inputs, two_outputs

RNG = np.random.default_rng(0)


def upload(client: TestClient, data: bytes) -> Any:
    return client.post("/v1/datasets", files={"file": ("d.npz", data)})


def leftovers(settings: Settings) -> list[str]:
    root = settings.resolved_artifacts_dir / "datasets"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def named_npz(**more: np.ndarray) -> bytes:
    arrays = {
        "x/a": RNG.random((20, 3)),
        "x/b": RNG.random((20, 2), dtype=np.float32),
        "y": RNG.integers(0, 3, 20),
        "sample_weight": RNG.random(20),
        "x_val/a": RNG.random((8, 3)),
        "x_val/b": RNG.random((8, 2)),
        "y_val": np.arange(8) % 3,
        **more,
    }
    return npz_bytes(**arrays)


def test_named_arrays_are_described_and_a_job_trains_on_them(client: TestClient) -> None:
    resp = upload(client, named_npz())
    assert resp.status_code == 201, resp.text
    splits = resp.json()["splits"]
    train = splits["train"]
    assert train["n_samples"] == 20 and train["sample_weight"] == "all"
    assert train["inputs"] == {
        "a": {"shape": [3], "dtype": "float64"},
        "b": {"shape": [2], "dtype": "float32"},
    }
    assert train["y_shape"] == [] and train["n_classes"] in (2, 3)
    assert splits["validation"]["sample_weight"] is None
    ds = resp.json()["id"]
    spec = two_inputs(
        **{
            "data.train": {"dataset": ds},
            "data.validation": {"dataset": ds, "split": "validation"},
        }
    )
    job = client.post("/v1/jobs", json=spec)
    assert job.status_code == 201, job.text


def test_outputs_by_name_with_their_own_weights(client: TestClient) -> None:
    data = npz_bytes(
        x=RNG.random((10, 3)),
        **{
            "y/cls": np.arange(10) % 3,
            "y/reg": RNG.random((10, 1)),
            "sample_weight/cls": RNG.random(10),
            "sample_weight/reg": RNG.random(10),
        },
    )
    resp = upload(client, data)
    assert resp.status_code == 201, resp.text
    train = resp.json()["splits"]["train"]
    assert train["sample_weight"] == ["cls", "reg"]
    assert train["outputs"]["cls"]["class_counts"] == [4, 3, 3]
    assert train["outputs"]["reg"]["shape"] == [1]
    ds = resp.json()["id"]
    ok = client.post(
        "/v1/jobs", json=two_outputs(**{"data.train": {"dataset": ds}, "data.validation": ...})
    )
    assert ok.status_code == 201, ok.text
    # The same dataset for a model with two inputs: its x is one array.
    bad = two_outputs(
        **{
            "data.train": {"dataset": ds},
            "data.validation": ...,
            "model.keras_config": MODELS["two_inputs"],
        }
    )
    resp = client.post("/v1/jobs", json=bad)
    assert resp.status_code == 422
    locs = [e["loc"] for e in resp.json()["detail"]]
    assert ["body", "data", "train", "dataset"] in locs  # x is one array; the model has two inputs


def test_a_dataset_without_an_input_of_the_model_is_refused(client: TestClient) -> None:
    data = npz_bytes(**{"x/a": RNG.random((6, 3)), "y": np.arange(6) % 3})
    ds = upload(client, data).json()["id"]
    resp = client.post("/v1/jobs", json=two_inputs(**{"data.train": {"dataset": ds}}))
    assert resp.status_code == 422
    errors = resp.json()["detail"]
    assert any(
        e["loc"] == ["body", "data", "train", "dataset"]
        and "no x array for the model's input 'b'" in e["msg"]
        for e in errors
    ), errors


def _raw_npz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, payload in members.items():
            zf.writestr(name, payload)
    return buf.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("data", "says"),
    [
        pytest.param(
            _raw_npz({"x/../evil.npy": _npy(np.zeros(3)), "y.npy": _npy(np.zeros(3))}),
            "unexpected member 'x/../evil.npy'",
            id="a name that climbs out",
        ),
        pytest.param(
            _raw_npz({"x/.hidden.npy": _npy(np.zeros(3)), "y.npy": _npy(np.zeros(3))}),
            "unexpected member",
            id="a dot name",
        ),
        pytest.param(
            _raw_npz({"z/a.npy": _npy(np.zeros(3)), "y.npy": _npy(np.zeros(3))}),
            "unexpected member 'z/a.npy'",
            id="an unknown prefix",
        ),
        pytest.param(
            npz_bytes(x=np.zeros((3, 2)), **{"x/a": np.zeros((3, 2)), "y": np.zeros(3)}),
            "'x' or x/<name> arrays, not both",
            id="plain and named inputs",
        ),
        pytest.param(
            npz_bytes(**{"x/a": np.zeros((3, 2)), "x/b": np.zeros((4, 2)), "y": np.zeros(3)}),
            "different numbers of samples",
            id="inputs of different lengths",
        ),
        pytest.param(
            npz_bytes(x=np.zeros((3, 2)), y=np.zeros(3), sample_weight=np.zeros((3, 2))),
            "one weight per sample",
            id="weights not one a sample",
        ),
        pytest.param(
            npz_bytes(x=np.zeros((3, 2)), y=np.zeros(3), **{"sample_weight/cls": np.zeros(3)}),
            "expected one array per output of y",
            id="weights by name with one y",
        ),
        pytest.param(
            npz_bytes(
                **{"x/a": np.zeros((3, 2)), "y": np.zeros(3)},
                **{"x_val/a": np.zeros((2, 3)), "y_val": np.zeros(2)},
            ),
            "the validation inputs have sample shapes {'a': [3]}",
            id="validation shapes differ",
        ),
        pytest.param(
            npz_bytes(x=np.zeros((3, 2)), y=np.zeros(3), sample_weight_val=np.zeros(3)),
            "there is no 'x_val' and 'y_val'",
            id="weights of a split that is not there",
        ),
    ],
)
def test_bad_named_archives_are_refused_and_leave_nothing(
    client: TestClient, settings: Settings, data: bytes, says: str
) -> None:
    resp = upload(client, data)
    assert resp.status_code == 422, resp.text
    assert says in resp.json()["detail"][0]["msg"], resp.json()
    assert leftovers(settings) == []
    assert not (Path(settings.data_dir) / "evil.npy").exists()
