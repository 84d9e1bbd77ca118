"""Plain Keras scripts, one per case, that fitq's recorded histories must equal.

Each case is what a user would write by hand: seed, enable op determinism, build
the model, compile, call ``model.fit()`` with numpy arrays. It imports nothing of
fitq's training code; only the definition of the built-in data splits. Run as
``python tests/worker/plain_fit.py CASE OUT_DIR``; prints one JSON object:
``{"epochs": [[epoch, logs], ...], "files": [...], "config": ..., "params": ...}``, with
the model's config as ``model.to_json()`` writes it (parsed) and ``model.count_params()``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from checks.datasets import split_indices  # noqa: E402


def digits(split: str, take: int) -> tuple[np.ndarray, np.ndarray]:
    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32).reshape(-1, 8, 8, 1)
    idx = split_indices(len(x), split)  # type: ignore[arg-type]
    return x[idx][:take], bunch.target[idx][:take].astype(np.int64)


def mlp(units: int, dropout: float = 0.0) -> keras.Model:
    layers: list[Any] = [
        keras.Input(shape=(8, 8, 1)),
        keras.layers.Flatten(),
        keras.layers.Dense(units, activation="relu"),
    ]
    if dropout:
        layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(10, activation="softmax"))
    return keras.Sequential(layers)


L = keras.layers


def residual_dense() -> keras.Model:
    x = keras.Input(shape=(8, 8, 1))
    h = L.Dense(16, activation="relu")(L.Flatten()(x))
    a = L.Dense(16, activation="relu")(h)
    b = L.Dense(16)(a)
    skip = L.Activation("relu")(L.Add()([h, b]))
    return keras.Model(x, L.Dense(10, activation="softmax")(skip))


def residual_conv() -> keras.Model:
    x = keras.Input(shape=(8, 8, 1))
    c0 = L.Conv2D(4, 3, padding="same", activation="relu")(x)
    c1 = L.Conv2D(4, 3, padding="same", activation="relu")(c0)
    c2 = L.Conv2D(4, 3, padding="same")(c1)
    pooled = L.MaxPooling2D(2)(L.Add()([c0, c2]))
    return keras.Model(x, L.Dense(10, activation="softmax")(L.Flatten()(pooled)))


def shared() -> keras.Model:
    x = keras.Input(shape=(8, 8, 1))
    a = L.Dense(16, activation="relu")(L.Flatten()(x))
    twice = L.Dense(16, activation="relu")
    h1 = twice(a)
    h2 = twice(h1)
    return keras.Model(x, L.Dense(10, activation="softmax")(L.Add()([h1, h2])))


def nested() -> keras.Model:
    x = keras.Input(shape=(8, 8, 1))
    flat = L.Flatten()(x)
    inner = keras.Sequential(
        [L.Dense(16, activation="relu"), L.Dense(16, activation="relu")], name="inner"
    )
    return keras.Model(x, L.Dense(10, activation="softmax")(inner(flat)))


def batch_norm() -> keras.Model:
    x = keras.Input(shape=(8, 8, 1))
    c = L.Conv2D(4, 3, padding="same")(x)
    h = L.Activation("relu")(L.BatchNormalization()(c))
    return keras.Model(x, L.Dense(10, activation="softmax")(L.Flatten()(h)))


# Functional models, each as a user writes it; fitq trains the config model.to_json() gives.
GRAPHS = {
    "residual_dense": residual_dense,
    "residual_conv": residual_conv,
    "shared": shared,
    "nested": nested,
    "batch_norm": batch_norm,
}


def run(case: str, out: Path) -> dict[str, Any]:
    keras.utils.set_random_seed(7)
    tf.config.experimental.enable_op_determinism()
    x, y = digits("train", 300)
    xv, yv = digits("validation", 100)
    rows: list[list[Any]] = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, logs: rows.append([e + 1, {k: float(v) for k, v in logs.items()}])
    )
    overfit = case == "early_stopping"
    # A saved model (an upload, a parent job's checkpoint), loaded as Keras loads it.
    if case.startswith("keras:"):
        model = keras.saving.load_model(case[6:])
    else:
        model = GRAPHS[case]() if case in GRAPHS else mlp(128 if overfit else 16)
    config = json.loads(model.to_json())
    optimizer = keras.optimizers.Adam(learning_rate=0.01) if overfit else "adam"
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    ckpt = str(out / "epoch{epoch:02d}-{val_loss:.3f}.keras")
    kwargs: dict[str, Any] = {"batch_size": 32, "verbose": 0, "validation_data": (xv, yv)}
    callbacks: list[Any] = []
    if case == "validation_freq":
        kwargs.update(epochs=6, validation_freq=2)
    elif case == "early_stopping":
        x, y = digits("train", 60)
        kwargs.update(epochs=40, batch_size=16)
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
        )
    elif case == "checkpoint_best":
        kwargs.update(epochs=5)
        callbacks.append(
            keras.callbacks.ModelCheckpoint(ckpt, monitor="val_loss", save_best_only=True)
        )
    elif case == "checkpoint_all":
        kwargs.pop("validation_data")
        kwargs.update(epochs=4, validation_split=0.2, shuffle=True)
        callbacks.append(keras.callbacks.ModelCheckpoint(ckpt, monitor="val_loss"))
    elif case == "class_weight":
        kwargs.update(epochs=3, class_weight={0: 2.0, 1: 0.5, 7: 3.0})
    elif case == "steps_per_epoch":
        kwargs.update(epochs=4, steps_per_epoch=3, batch_size=16)
    elif case.startswith("npz:"):  # an uploaded dataset: the arrays as saved
        with np.load(case[4:]) as arrays:
            x, y = arrays["x"], arrays["y"]
            kwargs.update(
                epochs=4,
                validation_data=(arrays["x_val"], arrays["y_val"]),
                class_weight={0: 1.0, 1: 2.5, 2: 1.0},
            )
    elif case.startswith("keras:") or case in GRAPHS:
        kwargs.update(epochs=3)
    elif case == "initial_epoch":
        kwargs.update(epochs=5, initial_epoch=2, validation_freq=[3, 5], shuffle=False)
    else:
        raise SystemExit(f"unknown case {case}")
    model.fit(x, y, callbacks=[*callbacks, record], **kwargs)
    files = sorted(p.name for p in out.glob("*.keras"))
    return {"epochs": rows, "files": files, "config": config, "params": model.count_params()}


if __name__ == "__main__":
    out_dir = Path(sys.argv[2])
    out_dir.mkdir(parents=True, exist_ok=True)
    print(json.dumps(run(sys.argv[1], out_dir)))
