"""The labels are what the loss reads: class indices for a sparse loss, one-hot rows for a
categorical one. Otherwise Keras fails on the first batch (tests/worker/test_loss_labels.py
shows it), so the spec is refused before it is queued, at ``compile.loss``."""

from __future__ import annotations

from typing import Any, NamedTuple

import pytest

from checks.validation import check_spec
from core.errors import SpecError
from core.settings import Settings
from models.spec import JobSpec
from tests.factories import digits_spec

X = [[float(i % 5), float(i % 3)] for i in range(12)]
CLASSES = [i % 3 for i in range(12)]
ONE_HOT = [[1.0 if c == k else 0.0 for k in range(3)] for c in CLASSES]
REAL = [0.5 * i for i in range(12)]
CATEGORICAL = ["categorical_crossentropy", {"class_name": "CategoricalCrossentropy"}]


def _inline(y: list[Any], loss: Any, **more: Any) -> dict[str, Any]:
    return digits_spec(
        **{"data.train": {"x": X, "y": y}, "data.validation": ..., "compile.loss": loss, **more}
    )


def _problems(spec: dict[str, Any]) -> list[dict[str, Any]]:
    with pytest.raises(SpecError) as exc:
        check_spec(JobSpec.model_validate(spec), Settings())
    return exc.value.errors


@pytest.mark.parametrize("loss", CATEGORICAL, ids=str)
def test_a_categorical_loss_on_class_indices_is_refused_at_the_loss(loss: Any) -> None:
    # The builtin digits labels are class indices 0..9, one per sample.
    errors = _problems(digits_spec(**{"compile.loss": loss}))
    assert [e["loc"] for e in errors] == [["compile", "loss"]]
    msg = errors[0]["msg"]
    assert "needs one-hot labels, but the training labels are class indices" in msg
    assert "(0 to 9)" in msg and "use sparse_categorical_crossentropy" in msg


def test_a_categorical_loss_on_one_number_per_sample_is_refused() -> None:
    errors = _problems(_inline(REAL, "categorical_crossentropy"))
    assert [e["loc"] for e in errors] == [["compile", "loss"]]
    assert "the training labels hold one number per sample" in errors[0]["msg"]
    assert "one column per class" in errors[0]["msg"]


def test_a_categorical_loss_on_one_hot_rows_passes() -> None:
    data = check_spec(
        JobSpec.model_validate(_inline(ONE_HOT, "categorical_crossentropy")), Settings()
    )
    assert data.train.target_dim == 3


def test_each_split_is_checked_and_named() -> None:
    spec = _inline(ONE_HOT, "categorical_crossentropy")
    spec["data"]["validation"] = {"x": X, "y": CLASSES}
    errors = _problems(spec)
    assert [e["loc"] for e in errors] == [["compile", "loss"]]
    assert "the validation labels are class indices" in errors[0]["msg"]


@pytest.mark.parametrize(
    "loss", ["sparse_categorical_crossentropy", {"class_name": "SparseCategoricalCrossentropy"}]
)
def test_a_sparse_loss_on_one_hot_rows_says_so(loss: Any) -> None:
    errors = _problems(_inline(ONE_HOT, loss))
    assert [e["loc"] for e in errors] == [["compile", "loss"]]
    msg = errors[0]["msg"]
    assert "the training labels have 3 numbers per sample, as one-hot rows do" in msg
    assert "expected categorical_crossentropy for one-hot labels" in msg


def test_a_sparse_loss_on_real_numbers_keeps_its_message() -> None:
    errors = _problems(_inline(REAL, "sparse_categorical_crossentropy"))
    assert "needs integer class labels from 0 to" in errors[0]["msg"]


@pytest.mark.parametrize("units", [[True], [16.0]])
def test_a_builtin_count_is_never_a_boolean_nor_a_float(units: list[Any]) -> None:
    errors = _problems(digits_spec(**{"model.params": {"hidden_units": units}}))
    assert [e["loc"] for e in errors] == [["model", "params", "hidden_units", 0]]
    assert "valid integer" in errors[0]["msg"]


