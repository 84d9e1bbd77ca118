"""Augmentation probed in the real input pipeline: training batches change, validation never."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

keras = pytest.importorskip("keras")
np = pytest.importorskip("numpy")

from models.spec import JobSpec  # noqa: E402
from tests.factories import digits_spec  # noqa: E402
from worker.training.augmentation import Augmenter  # noqa: E402
from worker.training.data import load_job_data  # noqa: E402
from worker.training.streaming import NpyRows, RowStream  # noqa: E402

AUG = [
    {"layer": "RandomFlip", "mode": "horizontal"},
    {"layer": "GaussianNoise", "stddev": 0.1},
    {"layer": "RandomCrop", "height": 6, "width": 6},
]


def inputs(**overrides: Any) -> tuple[dict[str, Any], Any]:
    spec = JobSpec.model_validate(
        digits_spec(**{"data.augmentation": AUG, "fit.shuffle": False, **overrides})
    )
    data = load_job_data(spec.data)
    return data.train.fit_inputs(spec, data.validation), data


def first_batch(fit_inputs: dict[str, Any]) -> np.ndarray:
    return np.asarray(next(iter(fit_inputs["x"]))[0])


def test_training_batches_are_augmented_and_validation_is_not() -> None:
    fit_inputs, data = inputs()
    batch = first_batch(fit_inputs)
    raw = data.train.x[:32]
    assert batch.shape == (32, 6, 6, 1)  # cropped
    center = raw[:, 1:7, 1:7, :]
    assert not np.allclose(batch, center, atol=0.05)  # noise and flips changed them
    x_val, y_val = fit_inputs["validation_data"]
    assert np.array_equal(x_val, data.validation.x[:, 1:7, 1:7, :])  # only center-cropped
    assert np.array_equal(y_val, data.validation.y)


def epoch_batches(fit_inputs: dict[str, Any], epochs: int = 2) -> list[np.ndarray]:
    """Every training batch of ``epochs`` passes, as fit() would iterate them."""
    ds = fit_inputs["x"]
    return [np.asarray(x) for _ in range(epochs) for x, _ in ds]


def test_augmentation_is_seeded_whatever_runs_in_parallel() -> None:
    # Batches are augmented by parallel map calls; a run must not depend on their order.
    runs = [epoch_batches(inputs()[0]) for _ in range(6)]
    other = epoch_batches(inputs(seed=8)[0])
    per_epoch = len(runs[0]) // 2
    assert per_epoch == 10  # 300 rows in batches of 32
    for run in runs[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(runs[0], run, strict=True))
    assert not any(np.array_equal(a, b) for a, b in zip(runs[0], other, strict=True))
    # Each epoch draws anew: the same rows (no shuffle) are augmented differently.
    first, second = runs[0][:per_epoch], runs[0][per_epoch:]
    assert not any(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_augmentation_of_rows_from_disk_is_seeded_with_parallel_loaders(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((96, 8, 8, 1), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    y = np.arange(96) % 10

    def batches(seed: int, workers: int = 2) -> list[np.ndarray]:
        stream = RowStream(
            NpyRows(tmp_path / "x.npy"),
            y,
            batch_size=16,
            shuffle=True,
            seed=seed,
            workers=workers,  # batches augmented in parallel
            augment=Augmenter(
                JobSpec.model_validate(digits_spec(**{"data.augmentation": AUG})).data.augmentation,
                seed,
            ),
        )
        return [np.asarray(b[0]) for b in stream.dataset(repeat=True).take(12)]

    a, b, c = batches(7), batches(7, workers=1), batches(8)
    assert a[0].shape == (16, 6, 6, 1) and len(a) == 12
    assert not any(np.array_equal(p, q) for p, q in zip(a[:6], a[6:], strict=True))  # epochs
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert not any(np.array_equal(p, q) for p, q in zip(a, c, strict=True))


def test_validation_split_holds_out_the_last_fraction_unaugmented() -> None:
    fit_inputs, data = inputs(**{"data.validation": ..., "fit.validation_split": 0.2})
    x_val, y_val = fit_inputs["validation_data"]
    assert np.array_equal(y_val, data.train.y[240:])
    assert np.array_equal(x_val, data.train.x[240:, 1:7, 1:7, :])


EVERY_LAYER = [
    {"layer": "RandomFlip", "mode": "horizontal_and_vertical"},
    {"layer": "RandomRotation", "factor": 0.2},
    {"layer": "RandomZoom", "height_factor": 0.2},
    {"layer": "RandomTranslation", "height_factor": 0.2, "width_factor": 0.2},
    {"layer": "RandomCrop", "height": 6, "width": 6},
    {"layer": "RandomContrast", "factor": 0.5},
    {"layer": "RandomBrightness", "factor": 0.3},
    {"layer": "GaussianNoise", "stddev": 0.1},
]


@pytest.mark.parametrize("dtype", ["float32", "float64", "uint8"])
@pytest.mark.parametrize("layer", EVERY_LAYER, ids=lambda spec: spec["layer"])
def test_each_layer_augments_as_its_keras_call_would_and_by_the_batch_seed(
    layer: dict[str, Any], dtype: str
) -> None:
    specs = JobSpec.model_validate(digits_spec(**{"data.augmentation": [layer]})).data.augmentation
    x = (np.random.default_rng(0).random((16, 8, 8, 1)) * 4).astype(dtype)
    aug = Augmenter(specs, seed=3)
    out = aug.numpy(x, 5)
    # The layer's own call(); some layers' call() refuses integer images, which fitq takes.
    keras_in = x.astype(np.float32) if dtype == "uint8" else x
    keras_out = np.asarray(aug.layers[0](keras_in, training=True))
    assert out.shape == keras_out.shape and out.dtype == keras_out.dtype == np.float32
    assert np.array_equal(out, aug.numpy(x, 5))  # the same batch number: the same draws
    assert not np.array_equal(out, aug.numpy(x, 6))  # another batch: other draws
    assert not np.array_equal(out, x[:, : out.shape[1], : out.shape[2]])  # it did something
