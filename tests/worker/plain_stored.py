"""A plain Keras script for models from stored files, and for checkpoints to ``.h5``,
that fitq's recorded histories, checkpoints and trained models must equal.

As ``plain_fit.py``: seed, enable op determinism, load the data, get the model,
compile, call ``model.fit()`` with numpy arrays. It imports nothing of fitq's
training code. The model is, as a Keras user gets it:

- ``--load FILE``: ``keras.saving.load_model(FILE)`` (a parent job's checkpoint);
- ``--architecture ARCHIVE``: the architecture of a ``.keras`` archive alone, its
  ``config.json`` built by ``keras.models.model_from_json()``, so freshly initialised;
- neither: the small MLP of fitq's built-in ``mlp`` with 16 hidden units.

``--freeze NAME`` (repeated) sets ``layer.trainable = False`` before ``compile()``.
``--checkpoints JSON`` is a list of ``keras.callbacks.ModelCheckpoint`` arguments,
each ``filepath`` a name inside ``OUT_DIR/checkpoints``. Run as
``python tests/worker/plain_stored.py OUT_DIR [options]``; saves the trained model as
``OUT_DIR/final.keras`` and prints one JSON object:
``{"epochs": [[epoch, logs], ...], "files": [checkpoint names written, sorted]}``.
"""

from __future__ import annotations

import argparse
import json
import os
import zipfile
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from tests.worker.plain_fit import digits, mlp  # noqa: E402


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--load", type=Path)
    parser.add_argument("--architecture", type=Path)
    parser.add_argument("--freeze", action="append", default=[])
    parser.add_argument("--checkpoints", type=json.loads, default=[])
    parser.add_argument("--epochs", type=int, default=3)
    return parser.parse_args()


def get_model(args: argparse.Namespace) -> keras.Model:
    if args.load is not None:
        return keras.saving.load_model(args.load)
    if args.architecture is not None:
        with zipfile.ZipFile(args.architecture) as archive:
            return keras.models.model_from_json(archive.read("config.json").decode())
    return mlp(16)


def run(args: argparse.Namespace) -> dict[str, Any]:
    keras.utils.set_random_seed(7)
    tf.config.experimental.enable_op_determinism()
    x, y = digits("train", 300)
    xv, yv = digits("validation", 100)
    model = get_model(args)
    for name in args.freeze:
        model.get_layer(name).trainable = False
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    folder = args.out / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    callbacks: list[Any] = [
        keras.callbacks.ModelCheckpoint(**{**kwargs, "filepath": str(folder / kwargs["filepath"])})
        for kwargs in args.checkpoints
    ]
    rows: list[list[Any]] = []
    callbacks.append(
        keras.callbacks.LambdaCallback(
            on_epoch_end=lambda e, logs: rows.append(
                [e + 1, {k: float(v) for k, v in logs.items()}]
            )
        )
    )
    model.fit(
        x,
        y,
        batch_size=32,
        epochs=args.epochs,
        verbose=0,
        validation_data=(xv, yv),
        callbacks=callbacks,
    )
    model.save(args.out / "final.keras")
    return {"epochs": rows, "files": sorted(p.name for p in folder.iterdir())}


if __name__ == "__main__":
    options = arguments()
    options.out.mkdir(parents=True, exist_ok=True)
    print(json.dumps(run(options)))
