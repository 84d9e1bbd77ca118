"""Exact fit semantics: what the service records equals a plain ``model.fit()`` script.

Each case runs through the real API and a real Celery worker, and the same model,
data, arguments and seed run in a plain Keras script (tests/worker/plain_fit.py) in
a fresh process. Epochs, every logged value, and the checkpoint files must agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Service
from tests.factories import digits_spec, plain_run

pytestmark = pytest.mark.e2e
CKPT = {
    "type": "ModelCheckpoint",
    "filepath": "epoch{epoch:02d}-{val_loss:.3f}.keras",
    "monitor": "val_loss",
}

CASES: dict[str, dict[str, Any]] = {
    "validation_freq": {"fit.epochs": 6, "fit.validation_freq": 2},
    "early_stopping": {
        "fit.epochs": 40,
        "fit.batch_size": 16,
        "data.train.take": 60,
        "model.params": {"hidden_units": [128]},
        "compile.optimizer": {"class_name": "Adam", "config": {"learning_rate": 0.01}},
        "callbacks": [
            {
                "type": "EarlyStopping",
                "monitor": "val_loss",
                "patience": 2,
                "restore_best_weights": True,
            }
        ],
    },
    "checkpoint_best": {"fit.epochs": 5, "callbacks": [{**CKPT, "save_best_only": True}]},
    "checkpoint_all": {
        "fit.epochs": 4,
        "fit.validation_split": 0.2,
        "data.validation": ...,
        "callbacks": [CKPT],
    },
    "class_weight": {"fit.class_weight": {"0": 2.0, "1": 0.5, "7": 3.0}},
    "steps_per_epoch": {"fit.epochs": 4, "fit.steps_per_epoch": 3, "fit.batch_size": 16},
    "initial_epoch": {
        "fit.epochs": 5,
        "fit.initial_epoch": 2,
        "fit.validation_freq": [3, 5],
        "fit.shuffle": False,
    },
}


def plain(case: str, out: Path) -> dict[str, Any]:
    return plain_run("plain_fit.py", case, str(out))


@pytest.mark.parametrize("case", list(CASES))
def test_recorded_history_equals_plain_fit(service: Service, case: str, tmp_path: Path) -> None:
    job = service.submit(digits_spec(**CASES[case]))
    done = service.wait_for(job["id"], timeout=180)
    assert done["status"] == "succeeded", done["error"]
    expected = plain(case, tmp_path)

    rows = service.metrics(job["id"])
    assert [r["epoch"] for r in rows] == [e for e, _ in expected["epochs"]]
    for row, (epoch, logs) in zip(rows, expected["epochs"], strict=True):
        assert set(row["metrics"]) == set(logs), f"epoch {epoch}"
        for key, value in logs.items():
            assert row["metrics"][key] == pytest.approx(value, rel=1e-6, abs=1e-7), (epoch, key)

    checkpoints = service.client.get(f"/v1/jobs/{job['id']}/checkpoints").json()["items"]
    recorded = sorted(Path(c["path"]).name for c in checkpoints)
    assert recorded == expected["files"]
    job_dir = service.data_dir / "artifacts" / "jobs" / job["id"]
    on_disk = sorted(p.name for p in (job_dir / "checkpoints").glob("*.keras"))
    assert on_disk == expected["files"]

    if case == "early_stopping":
        assert done["stop_reason"] == "early_stopping"
        assert len(rows) < 40
    if case == "checkpoint_best":
        best = [c for c in checkpoints if c["is_best"]]
        assert len(best) == 1 and best[0]["value"] == min(c["value"] for c in checkpoints)
    if case == "initial_epoch":
        assert [sorted(r["metrics"]) for r in rows][1] == ["accuracy", "loss"]


def test_an_uploaded_npz_trains_as_plain_fit_on_the_same_arrays(
    service: Service, tmp_path: Path
) -> None:
    import numpy as np

    rng = np.random.default_rng(5)
    arrays = {
        "x": rng.random((200, 8, 8, 1), dtype=np.float32),
        "y": rng.integers(0, 10, 200),
        "x_val": rng.random((50, 8, 8, 1), dtype=np.float32),
        "y_val": rng.integers(0, 10, 50),
    }
    path = tmp_path / "upload.npz"
    np.savez(path, **arrays)
    resp = service.client.post("/v1/datasets", files={"file": ("upload.npz", path.read_bytes())})
    assert resp.status_code == 201, resp.text
    ds = resp.json()["id"]
    spec = digits_spec(
        **{
            "data.train": {"dataset": ds},
            "data.validation": {"dataset": ds, "split": "validation"},
            "fit.epochs": 4,
            "fit.class_weight": {"0": 1.0, "1": 2.5, "2": 1.0},
        }
    )
    done = service.wait_for(service.submit(spec)["id"], timeout=180)
    assert done["status"] == "succeeded", done["error"]
    expected = plain(f"npz:{path}", tmp_path / "plain")
    rows = service.metrics(done["id"])
    assert [r["epoch"] for r in rows] == [e for e, _ in expected["epochs"]]
    for row, (epoch, logs) in zip(rows, expected["epochs"], strict=True):
        for key, value in logs.items():
            assert row["metrics"][key] == pytest.approx(value, rel=1e-6, abs=1e-7), (epoch, key)


def test_a_functional_residual_model_trains_as_plain_fit(service: Service, tmp_path: Path) -> None:
    """The config model.to_json() gives of a residual block, submitted as keras_config."""
    expected = plain("residual_dense", tmp_path)
    keras_model = {
        "model.builtin": ...,
        "model.params": ...,
        "model.keras_config": expected["config"],
    }
    done = service.wait_for(service.submit(digits_spec(**keras_model))["id"], timeout=180)
    assert done["status"] == "succeeded", done["error"]
    rows = service.metrics(done["id"])
    assert [r["epoch"] for r in rows] == [e for e, _ in expected["epochs"]]
    for row, (epoch, logs) in zip(rows, expected["epochs"], strict=True):
        assert set(row["metrics"]) == set(logs), epoch
        for key, value in logs.items():
            assert abs(row["metrics"][key] - value) <= 1e-6, (epoch, key)
