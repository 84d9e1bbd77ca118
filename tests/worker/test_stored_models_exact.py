"""Exactness against a plain Keras script (tests/worker/plain_stored.py, the same seed)
for models from stored files and for checkpoints to ``.h5``, through the runner:

- a warm start from a parent job's ``best`` or ``last`` checkpoint with frozen layers:
  ``keras.saving.load_model()``, ``layer.trainable = False``, compile, fit;
- an uploaded ``.keras`` model with ``weights: false``: the archive's ``config.json``
  built by ``keras.models.model_from_json()`` after ``keras.utils.set_random_seed()``;
- ModelCheckpoint writing whole models to ``.h5``, Keras' legacy HDF5 format.

Every epoch's every logged value agrees within 1e-6, the same checkpoint files are
written, and the trained models (and checkpoints) load with
``keras.saving.load_model()`` to weights that agree within 1e-6.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

keras = pytest.importorskip("keras")
np = pytest.importorskip("numpy")

from core.settings import Settings  # noqa: E402
from models.file_names import ARCHITECTURE_FILE, FINAL_MODEL_FILE  # noqa: E402
from models.spec import JobSpec  # noqa: E402
from storage.models import CONFIG, model_dir, store_keras  # noqa: E402
from tests.factories import digits_spec, plain_run  # noqa: E402
from tests.worker.test_model_sources import (  # noqa: E402
    TOLERANCE,
    assert_same,
    history,
    trained_model_file,
)
from tests.worker.test_reporting import ListSink  # noqa: E402
from worker.training.callbacks import CHECKPOINT_DIR  # noqa: E402
from worker.training.model_files import ModelFiles  # noqa: E402
from worker.training.outcome import Outcome  # noqa: E402
from worker.training.runner import train  # noqa: E402

PARENT_CALLBACKS = [
    {"type": "ModelCheckpoint", "filepath": "best-{epoch:02d}.keras", "save_best_only": True},
    {"type": "ModelCheckpoint", "filepath": "e{epoch:02d}.keras"},
]
# What the child job and the plain script checkpoint: every epoch, named by its val_loss.
EVERY_EPOCH = {"filepath": "c{epoch:02d}-{val_loss:.4f}.keras", "monitor": "val_loss"}


def plain(out: Path, *args: str, checkpoints: list[dict[str, Any]] | None = None) -> Any:
    options = ["--checkpoints", json.dumps(checkpoints)] if checkpoints else []
    return plain_run("plain_stored.py", str(out), *args, *options)


def checkpoint_files(job_dir: Path) -> list[str]:
    return sorted(p.name for p in (job_dir / CHECKPOINT_DIR).iterdir())


def weights(path: Path) -> dict[str, list[Any]]:
    """The weights of the model saved at ``path``, by layer, in the order of its layers."""
    model = keras.saving.load_model(path)
    return {f"{i}:{layer.name}": layer.get_weights() for i, layer in enumerate(model.layers)}


def assert_same_weights(got: Path, want: Path) -> None:
    """The two saved models hold the same weights, layer by layer (names aside: Keras
    numbers a layer's default name by how many it made before in the process)."""
    got_layers, want_layers = weights(got).values(), weights(want).values()
    assert [len(w) for w in got_layers] == [len(w) for w in want_layers]
    arrays = [
        (a, b)
        for got_w, want_w in zip(got_layers, want_layers, strict=True)
        for a, b in zip(got_w, want_w, strict=True)
    ]
    assert arrays
    for a, b in arrays:
        assert a.shape == b.shape
        assert float(np.max(np.abs(a - b))) <= TOLERANCE, (got.name, want.name)


def succeeded(outcome: Outcome) -> None:
    assert (outcome.status, outcome.stop_reason) == ("succeeded", "completed"), outcome.error


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A finished built-in job with checkpoints; its ``best`` and ``last`` as the API
    resolves them (the newest one marked best; the newest one)."""
    job_dir = tmp_path_factory.mktemp("parent")
    spec = JobSpec.model_validate(digits_spec(**{"fit.epochs": 4, "callbacks": PARENT_CALLBACKS}))
    sink = ListSink()
    succeeded(train(spec, job_dir, sink))
    best = [path for _, path, is_best, _ in sink.checkpoints if is_best][-1]
    return job_dir, {"best": best, "last": sink.checkpoints[-1][1]}


@pytest.mark.parametrize("which", ["best", "last"])
def test_a_warm_start_with_frozen_layers_trains_as_in_a_plain_script(
    which: str, parent: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    job_dir, resolved = parent
    checkpoint = job_dir / resolved[which]
    layers = json.loads((job_dir / ARCHITECTURE_FILE).read_text())["config"]["layers"]
    hidden = next(layer["config"]["name"] for layer in layers if layer["class_name"] == "Dense")
    spec = JobSpec.model_validate(
        digits_spec(
            model={"from_job": "0" * 32, "checkpoint": 1, "freeze": [hidden]},
            callbacks=[{"type": "ModelCheckpoint", **EVERY_EPOCH}],
        )
    )
    sink = ListSink()
    files = ModelFiles(job_dir / ARCHITECTURE_FILE, checkpoint)
    succeeded(train(spec, tmp_path / "child", sink, model_files=files))

    expected = plain(
        tmp_path / "plain", "--load", str(checkpoint), "--freeze", hidden, checkpoints=[EVERY_EPOCH]
    )
    assert_same(history(sink), expected["epochs"])
    child = tmp_path / "child"
    assert checkpoint_files(child) == expected["files"]
    assert len(expected["files"]) == 3
    for name in expected["files"]:
        assert_same_weights(child / CHECKPOINT_DIR / name, tmp_path / "plain/checkpoints" / name)
    assert_same_weights(child / FINAL_MODEL_FILE, tmp_path / "plain/final.keras")

    # The frozen layer holds the checkpoint's weights exactly; the output layer trained on.
    before = keras.saving.load_model(checkpoint)
    after = keras.saving.load_model(child / FINAL_MODEL_FILE)
    dense = [i for i, layer in enumerate(before.layers) if layer.weights]
    assert [before.layers[i].name for i in dense][0] == hidden and len(dense) == 2
    unchanged = [
        all(
            np.array_equal(a, b)
            for a, b in zip(
                before.layers[i].get_weights(), after.layers[i].get_weights(), strict=True
            )
        )
        for i in dense
    ]
    assert unchanged == [True, False]


def test_an_upload_without_weights_trains_as_model_from_json_in_a_plain_script(
    tmp_path: Path,
) -> None:
    original = trained_model_file(tmp_path / "mine.keras")
    settings = Settings(data_dir=tmp_path / "data")
    model_id, *_ = store_keras(io.BytesIO(original.read_bytes()), settings)
    spec = JobSpec.model_validate(
        digits_spec(
            model={"uploaded": model_id, "weights": False},
            callbacks=[{"type": "ModelCheckpoint", **EVERY_EPOCH}],
        )
    )
    sink = ListSink()
    files = ModelFiles(model_dir(settings, model_id) / CONFIG, None, untrusted_weights=True)
    succeeded(train(spec, tmp_path / "job", sink, model_files=files))

    expected = plain(tmp_path / "plain", "--architecture", str(original), checkpoints=[EVERY_EPOCH])
    assert_same(history(sink), expected["epochs"])
    assert checkpoint_files(tmp_path / "job") == expected["files"]
    assert_same_weights(tmp_path / "job" / FINAL_MODEL_FILE, tmp_path / "plain/final.keras")


H5_CHECKPOINTS: list[dict[str, Any]] = [
    {"filepath": "e{epoch:02d}-{val_loss:.4f}.h5", "monitor": "val_loss"},
    {"filepath": "best.h5", "monitor": "val_accuracy", "save_best_only": True},
]


def test_checkpoints_to_h5_are_the_plain_scripts(tmp_path: Path) -> None:
    callbacks = [{"type": "ModelCheckpoint", **cb} for cb in H5_CHECKPOINTS]
    spec = JobSpec.model_validate(digits_spec(callbacks=callbacks))
    sink = ListSink()
    succeeded(train(spec, tmp_path / "job", sink))

    expected = plain(tmp_path / "plain", checkpoints=H5_CHECKPOINTS)
    assert_same(history(sink), expected["epochs"])
    names = checkpoint_files(tmp_path / "job")
    assert names == expected["files"]
    assert [n for n in names if n != "best.h5"] == [
        f"e{epoch:02d}-{logs['val_loss']:.4f}.h5" for epoch, logs in expected["epochs"]
    ]
    # Each file written was recorded, as a whole model that loads to the script's weights.
    assert {Path(path).name for _, path, _, _ in sink.checkpoints} == set(names)
    for name in names:
        assert_same_weights(
            tmp_path / "job" / CHECKPOINT_DIR / name, tmp_path / "plain/checkpoints" / name
        )
    assert_same_weights(tmp_path / "job" / FINAL_MODEL_FILE, tmp_path / "plain/final.keras")
