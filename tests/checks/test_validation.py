"""check_spec: errors against the catalogue, the data and the limits; what it read of the data."""

from __future__ import annotations

import pytest

from checks.advice import advise
from checks.validation import check_spec
from core.errors import SpecError
from core.settings import Settings
from models.spec import JobSpec
from tests.factories import digits_spec


def test_a_runnable_spec_gives_what_its_data_is() -> None:
    spec = JobSpec.model_validate(
        digits_spec(**{"data.test": {"dataset": "builtin:digits", "split": "test"}})
    )
    data = check_spec(spec, Settings())
    assert (data.train.n_samples, data.train.feature_shape) == (300, (8, 8, 1))
    assert data.train.n_classes == 10
    assert data.validation is not None and data.validation.n_samples == 100
    assert data.test is not None and data.test.feature_shape == (8, 8, 1)


def test_uploaded_data_is_read_through_the_lookup() -> None:
    part = {"n_samples": 40, "x_shape": [3], "y_shape": [], "n_classes": 2, "class_counts": [35, 5]}
    spec = JobSpec.model_validate(
        digits_spec(**{"data.train": {"dataset": "abc"}, "data.validation": ...})
    )
    data = check_spec(spec, Settings(), {"abc": {"train": part}}.get)
    assert (data.train.n_samples, data.train.class_counts) == (40, (35, 5))
    assert any("imbalanced (35 samples" in w for w in advise(spec, data))


def test_errors_are_all_listed_and_carry_no_advice() -> None:
    spec = JobSpec.model_validate(
        digits_spec(
            **{
                "compile.loss": "nope",
                "fit.epochs": 10**6,
                "fit.batch_size": 2,
                "data.test": {"dataset": "builtin:x"},
            }
        )
    )
    with pytest.raises(SpecError) as exc:
        check_spec(spec, Settings())
    locs = [e["loc"] for e in exc.value.errors]
    assert ["compile", "loss"] in locs and ["fit", "epochs"] in locs
    assert ["data", "test", "dataset"] in locs
    assert not any("very small" in e["msg"] for e in exc.value.errors)
