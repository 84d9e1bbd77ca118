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
