"""Advice: warnings on runnable specs, each naming the field and the fix."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from checks.advice import advise
from checks.validation import check_spec
from core.settings import Settings
from models.spec import JobSpec
from tests.api.test_hostile_specs import called, functional, tensor
from tests.factories import digits_spec

IMBALANCED = {"x": [[float(i)] for i in range(40)], "y": [0] * 32 + [1] * 8}


def _advice(spec: dict[str, Any]) -> list[str]:
    """The warnings a submission of ``spec`` gets, once its checks pass."""
    job = JobSpec.model_validate(spec)
    return advise(job, check_spec(job, Settings()))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"fit.steps_per_epoch": 2, "fit.batch_size": 32}, "fit.steps_per_epoch=2"),
        ({"fit.batch_size": 2}, "fit.batch_size=2 is very small"),
        ({"data.train": IMBALANCED, "data.validation": ...}, "fit.class_weight is not set"),
        (
            {"data.validation": {"dataset": "builtin:digits", "split": "train"}},
            "data.validation overlaps data.train",
        ),
        ({"data.validation": {"dataset": "builtin:digits"}}, "data.validation overlaps"),
        (
            {"callbacks": [{"type": "ModelCheckpoint", "filepath": "m.keras"}]},
            "callbacks[0].filepath has no {epoch}",
        ),
        ({"data.validation": ..., "fit.validation_steps": 3}, "fit.validation_steps is set"),
    ],
)
def test_warning(overrides: dict[str, Any], expected: str) -> None:
    warnings = _advice(digits_spec(**overrides))
    assert any(expected in w for w in warnings), warnings


def test_a_sound_spec_gets_no_warning() -> None:
    assert _advice(digits_spec()) == []


def test_balanced_or_explicit_class_weight_silences_the_imbalance_warning() -> None:
    for weights in ("balanced", {"0": 1.0, "1": 4.0}):
        spec = digits_spec(
            **{"data.train": IMBALANCED, "data.validation": ..., "fit.class_weight": weights}
        )
        assert _advice(spec) == []


SOFTMAX_HEAD: dict[str, Any] = {
    "module": "keras",
    "class_name": "Sequential",
    "config": {
        "name": "s",
        "layers": [
            {
                "module": "keras.layers",
                "class_name": "InputLayer",
                "config": {"batch_shape": [None, 8, 8, 1], "name": "in"},
            },
            {"module": "keras.layers", "class_name": "Flatten", "config": {"name": "f"}},
            {
                "module": "keras.layers",
                "class_name": "Dense",
                "config": {"name": "d", "units": 10, "activation": "softmax"},
            },
            {
                "module": "keras.layers",
                "class_name": "Dropout",
                "config": {"name": "o", "rate": 0.1},
            },
        ],
    },
}
KERAS_MODEL = {"model.builtin": ..., "model.params": ..., "model.keras_config": SOFTMAX_HEAD}


def _softmax_head(units: int) -> dict[str, Any]:
    model = copy.deepcopy(KERAS_MODEL)
    model["model.keras_config"]["config"]["layers"][2]["config"]["units"] = units
    return model


@pytest.mark.parametrize("loss", ["mse", "mae", {"class_name": "Huber"}], ids=str)
def test_a_regression_loss_on_a_softmax_head_is_warned(loss: Any) -> None:
    # One unit: the check lets it through (Keras runs it), the softmax is always 1.
    spec = digits_spec(**{**_softmax_head(1), "compile.loss": loss, "compile.metrics": []})
    warnings = _advice(spec)
    assert len(warnings) == 1, warnings
    assert "is a regression loss, but the model ends in a softmax" in warnings[0]
    assert "use sparse_categorical_crossentropy (class indices)" in warnings[0]


def test_a_softmax_head_with_its_loss_or_a_regression_head_is_not_warned() -> None:
    assert _advice(digits_spec(**KERAS_MODEL)) == []
    linear = copy.deepcopy(SOFTMAX_HEAD)
    linear["config"]["layers"][2]["config"].update(units=1, activation="linear")
    spec = digits_spec(
        **{
            **KERAS_MODEL,
            "model.keras_config": linear,
            "compile.loss": "mse",
            "compile.metrics": [],
        }
    )
    assert _advice(spec) == []


VAL_MONITORS = [
    ({"type": "EarlyStopping", "patience": 3}, "patience=3 counts validations, not epochs"),
    (
        {"type": "ReduceLROnPlateau", "patience": 2, "cooldown": 1},
        "patience=2 and cooldown=1 count validations",
    ),
    (
        {"type": "ModelCheckpoint", "filepath": "best.keras", "save_best_only": True},
        "saves the model anyway, so 'best.keras' is not only written for a best epoch",
    ),
]


@pytest.mark.parametrize(("callback", "expected"), VAL_MONITORS, ids=lambda v: str(v)[:30])
@pytest.mark.parametrize("freq", [2, [1, 3]])
def test_a_val_monitor_that_validation_freq_leaves_out_is_warned(
    callback: dict[str, Any], expected: str, freq: Any
) -> None:
    spec = digits_spec(**{"fit.validation_freq": freq, "callbacks": [callback]})
    warnings = _advice(spec)
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(
        f"callbacks[0] ({callback['type']}) monitors 'val_loss', which Keras logs only on the "
        f"epochs that validate (fit.validation_freq={freq})"
    )
    assert expected in warnings[0]


def test_a_val_monitor_is_not_warned_when_every_epoch_validates() -> None:
    for freq in (1, [1, 2, 3]):
        callbacks = [cb for cb, _ in VAL_MONITORS]
        assert _advice(digits_spec(**{"fit.validation_freq": freq, "callbacks": callbacks})) == []
    # A training metric is logged on every epoch; a checkpoint of every epoch compares nothing.
    callbacks = [
        {"type": "EarlyStopping", "monitor": "loss"},
        {"type": "ModelCheckpoint", "filepath": "e{epoch:02d}.keras"},
    ]
    assert _advice(digits_spec(**{"fit.validation_freq": 2, "callbacks": callbacks})) == []


def test_steps_per_epoch_beyond_the_batches_is_warned() -> None:
    # 300 training samples make 10 batches of 32 (the last one of 12).
    warnings = _advice(digits_spec(**{"fit.steps_per_epoch": 25, "fit.batch_size": 32}))
    assert warnings == [
        "fit.steps_per_epoch=25 is more than the 10 batches of 32 that the 300 training "
        "samples make: Keras runs out of data after 10 steps, warns 'Your input ran out of "
        "data' and ends the epoch there, every epoch; set steps_per_epoch to at most 10 or "
        "leave it null"
    ]
    # As many steps as batches is one pass: nothing to say.
    assert _advice(digits_spec(**{"fit.steps_per_epoch": 10, "fit.batch_size": 32})) == []


def test_without_a_batch_size_keras_sizes_batches_from_the_steps() -> None:
    # In memory, fit(batch_size=None, steps_per_epoch=4) batches 300 samples by 75.
    assert _advice(digits_spec(**{"fit.steps_per_epoch": 4, "fit.batch_size": ...})) == []
    # 300 samples never make 400 batches, whatever their size.
    warnings = _advice(digits_spec(**{"fit.steps_per_epoch": 400, "fit.batch_size": ...}))
    assert len(warnings) == 1 and "more than the 300 batches of 1" in warnings[0], warnings


def test_steps_per_epoch_below_the_batches_says_what_keras_does() -> None:
    warnings = _advice(digits_spec(**{"fit.steps_per_epoch": 4, "fit.batch_size": 32}))
    assert warnings == [
        "fit.steps_per_epoch=4 x batch_size=32 = 128 < 300 training samples: an epoch is "
        "not a pass over the data (with arrays in memory Keras goes on with the same pass "
        "in the next epoch, and the last epoch of each pass ends early, after 2 steps, "
        "where the data runs out), so epoch metrics and callbacks see a part of it each "
        "time; raise steps_per_epoch or leave it null"
    ]
    assert "ends early" not in _advice(digits_spec(**{"fit.steps_per_epoch": 5}))[0]


def test_a_functional_models_output_layer_is_the_one_read() -> None:
    def model(activation: str) -> dict[str, Any]:
        flat = called("Flatten", "flat", tensor("in"))
        out = called("Dense", "out", tensor("flat"), units=1, activation=activation)
        softmax = called("Dense", "other", tensor("flat"), units=1, activation="softmax")
        return functional(flat, softmax, out, output="out")

    regression = {"compile.loss": "mse", "compile.metrics": []}
    warned = _advice(digits_spec(**model("softmax"), **regression))
    assert len(warned) == 1 and "the model ends in a softmax" in warned[0], warned
    # The last layer listed is not the output: a softmax elsewhere says nothing.
    assert _advice(digits_spec(**model("linear"), **regression)) == []
