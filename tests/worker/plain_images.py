"""A plain Keras script that trains on a folder of images, as fitq's image folders must.

``python tests/worker/plain_images.py FOLDER BATCH EPOCHS VALIDATION_SPLIT``: seed 7,
op determinism, ``keras.utils.image_dataset_from_directory`` with that seed, pixels
scaled to [0, 1], a Flatten-Dense(8)-softmax model; prints ``{"epochs": [[epoch, logs], ...]}``.
It imports nothing of fitq's.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402


def run(folder: str, batch_size: int, epochs: int, validation_split: float) -> dict[str, Any]:
    keras.utils.set_random_seed(7)
    tf.config.experimental.enable_op_determinism()

    def images(**split: Any) -> Any:
        return keras.utils.image_dataset_from_directory(
            folder, image_size=(16, 16), batch_size=batch_size, seed=7, verbose=False, **split
        )

    if validation_split:
        train = images(validation_split=validation_split, subset="training")
        val = images(validation_split=validation_split, subset="validation")
    else:
        train, val = images(), None

    def scale(ds: Any) -> Any:
        return ds.map(lambda x, y: (x / 255.0, y))

    model = keras.Sequential(
        [
            keras.Input(shape=(16, 16, 3)),
            keras.layers.Flatten(),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rows: list[list[Any]] = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, logs: rows.append([e + 1, {k: float(v) for k, v in logs.items()}])
    )
    model.fit(
        scale(train),
        epochs=epochs,
        validation_data=None if val is None else scale(val),
        callbacks=[record],
        verbose=0,
    )
    return {"epochs": rows}


if __name__ == "__main__":
    folder, batch, epochs, split = sys.argv[1:5]
    print(json.dumps(run(folder, int(batch), int(epochs), float(split))))
