"""Learning-rate schedules against the allowlist: as an optimizer's learning_rate and as
LearningRateScheduler's schedule, every Keras schedule with its own arguments; anything
else refused at the field, with what was expected."""

from __future__ import annotations

from typing import Any

import pytest

from checks.validation import check_spec
from core.errors import SpecError
from core.settings import Settings
from models.spec import JobSpec
from tests.factories import digits_spec

LR = ["compile", "optimizer", "config", "learning_rate"]

# One config of each schedule, with every argument Keras' signature has.
SCHEDULES: dict[str, dict[str, Any]] = {
    "ExponentialDecay": {
        "initial_learning_rate": 0.01,
        "decay_steps": 100,
        "decay_rate": 0.96,
        "staircase": True,
        "name": "ExponentialDecay",
    },
    "PiecewiseConstantDecay": {
        "boundaries": [100, 200],
        "values": [0.01, 0.005, 0.001],
        "name": "PiecewiseConstant",
    },
    "PolynomialDecay": {
        "initial_learning_rate": 0.1,
        "decay_steps": 1000,
        "end_learning_rate": 0.0001,
        "power": 0.5,
        "cycle": True,
        "name": "PolynomialDecay",
    },
    "InverseTimeDecay": {
        "initial_learning_rate": 0.1,
        "decay_steps": 1.0,  # as Keras' own example writes it
        "decay_rate": 0.5,
        "staircase": False,
        "name": "InverseTimeDecay",
    },
    "CosineDecay": {
        "initial_learning_rate": 0.0,
        "decay_steps": 1000,
        "alpha": 0.1,
        "name": "CosineDecay",
        "warmup_target": 0.1,
        "warmup_steps": 100,
    },
    "CosineDecayRestarts": {
        "initial_learning_rate": 0.1,
        "first_decay_steps": 100,
        "t_mul": 2.0,
        "m_mul": 1.0,
        "alpha": 0.0,
        "name": "SGDRDecay",
    },
}


def with_schedule(schedule: Any, **overrides: Any) -> dict[str, Any]:
    optimizer = {"class_name": "Adam", "config": {"learning_rate": schedule}}
    return digits_spec(**{"compile.optimizer": optimizer, **overrides})


def with_scheduler(schedule: Any, **overrides: Any) -> dict[str, Any]:
    callback = {"type": "LearningRateScheduler", "schedule": schedule, **overrides}
    return digits_spec(callbacks=[callback])


def errors(spec: dict[str, Any]) -> list[dict[str, Any]]:
    with pytest.raises(SpecError) as exc:
        check_spec(JobSpec.model_validate(spec), Settings())
    return exc.value.errors


def has(found: list[dict[str, Any]], loc: list[Any], *parts: str) -> bool:
    return any(e["loc"] == loc and all(p in e["msg"] for p in parts) for e in found)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_every_keras_schedule_is_accepted_as_learning_rate_and_as_scheduler(name: str) -> None:
    schedule = {"class_name": name, "config": SCHEDULES[name]}
    check_spec(JobSpec.model_validate(with_schedule(schedule)), Settings())
    check_spec(JobSpec.model_validate(with_scheduler(schedule, verbose=1)), Settings())


def test_a_schedule_as_keras_serializes_it_is_accepted() -> None:
    # keras.optimizers.schedules.serialize(ExponentialDecay(0.01, 10, 0.9)), as JSON.
    serialized = {
        "module": "keras.optimizers.schedules",
        "class_name": "ExponentialDecay",
        "config": SCHEDULES["ExponentialDecay"],
        "registered_name": None,
    }
    check_spec(JobSpec.model_validate(with_schedule(serialized)), Settings())


