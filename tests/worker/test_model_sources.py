"""Models from stored files, through the runner: an uploaded ``.keras`` model trained
further, and a warm start from another job's checkpoint, each equal to loading the
file with ``keras.saving.load_model()`` and fitting in a plain script."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

keras = pytest.importorskip("keras")
np = pytest.importorskip("numpy")
h5py = pytest.importorskip("h5py")

from core.settings import Settings  # noqa: E402
from models.spec import JobSpec  # noqa: E402
from storage.models import CONFIG, WEIGHTS, model_dir, store_keras  # noqa: E402
from tests.factories import digits_spec  # noqa: E402
from tests.worker.test_fit_semantics import plain  # noqa: E402
from tests.worker.test_reporting import ListSink  # noqa: E402
from worker.training.model_files import ModelFiles, check_weights_file  # noqa: E402
from worker.training.runner import train  # noqa: E402

TOLERANCE = 1e-6


def trained_model_file(path: Path) -> Path:
    """A compiled model, trained a little (so its weights are not an initializer's)."""
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(16, activation="relu", name="hidden"),
            keras.layers.Dense(10, activation="softmax", name="out"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    model.fit(rng.random((64, 8, 8, 1)), rng.integers(0, 10, 64), epochs=2, verbose=0)
    model.save(path)
    return path


def history(sink: ListSink) -> list[list[Any]]:
    return [[epoch, metrics] for epoch, metrics, _ in sink.epochs]


def assert_same(recorded: list[list[Any]], expected: list[list[Any]]) -> None:
    assert [e for e, _ in recorded] == [e for e, _ in expected]
    for (epoch, got), (_, want) in zip(recorded, expected, strict=True):
        assert set(got) == set(want), epoch
        diff = max(abs(got[k] - want[k]) for k in want)
        assert diff <= TOLERANCE, (epoch, got, want)


def test_an_uploaded_model_trained_further_equals_load_model_and_fit(tmp_path: Path) -> None:
    original = trained_model_file(tmp_path / "mine.keras")
    settings = Settings(data_dir=tmp_path / "data")
    model_id, *_ = store_keras(io.BytesIO(original.read_bytes()), settings)
    folder = model_dir(settings, model_id)
    spec = JobSpec.model_validate(digits_spec(model={"uploaded": model_id}))
    sink = ListSink()

    outcome = train(
        spec,
        tmp_path / "job",
        sink,
        model_files=ModelFiles(folder / CONFIG, folder / WEIGHTS, untrusted_weights=True),
    )

    assert outcome.status == "succeeded", outcome.error
    assert_same(history(sink), plain(f"keras:{original}", tmp_path / "plain")["epochs"])
    # The job records the architecture it trained, for warm starts from it.
    recorded = json.loads((tmp_path / "job" / "model.json").read_text())
    assert [layer["config"]["name"] for layer in recorded["config"]["layers"]][-2:] == [
        "hidden",
        "out",
    ]


def test_without_weights_an_upload_starts_from_its_initializers(tmp_path: Path) -> None:
    original = trained_model_file(tmp_path / "mine.keras")
    settings = Settings(data_dir=tmp_path / "data")
    model_id, *_ = store_keras(io.BytesIO(original.read_bytes()), settings)
    folder = model_dir(settings, model_id)
    runs = {}
    for weights in (True, False):
        spec = JobSpec.model_validate(
            digits_spec(model={"uploaded": model_id, "weights": weights}, **{"fit.epochs": 1})
        )
        sink = ListSink()
        files = ModelFiles(folder / CONFIG, folder / WEIGHTS if weights else None, True)
        train(spec, tmp_path / f"job-{weights}", sink, model_files=files)
        runs[weights] = sink.epochs[0][1]["loss"]
    assert runs[True] != pytest.approx(runs[False], abs=1e-3)


BEST_ONLY = {
    "type": "ModelCheckpoint",
    "filepath": "best-{epoch:02d}.keras",
    "monitor": "val_loss",
    "save_best_only": True,
}


def parent_job(
    tmp_path: Path, callbacks: list[dict[str, Any]] | None = None
) -> tuple[Path, list[tuple[int, str, bool, int]]]:
    """A finished built-in job with best-only ModelCheckpoints."""
    spec = JobSpec.model_validate(
        digits_spec(**{"fit.epochs": 4, "callbacks": callbacks or [BEST_ONLY]})
    )
    sink = ListSink()
    job_dir = tmp_path / "parent"
    outcome = train(spec, job_dir, sink)
    assert outcome.status == "succeeded", outcome.error
    return job_dir, sink.checkpoints


def test_a_warm_start_from_the_best_checkpoint_equals_loading_it_and_fitting(
    tmp_path: Path,
) -> None:
    job_dir, checkpoints = parent_job(tmp_path)
    best = [path for _, path, is_best, _ in checkpoints if is_best][-1]
    spec = JobSpec.model_validate(
        digits_spec(model={"from_job": "0" * 32, "checkpoint": 1}, **{"fit.initial_epoch": 0})
    )
    sink = ListSink()

    outcome = train(
        spec,
        tmp_path / "child",
        sink,
        model_files=ModelFiles(job_dir / "model.json", job_dir / best),
    )

    assert outcome.status == "succeeded", outcome.error
    assert_same(history(sink), plain(f"keras:{job_dir / best}", tmp_path / "plain")["epochs"])


def test_a_weights_only_checkpoint_warm_starts_as_the_full_one_of_the_same_epoch(
    tmp_path: Path,
) -> None:
    # A .weights.h5 checkpoint holds no architecture: the parent's recorded one is built.
    both = [
        {**BEST_ONLY, "filepath": "full-{epoch:02d}.keras"},
        {**BEST_ONLY, "filepath": "w-{epoch:02d}.weights.h5", "save_weights_only": True},
    ]
    job_dir, checkpoints = parent_job(tmp_path, both)
    newest = {
        suffix: [(epoch, p) for epoch, p, _, _ in checkpoints if p.endswith(suffix)][-1]
        for suffix in (".keras", ".weights.h5")
    }
    (epoch, full), (same_epoch, weights) = newest.values()
    assert epoch == same_epoch
    runs = []
    for path in (full, weights):
        spec = JobSpec.model_validate(digits_spec(model={"from_job": "0" * 32, "checkpoint": 1}))
        sink = ListSink()
        files = ModelFiles(job_dir / "model.json", job_dir / path)
        outcome = train(spec, tmp_path / Path(path).stem, sink, model_files=files)
        assert outcome.status == "succeeded", outcome.error
        runs.append(history(sink))
    assert runs[0] == runs[1]


def test_frozen_layers_keep_the_checkpoint_weights(tmp_path: Path) -> None:
    job_dir, checkpoints = parent_job(tmp_path)
    best = job_dir / [path for _, path, is_best, _ in checkpoints if is_best][-1]
    layers = json.loads((job_dir / "model.json").read_text())["config"]["layers"]
    hidden = next(layer["config"]["name"] for layer in layers if layer["class_name"] == "Dense")
    spec = JobSpec.model_validate(
        digits_spec(
            model={"from_job": "0" * 32, "checkpoint": 1, "freeze": [hidden]},
            callbacks=[{"type": "ModelCheckpoint", "filepath": "last.keras", "monitor": "loss"}],
        )
    )
    outcome = train(
        spec, tmp_path / "child", ListSink(), model_files=ModelFiles(job_dir / "model.json", best)
    )
    assert outcome.status == "succeeded", outcome.error

    before = keras.saving.load_model(best)
    after = keras.saving.load_model(tmp_path / "child" / "checkpoints" / "last.keras")
    changed = {
        layer.name: not all(
            np.array_equal(a, b)
            for a, b in zip(layer.get_weights(), trained.get_weights(), strict=True)
        )
        for layer, trained in zip(before.layers, after.layers, strict=True)
        if layer.weights
    }
    assert len(changed) == 2 and changed.pop(hidden) is False
    assert list(changed.values()) == [True]  # the output layer trained on
    # The child records the architecture as the parent had it: frozen only by its spec.
    recorded = json.loads((tmp_path / "child" / "model.json").read_text())
    assert all(layer["config"].get("trainable", True) for layer in recorded["config"]["layers"])


def test_an_uploaded_weights_file_that_unfolds_past_the_model_is_refused(tmp_path: Path) -> None:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    path = tmp_path / "bomb.weights.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "layers/dense/vars/0", data=np.zeros(5_000_000, np.float32), compression="gzip"
        )
    assert path.stat().st_size < 200_000  # small on disk, 20 MB once read
    with pytest.raises(ValueError, match="more than the"):
        check_weights_file(path, model)

    strings = tmp_path / "strings.weights.h5"
    with h5py.File(strings, "w") as f:
        f.create_dataset(
            "layers/dense/vars/0", data=np.array([b"x"], dtype=object), dtype=h5py.string_dtype()
        )
    with pytest.raises(ValueError, match="expected numbers"):
        check_weights_file(strings, model)

    fine = tmp_path / "fine.weights.h5"
    model.save_weights(fine)
    check_weights_file(fine, model)
