"""Plain Keras scripts for models with several inputs or outputs, and sample weights.

Each case is what a user would write by hand: seed, enable op determinism, build the
Functional model, compile with losses and metrics by output name, call
``model.fit()`` with numpy arrays by input and output name. It imports nothing of
fitq. The same arrays and model config make the job specs the tests submit
(``spec()``). Run as ``python tests/worker/plain_multi_io.py CASE``; prints one JSON
object: ``{"epochs": [[epoch, logs], ...], "test": {...}}``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

SEED = 11
N, N_VAL = 96, 32


def arrays(n: int, offset: int) -> dict[str, np.ndarray]:
    """Two inputs (a: 3 numbers, b: 2), a class (0..2) and a number to predict, weights."""
    rng = np.random.default_rng(offset)
    a = rng.normal(size=(n, 3)).round(3)
    b = rng.normal(size=(n, 2)).round(3)
    cls = (a[:, 0] + b[:, 1] > 0).astype(np.int64) + (a[:, 1] > 0.5).astype(np.int64)
    reg = (a[:, 2] * 0.5 - b[:, 0]).round(3)[:, None]
    weight = rng.uniform(0.2, 2.0, size=n).round(3)
    return {"a": a, "b": b, "cls": cls, "reg": reg, "w": weight, "w2": weight[::-1].copy()}


def two_inputs() -> keras.Model:
    a = keras.Input(shape=(3,), name="a")
    b = keras.Input(shape=(2,), name="b")
    h = keras.layers.Concatenate(name="joined")([a, b])
    h = keras.layers.Dense(8, activation="relu", name="hidden")(h)
    out = keras.layers.Dense(3, activation="softmax", name="cls")(h)
    return keras.Model(inputs=[a, b], outputs=out, name="two_inputs")


def two_outputs() -> keras.Model:
    a = keras.Input(shape=(3,), name="a")
    h = keras.layers.Dense(8, activation="relu", name="hidden")(a)
    cls = keras.layers.Dense(3, activation="softmax", name="cls")(h)
    reg = keras.layers.Dense(1, name="reg")(h)
    return keras.Model(inputs=a, outputs=[cls, reg], name="two_outputs")


MODELS = {"two_inputs": two_inputs, "two_outputs": two_outputs, "sample_weights": two_outputs}
LOSSES = {"cls": "sparse_categorical_crossentropy", "reg": "mse"}


def compile_args(case: str) -> dict[str, Any]:
    if case == "two_inputs":
        return {"loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]}
    if case == "two_outputs":
        return {
            "loss": LOSSES,
            "loss_weights": {"cls": 1.0, "reg": 0.5},
            "metrics": {"cls": ["accuracy"], "reg": ["mae"]},
        }
    return {  # sample_weights
        "loss": ["sparse_categorical_crossentropy", "mse"],
        "loss_weights": [1.0, 0.25],
        "metrics": [["accuracy"], ["mae"]],
        "weighted_metrics": {"cls": ["accuracy"], "reg": ["mae"]},
    }


def fit_args(case: str) -> dict[str, Any]:
    """fit()'s arguments besides the data: the same in the script and the spec."""
    epochs = {"two_inputs": 3, "two_outputs": 4, "sample_weights": 3}[case]
    return {"epochs": epochs, "batch_size": 16}


def data(case: str, n: int, offset: int) -> tuple[Any, Any, Any]:
    """``(x, y, sample_weight)`` as a user passes them to fit()."""
    d = arrays(n, offset)
    if case == "two_inputs":
        return {"a": d["a"], "b": d["b"]}, d["cls"], None
    y = {"cls": d["cls"], "reg": d["reg"]}
    if case == "two_outputs":
        return d["a"], y, d["w"]
    return d["a"], y, {"cls": d["w"], "reg": d["w2"]}


def as_keras(x: Any, y: Any, weights: Any) -> tuple[Any, Any, Any]:
    """Labels and weights by output as lists in the model's output order: Keras 3 takes
    sample weights by output only so (with labels in a dict it fails)."""

    def listed(value: Any) -> Any:
        return [value["cls"], value["reg"]] if isinstance(value, dict) else value

    return x, listed(y), listed(weights)


def callbacks(case: str) -> list[dict[str, Any]]:
    """Callbacks as the spec declares them; the script builds the same ones."""
    if case == "two_outputs":
        # Keras tells which way an output's loss improves only when told: mode "min".
        return [{"type": "EarlyStopping", "monitor": "val_cls_loss", "mode": "min", "patience": 20}]
    return []


def spec(case: str, config: dict[str, Any]) -> dict[str, Any]:
    """The job spec of ``case``: the same model, arrays and arguments, inline."""

    def inline(n: int, offset: int) -> dict[str, Any]:
        x, y, weights = data(case, n, offset)
        ref = {"x": _listed(x), "y": _listed(y)}
        if weights is not None:
            ref["sample_weight"] = _listed(weights)
        return ref

    fit = fit_args(case)
    spec: dict[str, Any] = {
        "name": f"multi-io {case}",
        "seed": SEED,
        "model": {"keras_config": config},
        "compile": {"optimizer": "adam", **compile_args(case)},
        "data": {"train": inline(N, 1), "test": inline(N_VAL, 3)},
        "fit": {**fit, "verbose": 0},
        "callbacks": callbacks(case),
    }
    if case == "two_outputs":
        spec["fit"]["validation_split"] = 0.25
    else:
        spec["data"]["validation"] = inline(N_VAL, 2)
    return spec


def _listed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: v.tolist() for k, v in value.items()}
    return value.tolist()


def run(case: str) -> dict[str, Any]:
    keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    model = MODELS[case]()
    model.compile(optimizer="adam", **compile_args(case))
    x, y, weights = as_keras(*data(case, N, 1))
    rows: list[list[Any]] = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, logs: rows.append([e + 1, {k: float(v) for k, v in logs.items()}])
    )
    kwargs: dict[str, Any] = {**fit_args(case), "verbose": 0, "sample_weight": weights}
    if case == "two_outputs":
        kwargs["validation_split"] = 0.25
    else:
        xv, yv, wv = as_keras(*data(case, N_VAL, 2))
        kwargs["validation_data"] = (xv, yv) if wv is None else (xv, yv, wv)
    extra = [
        keras.callbacks.EarlyStopping(
            monitor=cb["monitor"], mode=cb["mode"], patience=cb["patience"]
        )
        for cb in callbacks(case)
    ]
    model.fit(x, y, callbacks=[*extra, record], **kwargs)
    xt, yt, wt = as_keras(*data(case, N_VAL, 3))
    test = model.evaluate(
        xt,
        yt,
        sample_weight=wt,
        batch_size=fit_args(case)["batch_size"],
        verbose=0,
        return_dict=True,
    )
    return {"epochs": rows, "test": {k: float(v) for k, v in test.items()}}


def config(case: str) -> dict[str, Any]:
    """The model's config, as ``model.to_json()`` writes it."""
    result: dict[str, Any] = json.loads(MODELS[case]().to_json())
    return result


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1])))
