"""The job spec refuses, on its own, what the spec alone shows to be wrong.

These are pydantic's errors of ``JobSpec.model_validate``, each at its field's path,
before any check that needs the catalogue, the data or the settings runs.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from models.spec import JobSpec
from tests.factories import digits_spec

NO_VAL = {"data.validation": ...}


def _ckpt(filepath: str, **more: Any) -> dict[str, Any]:
    return {"callbacks": [{"type": "ModelCheckpoint", "filepath": filepath, **more}]}


def _errors(**overrides: Any) -> list[tuple[tuple[str | int, ...], str, str]]:
    with pytest.raises(ValidationError) as exc:
        JobSpec.model_validate(digits_spec(**overrides))
    return [(e["loc"], e["msg"], e["type"]) for e in exc.value.errors()]


@pytest.mark.parametrize(
    ("overrides", "loc", "msg"),
    [
        ({"fit.initial_epoch": 3}, ("fit", "initial_epoch"), "expected initial_epoch < epochs"),
        ({"fit.validation_freq": 4}, ("fit", "validation_freq"), "beyond epochs=3"),
        ({"fit.validation_freq": []}, ("fit", "validation_freq"), "non-empty list"),
        ({"fit.validation_freq": [2, 9]}, ("fit", "validation_freq", 1), "expected 1..3"),
        ({"fit.validation_split": 0.2}, ("fit", "validation_split"), "not both"),
        (
            {"resources.gpus": 4, "fit.batch_size": 2},
            ("fit", "batch_size"),
            "expected at least 4",
        ),
        (
            {"resources.gpus": 40, "fit.batch_size": ...},
            ("fit", "batch_size"),
            "received batch_size=32",
        ),
        (_ckpt("../m.keras"), ("callbacks", 0, "filepath"), "contains ['/']"),
        (_ckpt(".m.keras"), ("callbacks", 0, "filepath"), "no leading '.'"),
        (_ckpt("m{epoch!r}.keras"), ("callbacks", 0, "filepath"), "not a plain name"),
        (_ckpt("m{epoch:>40}.keras"), ("callbacks", 0, "filepath"), "small numeric format"),
        (_ckpt("m.hdf5"), ("callbacks", 0, "filepath"), "ending in .keras or .h5"),
        (
            _ckpt("m{epoch}-{loss}.keras", save_freq=10),
            ("callbacks", 0, "filepath"),
            "only {epoch} is filled in",
        ),
        (
            {**_ckpt("m{val_loss}.keras"), "fit.validation_freq": 2},
            ("callbacks", 0, "filepath"),
            "val_* placeholders are only filled on epochs that validate",
        ),
        (
            # Keras formats the name before it looks at save_best_only, and fails.
            {**_ckpt("e{val_loss:.3f}.keras", save_best_only=True), "fit.validation_freq": 2},
            ("callbacks", 0, "filepath"),
            "it fails on the first epoch without validation",
        ),
        (
            {"callbacks": [{"type": "CSVLogger", "filename": "log{epoch}.csv"}]},
            ("callbacks", 0, "filename"),
            "placeholder {epoch} names nothing Keras logs",
        ),
        (
            {"callbacks": [{"type": "CSVLogger", "filename": "log.h5"}]},
            ("callbacks", 0, "filename"),
            "expected a CSV file name",
        ),
        (
            {"callbacks": [{"type": "TensorBoard"}, {"type": "CSVLogger"}, {"type": "CSVLogger"}]},
            ("callbacks", 2),
            "CSVLogger appears more than once",
        ),
    ],
)
def test_refused_at_its_field(overrides: dict[str, Any], loc: tuple[Any, ...], msg: str) -> None:
    errors = _errors(**overrides)
    assert any(e[0] == loc and msg in e[1] and e[2] == "value_error" for e in errors), errors


def test_every_problem_of_the_fit_and_the_callbacks_is_listed_at_once() -> None:
    errors = _errors(
        **{
            "fit.initial_epoch": 5,
            "fit.validation_freq": [1, 4, 6],
            "callbacks": [
                {"type": "ModelCheckpoint", "filepath": "..m.hdf5"},
                {"type": "TensorBoard"},
                {"type": "TensorBoard"},
            ],
        }
    )
    locs = [e[0] for e in errors]
    assert locs.count(("fit", "initial_epoch")) == 1
    assert ("fit", "validation_freq", 1) in locs and ("fit", "validation_freq", 2) in locs
    assert ("fit", "validation_freq", 0) not in locs
    assert locs.count(("callbacks", 0, "filepath")) == 2  # the '..' and the suffix
    assert ("callbacks", 2) in locs and ("callbacks", 1) not in locs


def test_a_file_name_that_cannot_be_read_gets_that_one_problem() -> None:
    errors = _errors(**_ckpt("/{a.b}.h5", save_freq=3))
    assert [e[1] for e in errors] == [
        "received '/{a.b}.h5': contains ['/']; expected letters, digits, '_', '-', '.', '='"
    ]


@pytest.mark.parametrize(
    "overrides",
    [
        {"fit.initial_epoch": 2, "fit.validation_freq": [1, 3]},
        {"fit.validation_freq": 3},
        {"fit.validation_split": 0.2, **NO_VAL},
        {"resources.gpus": 4, "fit.batch_size": 4},
        _ckpt("e{epoch:02d}-{loss:.3f}.keras"),
        _ckpt("w{epoch}.weights.h5", save_weights_only=True, save_freq=5),
        # Keras writes a whole model to .h5 too (legacy HDF5, with a warning).
        _ckpt("e{epoch:02d}.h5"),
        {"callbacks": [{"type": "CSVLogger", "filename": "a=1_b-2.csv"}, {"type": "TensorBoard"}]},
    ],
)
def test_sound_specs_pass(overrides: dict[str, Any]) -> None:
    JobSpec.model_validate(digits_spec(**overrides))


CALLBACKS_WITH_VERBOSE = [
    {"type": "EarlyStopping"},
    {"type": "ModelCheckpoint", "filepath": "m.keras"},
    {"type": "ReduceLROnPlateau"},
]


@pytest.mark.parametrize("callback", CALLBACKS_WITH_VERBOSE, ids=lambda cb: cb["type"])
def test_a_callbacks_verbose_is_any_count_as_keras_takes_it(callback: dict[str, Any]) -> None:
    # Keras' callbacks print when verbose > 0: verbose=2 is accepted, and acts as 1.
    for verbose in (0, 1, 2):
        spec = JobSpec.model_validate(digits_spec(callbacks=[{**callback, "verbose": verbose}]))
        assert spec.callbacks[0].model_dump()["verbose"] == verbose


@pytest.mark.parametrize("callback", CALLBACKS_WITH_VERBOSE, ids=lambda cb: cb["type"])
@pytest.mark.parametrize("verbose", [True, False, 1.0, -1, "1"])
def test_a_callbacks_verbose_is_never_a_boolean(callback: dict[str, Any], verbose: Any) -> None:
    errors = _errors(callbacks=[{**callback, "verbose": verbose}])
    assert [e[0] for e in errors] == [("callbacks", 0, callback["type"], "verbose")]
    assert f"received verbose={verbose!r}; expected a count" in errors[0][1]
    assert "not true or false" in errors[0][1]


def test_a_fit_verbose_is_never_a_boolean() -> None:
    for verbose in (True, False):
        errors = _errors(**{"fit.verbose": verbose})
        assert [e[0] for e in errors] == [("fit", "verbose")]
