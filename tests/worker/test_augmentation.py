"""Augmentation probed in the real input pipeline: training batches change, validation never."""

from __future__ import annotations

from typing import Any

import pytest

keras = pytest.importorskip("keras")
np = pytest.importorskip("numpy")

from models.spec import JobSpec  # noqa: E402
from tests.factories import digits_spec  # noqa: E402
from worker.training.data import load_job_data  # noqa: E402
from worker.training.runner import _fit_inputs  # noqa: E402

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
    return _fit_inputs(data, spec), data


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


def test_augmentation_is_seeded() -> None:
    a, _ = inputs()
    b, _ = inputs()
    c, _ = inputs(seed=8)
    assert np.array_equal(first_batch(a), first_batch(b))
    assert not np.array_equal(first_batch(a), first_batch(c))


def test_validation_split_holds_out_the_last_fraction_unaugmented() -> None:
    fit_inputs, data = inputs(**{"data.validation": ..., "fit.validation_split": 0.2})
    x_val, y_val = fit_inputs["validation_data"]
    assert np.array_equal(y_val, data.train.y[240:])
    assert np.array_equal(x_val, data.train.x[240:, 1:7, 1:7, :])