@pytest.mark.parametrize(
    ("schedule", "loc", "parts"),
    [
        (
            {"class_name": "Lambda", "config": {}},
            ["class_name"],
            ("'Lambda'", "ExponentialDecay", "keras.optimizers.schedules"),
        ),
        (
            {
                "class_name": "ExponentialDecay",
                "config": {"initial_learning_rate": 0.1, "decay_rate": 0.5},
            },
            ["config", "decay_steps"],
            ("needs decay_steps", "a finite number > 0"),
        ),
        (
            {
                "class_name": "ExponentialDecay",
                "config": {**SCHEDULES["ExponentialDecay"], "decay_steps": 0},
            },
            ["config", "decay_steps"],
            ("decay_steps=0", "> 0"),
        ),
        (
            {
                "class_name": "CosineDecayRestarts",
                "config": {**SCHEDULES["CosineDecayRestarts"], "first_decay_steps": -5},
            },
            ["config", "first_decay_steps"],
            ("first_decay_steps=-5", "> 0"),
        ),
        (
            {
                "class_name": "PolynomialDecay",
                "config": {**SCHEDULES["PolynomialDecay"], "power": True},
            },
            ["config", "power"],
            ("power=True", "a finite number"),
        ),
        (
            {
                "class_name": "InverseTimeDecay",
                "config": {**SCHEDULES["InverseTimeDecay"], "decay_rate": "0.5"},
            },
            ["config", "decay_rate"],
            ("decay_rate='0.5'", "a finite number"),
        ),
        (
            {"class_name": "CosineDecay", "config": {**SCHEDULES["CosineDecay"], "beta": 1}},
            ["config", "beta"],
            ("unknown CosineDecay argument 'beta'", "warmup_target"),
        ),
        (
            {
                "class_name": "CosineDecay",
                "config": {**SCHEDULES["CosineDecay"], "warmup_steps": 2.5},
            },
            ["config", "warmup_steps"],
            ("warmup_steps=2.5", "an integer from 0"),
        ),
        (
            {
                "class_name": "PiecewiseConstantDecay",
                "config": {"boundaries": [100, 200], "values": [0.1, 0.01]},
            },
            ["config", "values"],
            ("2 values for 2 boundaries", "one more value than boundaries (3)"),
        ),
        (
            {
                "class_name": "PiecewiseConstantDecay",
                "config": {"boundaries": [200, 100], "values": [0.1, 0.01, 0.001]},
            },
            ["config", "boundaries"],
            ("boundaries=[200, 100]", "strictly increasing integers"),
        ),
        (
            {
                "class_name": "PiecewiseConstantDecay",
                "config": {"boundaries": [], "values": [0.1]},
            },
            ["config", "boundaries"],
            ("boundaries=[]", "a non-empty list"),
        ),
        (
            {
                "class_name": "ExponentialDecay",
                "config": {**SCHEDULES["ExponentialDecay"], "name": "a/b"},
            },
            ["config", "name"],
            ("name='a/b'", "letters, digits and _.-"),
        ),
        (
            {**{"class_name": "ExponentialDecay", "config": SCHEDULES["ExponentialDecay"]}, "x": 1},
            ["x"],
            ("Extra inputs",),
        ),
        (
            {
                "module": "os",
                "class_name": "ExponentialDecay",
                "config": SCHEDULES["ExponentialDecay"],
            },
            ["module"],
            ("keras.optimizers.schedules",),
        ),
        (
            {
                "class_name": "ExponentialDecay",
                "config": SCHEDULES["ExponentialDecay"],
                "registered_name": "my>Decay",
            },
            ["registered_name"],
            ("None",),
        ),
    ],
)
def test_a_bad_schedule_is_refused_at_its_field(
    schedule: dict[str, Any], loc: list[Any], parts: tuple[str, ...]
) -> None:
    # Checked where the optimizer holds it (by checks.compile_args) ...
    found = errors(with_schedule(schedule))
    assert has(found, [*LR, *loc], *parts), found
    assert len(found) == 1, found
    # ... and where LearningRateScheduler holds it (the spec's schema first, for the
    # keys around class_name and config).
    if loc[0] in ("x", "module", "registered_name"):
        return
    found = errors(with_scheduler(schedule))
    assert has(found, ["callbacks", 0, "schedule", *loc], *parts), found


def test_a_learning_rate_that_is_neither_number_nor_schedule_is_refused() -> None:
    found = errors(with_schedule("ExponentialDecay"))
    assert has(found, LR, "received learning_rate='ExponentialDecay'", "a finite number"), found


@pytest.mark.parametrize(
    "callback",
    [
        {"type": "ReduceLROnPlateau", "monitor": "val_loss"},
        {
            "type": "LearningRateScheduler",
            "schedule": {"class_name": "ExponentialDecay", "config": SCHEDULES["ExponentialDecay"]},
        },
    ],
)
def test_a_callback_that_sets_the_rate_is_refused_over_an_optimizer_schedule(
    callback: dict[str, Any],
) -> None:
    # Keras raises a TypeError when such a callback sets the rate of an optimizer
    # that was given a schedule: refused before it is queued, not failed at run time.
    schedule = {"class_name": "CosineDecay", "config": SCHEDULES["CosineDecay"]}
    found = errors(with_schedule(schedule, callbacks=[callback]))
    assert has(
        found, ["callbacks", 0, "type"], callback["type"], "'CosineDecay'", "expected a number"
    ), found


def test_learning_rate_scheduler_beside_reduce_lr_on_plateau_is_accepted() -> None:
    # Both set a plain rate (the scheduler at each epoch's begin), as Keras allows.
    scheduler = {
        "type": "LearningRateScheduler",
        "schedule": {"class_name": "ExponentialDecay", "config": SCHEDULES["ExponentialDecay"]},
    }
    spec = digits_spec(callbacks=[scheduler, {"type": "ReduceLROnPlateau", "patience": 1}])
    check_spec(JobSpec.model_validate(spec), Settings())


@pytest.mark.parametrize("verbose", [True, -1, "1", 1.0])
def test_scheduler_verbose_is_a_count(verbose: Any) -> None:
    from pydantic import ValidationError

    schedule = {"class_name": "ExponentialDecay", "config": SCHEDULES["ExponentialDecay"]}
    with pytest.raises(ValidationError) as exc:
        JobSpec.model_validate(with_scheduler(schedule, verbose=verbose))
    locs = [e["loc"][:4] for e in exc.value.errors()]
    assert ("callbacks", 0, "LearningRateScheduler", "verbose") in locs, locs
