"""Evaluate and predict runs through the runner: what they record equals Keras' own
evaluate() and predict() of the same model on the same data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

keras = pytest.importorskip("keras")
np = pytest.importorskip("numpy")

from models.runs import PREDICTIONS_FILE, EvaluateSpec, PredictSpec  # noqa: E402
from models.spec import JobSpec  # noqa: E402
from models.states import JobStatus, StopReason  # noqa: E402
from tests.factories import digits_spec  # noqa: E402
from tests.worker.plain_fit import digits  # noqa: E402
from worker.training.model_runs import use_model  # noqa: E402

TOLERANCE = 1e-6


def trained_model(path: Path, side: int = 8) -> Any:
    """A small digits classifier on ``side``x``side`` images, trained two epochs, saved."""
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input(shape=(side, side, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = digits("train", 200)
    start = (8 - side) // 2
    model.fit(x[:, start : start + side, start : start + side], y, epochs=2, verbose=0)
    model.save(path)
    return model


def test_evaluate_records_what_keras_evaluate_returns(tmp_path: Path) -> None:
    model = trained_model(tmp_path / "model.keras")
    run = EvaluateSpec.model_validate(
        {
            "data": {"dataset": "builtin:digits", "split": "test", "take": 100},
            "batch_size": 16,
            "queue": "q",
        }
    )
    outcome = use_model(
        run, JobSpec.model_validate(digits_spec()), tmp_path / "model.keras", tmp_path / "run"
    )
    x, y = digits("test", 100)
    expected = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    assert (outcome.status, outcome.stop_reason) == (JobStatus.SUCCEEDED, StopReason.COMPLETED)
    assert outcome.test_metrics is not None
    assert set(outcome.test_metrics) == set(expected) == {"loss", "accuracy"}
    for key, value in expected.items():
        assert abs(outcome.test_metrics[key] - float(value)) <= TOLERANCE, key
    log = (tmp_path / "run" / "train.log").read_text()
    assert "fitq: evaluate ended after 7 batches" in log  # 100 samples, 16 a batch


def test_predict_writes_what_keras_predict_returns_for_inline_inputs(tmp_path: Path) -> None:
    model = trained_model(tmp_path / "model.keras")
    x, _ = digits("test", 37)
    run = PredictSpec.model_validate({"data": {"x": x.tolist()}, "queue": "q"})
    outcome = use_model(
        run, JobSpec.model_validate(digits_spec()), tmp_path / "model.keras", tmp_path / "run"
    )
    assert outcome.status is JobStatus.SUCCEEDED and outcome.test_metrics is None
    written = np.load(tmp_path / "run" / PREDICTIONS_FILE, allow_pickle=False)
    expected = model.predict(x, verbose=0)
    assert written.shape == expected.shape == (37, 10)
    assert float(np.max(np.abs(written - expected))) <= TOLERANCE
    assert not list((tmp_path / "run").glob("*.partial"))
    # Keras' default batch_size, 32: two batches.
    assert "fitq: predict ended after 2 batches" in (tmp_path / "run" / "train.log").read_text()


def test_data_is_center_cropped_where_the_parent_cropped_its_training_batches(
    tmp_path: Path,
) -> None:
    model = trained_model(tmp_path / "model.keras", side=6)
    parent = JobSpec.model_validate(
        digits_spec(**{"data.augmentation": [{"layer": "RandomCrop", "height": 6, "width": 6}]})
    )
    run = PredictSpec.model_validate(
        {"data": {"dataset": "builtin:digits", "split": "test", "take": 20}, "queue": "q"}
    )
    use_model(run, parent, tmp_path / "model.keras", tmp_path / "run")
    x, _ = digits("test", 20)
    expected = model.predict(keras.layers.CenterCrop(6, 6)(x), verbose=0)
    written = np.load(tmp_path / "run" / PREDICTIONS_FILE, allow_pickle=False)
    assert float(np.max(np.abs(written - expected))) <= TOLERANCE


def test_a_model_file_with_a_lambda_layer_is_refused_by_safe_mode(tmp_path: Path) -> None:
    model = keras.Sequential(
        [keras.Input(shape=(8, 8, 1)), keras.layers.Flatten(), keras.layers.Lambda(lambda t: t * 2)]
    )
    model.save(tmp_path / "model.keras")
    run = PredictSpec.model_validate({"data": {"x": [[[[0.0]] * 8] * 8]}, "queue": "q"})
    with pytest.raises(ValueError, match="safe_mode"):
        use_model(
            run, JobSpec.model_validate(digits_spec()), tmp_path / "model.keras", tmp_path / "run"
        )
    assert not (tmp_path / "run" / PREDICTIONS_FILE).exists()
