"""Plain functions that build job specs for tests."""

from __future__ import annotations

import copy
from typing import Any


def digits_spec(**overrides: Any) -> dict[str, Any]:
    """A small MLP on a slice of digits: trains in a few seconds on a CPU."""
    spec: dict[str, Any] = {
        "name": "test-digits",
        "seed": 7,
        "model": {"builtin": "mlp", "params": {"hidden_units": [16]}},
        "compile": {
            "optimizer": "adam",
            "loss": "sparse_categorical_crossentropy",
            "metrics": ["accuracy"],
        },
        "data": {
            "train": {"dataset": "builtin:digits", "split": "train", "take": 300},
            "validation": {"dataset": "builtin:digits", "split": "validation", "take": 100},
        },
        "fit": {"batch_size": 32, "epochs": 3},
        "callbacks": [],
    }
    for path, value in overrides.items():
        set_path(spec, path, value)
    return spec


def nan_loss_spec(**overrides: Any) -> dict[str, Any]:
    """A regression whose step size makes the loss NaN within a few epochs; TerminateOnNaN."""
    spec = digits_spec(
        **{
            "data.train": {
                "x": [[float(i)] for i in range(64)],
                "y": [float(i * 1000) for i in range(64)],
            },
            "data.validation": ...,
            "model.params": {"hidden_units": [8]},
            "compile": {
                "optimizer": {"class_name": "SGD", "config": {"learning_rate": 1e6}},
                "loss": "mse",
            },
            "fit.epochs": 50,
            "callbacks": [{"type": "TerminateOnNaN"}],
        }
    )
    for path, value in overrides.items():
        set_path(spec, path, value)
    return spec


def set_path(spec: dict[str, Any], dotted: str, value: Any) -> None:
    """``set_path(spec, "fit.epochs", 5)``; a value of ``...`` deletes the key."""
    node = spec
    *parents, last = dotted.split("__") if "__" in dotted else dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    if value is ...:
        node.pop(last, None)
    else:
        node[last] = copy.deepcopy(value)


def image_zip(
    per_class: int = 20,
    size: int = 16,
    classes: tuple[str, ...] = ("horiz", "vert"),
    extra: dict[str, bytes] | None = None,
) -> bytes:
    """A zip of PNGs, one folder per class: horizontal or vertical stripes with noise."""
    import io
    import zipfile

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for label, name in enumerate(classes):
            for i in range(per_class):
                stripes = (np.arange(size) // 2 % 2 * 200).astype(np.uint8)
                img = np.tile(stripes[:, None] if label == 0 else stripes[None, :], (1, 1))
                img = np.broadcast_to(img, (size, size)).astype(np.int16)
                img = np.clip(img + rng.integers(-40, 40, (size, size)), 0, 255).astype(np.uint8)
                png = io.BytesIO()
                Image.fromarray(np.stack([img] * 3, axis=-1)).save(png, format="PNG")
                z.writestr(f"{name}/{i:03d}.png", png.getvalue())
        for member, payload in (extra or {}).items():
            z.writestr(member, payload)
    return buf.getvalue()
