"""Learning-rate schedules and the optimizer that trains with one.

A spec names a schedule as ``keras.optimizers.schedules.serialize`` writes it; the
checks (``checks.compile_args.check_schedule``) have passed its class and arguments.
The optimizer is built as Keras' ``Optimizer.from_config`` builds one whose
``learning_rate`` is a serialized schedule: the schedule deserialized first, then
the optimizer's class called with it.
"""

from __future__ import annotations

from typing import Any

import keras

from checks.catalog import LR_SCHEDULE_RATES
from models.spec import ObjectSpec, ScheduleSpec


def build_schedule(spec: ScheduleSpec) -> keras.optimizers.schedules.LearningRateSchedule:
    """The Keras schedule object ``spec`` names.

    Rates are floats, as Keras' signatures document them: JSON does not tell ``1``
    from ``1.0``, and a Python int would make the schedule compute in integers.
    """
    config = dict(spec.config)
    for key in LR_SCHEDULE_RATES[spec.class_name] & set(config):
        value = config[key]
        config[key] = [float(v) for v in value] if isinstance(value, list) else _rate(value)
    schedule: keras.optimizers.schedules.LearningRateSchedule = (
        keras.optimizers.schedules.deserialize({"class_name": spec.class_name, "config": config})
    )
    return schedule


def build_optimizer(value: str | ObjectSpec) -> str | keras.optimizers.Optimizer:
    """``compile()``'s optimizer: a name as it is, or the object its config describes.

    A ``learning_rate`` that is a schedule becomes the schedule object; one that is
    a whole number becomes a float (Keras refuses an int learning rate).
    """
    if isinstance(value, str):
        return value
    config = dict(value.config)
    rate = config.get("learning_rate")
    if isinstance(rate, dict):
        config["learning_rate"] = build_schedule(ScheduleSpec.model_validate(rate))
    elif rate is not None:
        config["learning_rate"] = _rate(rate)
    optimizer: keras.optimizers.Optimizer = keras.optimizers.deserialize(
        {"class_name": value.class_name, "config": config}
    )
    return optimizer


def _rate(value: Any) -> Any:
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


class EpochSchedule:
    """LearningRateScheduler's ``schedule`` function: a schedule object at the epoch index.

    Keras calls it with the epoch index (0-based) and the current rate, and sets the
    optimizer's rate to what it returns; the current rate is not used.
    """

    def __init__(self, schedule: keras.optimizers.schedules.LearningRateSchedule) -> None:
        self.schedule = schedule

    def __call__(self, epoch: int, _lr: float) -> float:
        return float(keras.ops.convert_to_numpy(self.schedule(epoch)))
