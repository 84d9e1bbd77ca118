"""Advice: warnings on runnable specs, each naming the field and the fix."""

from __future__ import annotations

from typing import Any

import pytest

from checks.advice import advise
from checks.validation import check_spec
from core.settings import Settings
from models.spec import JobSpec
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
