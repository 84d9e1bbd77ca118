"""Plain Keras scripts with learning-rate schedules, that fitq's recorded histories must equal.

As ``plain_fit.py``: seed, enable op determinism, build the model, compile, call
``model.fit()`` with numpy arrays; the schedules as a Keras user writes them. Run as
``python tests/worker/plain_schedules.py CASE``; prints one JSON object:
``{"epochs": [[epoch, logs], ...], "lr": [rate of each epoch's first step, ...]}``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from typing_extensions import override  # noqa: E402

from tests.worker.plain_fit import digits, mlp  # noqa: E402

schedules = keras.optimizers.schedules


def piecewise(epoch: int, lr: float) -> float:
    # What a user writes for LearningRateScheduler: a function of the epoch index.
    schedule = schedules.PiecewiseConstantDecay(boundaries=[1, 2], values=[0.01, 0.005, 0.001])
    return float(keras.ops.convert_to_numpy(schedule(epoch)))


class FirstStepRates(keras.callbacks.Callback):  # type: ignore[misc]
    """The rate the optimizer applies in each epoch's first step, read just before it."""

    def __init__(self) -> None:
        super().__init__()
        self.rates: list[float] = []

    @override
    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if batch == 0:
            self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


def optimizer_and_callbacks(case: str) -> tuple[Any, list[Any]]:
    if case == "exponential_decay":
        rate = schedules.ExponentialDecay(0.01, decay_steps=10, decay_rate=0.5)
        return keras.optimizers.Adam(learning_rate=rate), []
    if case == "cosine_warmup":
        rate = schedules.CosineDecay(
            0.001, decay_steps=20, alpha=0.1, warmup_target=0.01, warmup_steps=10
        )
        return keras.optimizers.SGD(learning_rate=rate, momentum=0.9), []
    if case == "lr_scheduler":
        return keras.optimizers.Adam(), [keras.callbacks.LearningRateScheduler(piecewise)]
    raise SystemExit(f"unknown case {case}")


def run(case: str) -> dict[str, Any]:
    keras.utils.set_random_seed(7)
    tf.config.experimental.enable_op_determinism()
    x, y = digits("train", 300)
    xv, yv = digits("validation", 100)
    rows: list[list[Any]] = []
    model = mlp(16)
    optimizer, callbacks = optimizer_and_callbacks(case)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, logs: rows.append([e + 1, {k: float(v) for k, v in logs.items()}])
    )
    first_step = FirstStepRates()
    model.fit(
        x,
        y,
        batch_size=32,
        epochs=4,
        verbose=0,
        validation_data=(xv, yv),
        callbacks=[*callbacks, record, first_step],
    )
    return {"epochs": rows, "lr": first_step.rates}


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1])))
