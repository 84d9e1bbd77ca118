"""Plain Keras scripts, one per case, that fitq's recorded histories must equal.

Each case is what a user would write by hand: seed, enable op determinism, build
the model, compile, call ``model.fit()`` with numpy arrays. It imports nothing of
fitq's training code; only the definition of the built-in data splits. Run as
``python tests/worker/plain_fit.py CASE OUT_DIR``; prints one JSON object:
``{"epochs": [[epoch, logs], ...], "files": [...]}``.
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
    model = mlp(128 if overfit else 16)
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
    elif case == "initial_epoch":
        kwargs.update(epochs=5, initial_epoch=2, validation_freq=[3, 5], shuffle=False)
    else:
        raise SystemExit(f"unknown case {case}")
    model.fit(x, y, callbacks=[*callbacks, record], **kwargs)
    files = sorted(p.name for p in out.glob("*.keras"))
    return {"epochs": rows, "files": files}


if __name__ == "__main__":
    out_dir = Path(sys.argv[2])
    out_dir.mkdir(parents=True, exist_ok=True)
    print(json.dumps(run(sys.argv[1], out_dir)))
