"""Plain functions that build job specs for tests."""

from __future__ import annotations

import copy
from collections.abc import Sequence
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


def retained_checkpoints_spec(epochs: int, keep_best: int, keep_last: int) -> dict[str, Any]:
    """A tiny digits job writing a weights checkpoint every epoch, with a retention rule."""
    return digits_spec(
        **{
            "fit.epochs": epochs,
            "data.train.take": 64,
            "data.validation.take": 32,
            "model.params.hidden_units": [8],
            "callbacks": [
                {
                    "type": "ModelCheckpoint",
                    "filepath": "e{epoch:02d}.weights.h5",
                    "save_weights_only": True,
                }
            ],
            "output": {"retention": {"keep_best": keep_best, "keep_last": keep_last}},
        }
    )


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


def keras_layer(cls: str, **config: Any) -> dict[str, Any]:
    """One layer as ``model.to_json()`` writes it."""
    return {"module": "keras.layers", "class_name": cls, "config": config, "registered_name": None}


def keras_sequential(
    *layers: dict[str, Any], shape: Sequence[int | None] | None = None, name: str = "s"
) -> dict[str, Any]:
    """A Sequential ``keras_config`` on samples of ``shape`` (digits' 8x8x1 by default)."""
    first = keras_layer("InputLayer", batch_shape=[None, *(shape or [8, 8, 1])], name="in")
    return {
        "module": "keras",
        "class_name": "Sequential",
        "registered_name": None,
        "config": {"name": name, "layers": [first, *layers]},
    }


def keras_zip(
    members: dict[str, bytes], links: tuple[str, ...] = (), compression: int | None = None
) -> bytes:
    """A ``.keras``-like zip of ``members``; the names in ``links`` are stored as symlinks."""
    import io
    import stat
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression or zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = compression or zipfile.ZIP_DEFLATED
            if name in links:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, data)
    return buf.getvalue()


def keras_members(data: bytes) -> dict[str, bytes]:
    """The members of a ``.keras`` file, by name."""
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def plain_run(script: str, *args: str, timeout: float = 300) -> dict[str, Any]:
    """Runs ``tests/worker/<script>`` (a plain Keras script, none of fitq's training
    code) in a fresh process; returns the JSON object its last line prints."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, str(root / "tests" / "worker" / script), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
        timeout=timeout,
        cwd=root,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result