class Fit(NamedTuple):
    """A one-Dense-layer model on inline labels, and whether Keras can train it."""

    loss: str
    units: int
    activation: str
    y: list[Any]
    runs: bool
    msg: str = ""  # a part of fitq's refusal, when Keras cannot train it


ZERO_ONE = [c % 2 for c in CLASSES]
# Each row: what Keras 3 does (tests/worker/test_keras_behind_checks.py runs them) and
# what fitq says before queueing (the test below).
OUTPUT_FITS = [
    Fit("sparse_categorical_crossentropy", 3, "softmax", CLASSES, True),
    Fit("sparse_categorical_crossentropy", 5, "softmax", CLASSES, True),
    Fit(
        "sparse_categorical_crossentropy",
        2,
        "softmax",
        CLASSES,
        False,
        "the training labels go up to 2, but the output has 2 units; "
        "sparse_categorical_crossentropy expects class ids from 0 to 1; Keras fails",
    ),
    Fit("categorical_crossentropy", 3, "softmax", ONE_HOT, True),
    Fit(
        "categorical_crossentropy",
        4,
        "softmax",
        ONE_HOT,
        False,
        "the training labels have 3 per sample; categorical_crossentropy needs as many "
        "labels as outputs, expected 4",
    ),
    Fit("binary_crossentropy", 1, "sigmoid", ZERO_ONE, True),
    Fit(
        "binary_crossentropy",
        3,
        "sigmoid",
        ZERO_ONE,
        False,
        "the training labels have 1 per sample; binary_crossentropy needs as many labels",
    ),
    Fit("mse", 1, "linear", REAL, True),
    Fit(
        "mse",
        3,
        "softmax",
        CLASSES,
        False,
        "the model gives 3 numbers per sample, but the training labels are one number per "
        "sample (a 1-D array); mse compares labels and outputs number by number, expected 3",
    ),
    Fit("mae", 3, "linear", [[v] for v in REAL], True),  # a label column broadcasts
    Fit("mae", 3, "linear", [[v, v, v] for v in REAL], True),
    Fit(
        "mae",
        3,
        "linear",
        [[v, v] for v in REAL],
        False,
        "the training labels have 2 numbers per sample; mae expected 3 (or 1)",
    ),
    Fit(
        "hinge",
        3,
        "linear",
        ZERO_ONE,
        False,
        "are one number per sample (a 1-D array); hinge compares",
    ),
]


def dense_model(units: int, activation: str) -> dict[str, Any]:
    """``model.to_json()`` of ``Sequential([Input((2,)), Dense(units, activation)])``."""
    layers = [
        {
            "module": "keras.layers",
            "class_name": "InputLayer",
            "config": {"batch_shape": [None, 2], "name": "in"},
        },
        {
            "module": "keras.layers",
            "class_name": "Dense",
            "config": {"name": "d", "units": units, "activation": activation},
        },
    ]
    return {
        "module": "keras",
        "class_name": "Sequential",
        "config": {"name": "s", "layers": layers},
    }


@pytest.mark.parametrize("case", OUTPUT_FITS, ids=lambda c: f"{c.loss}-{c.units}-{c.y[0]}")
def test_the_models_output_fits_the_labels_as_keras_needs(case: Fit) -> None:
    spec = _inline(
        case.y,
        case.loss,
        **{
            "model.builtin": ...,
            "model.params": ...,
            "model.keras_config": dense_model(case.units, case.activation),
            "compile.metrics": [],
        },
    )
    if case.runs:
        check_spec(JobSpec.model_validate(spec), Settings())
        return
    errors = _problems(spec)
    assert [e["loc"] for e in errors] == [["compile", "loss"]]
    assert case.msg in errors[0]["msg"], errors[0]["msg"]
    assert errors[0]["msg"].endswith("Keras fails on the first batch")
