"""The digits fit of ``examples/digits.yaml`` as a careful plain Keras script writes it.

``bench/run.py`` runs it in a fresh process as part 2's baseline (``python bench/digits.py
OUT.json [EPOCHS]`` writes its timings to OUT.json; 20 epochs unless told), and part 3
times the same model and data in its own process. The module imports only the standard
library, so that the time from process spawn to the end of the fit holds no more than a
plain script's would.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from typing_extensions import override

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SEED = 42


def digits_arrays() -> dict[str, tuple[Any, Any]]:
    """The digits splits as fitq's built-in data set defines them (x / 16, 8x8x1)."""
    import numpy as np
    from sklearn.datasets import load_digits

    from checks.datasets import split_indices

    bunch = load_digits()
    x = (np.asarray(bunch.data, dtype=np.float64) / 16.0).astype(np.float32).reshape(-1, 8, 8, 1)
    y = np.asarray(bunch.target, dtype=np.int64)
    out = {}
    for split in ("train", "validation", "test"):
        idx = split_indices(len(x), split)
        out[split] = (x[idx], y[idx])
    return out


def digits_model() -> Any:
    """The MLP of ``examples/digits.yaml``, compiled, written as plain Keras."""
    import keras

    model = keras.Sequential(
        [
            keras.Input(shape=(8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="mlp",
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def seed(value: int) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(value)
    tf.config.experimental.enable_op_determinism()


def fit_digits(
    model: Any, data: dict[str, tuple[Any, Any]], callbacks: list[Any], epochs: int = 20
) -> Any:
    """``model.fit`` as ``examples/digits.yaml`` asks for it; returns the history."""
    return model.fit(
        *data["train"],
        batch_size=32,
        epochs=epochs,
        verbose=2,
        shuffle=True,
        validation_data=data["validation"],
        callbacks=callbacks,
    )


def EpochClock() -> Any:  # noqa: N802 - builds a Keras callback class lazily
    """A callback timing each epoch from ``on_epoch_begin`` to ``on_epoch_end``, as the
    service's ``duration_s`` does. It has no batch hooks, so Keras keeps dispatching
    batch ends asynchronously: the plain fit stays plain."""
    import keras

    class _Clock(keras.callbacks.Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.spans: list[float] = []
            self.ends: list[float] = []  # time.time() at each epoch's end
            self._t = 0.0

        @override
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self._t = time.perf_counter()

        @override
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.spans.append(time.perf_counter() - self._t)
            self.ends.append(time.time())

    return _Clock()


def plain_fit(out: Path, epochs: int = 20) -> None:
    """The digits fit as a careful plain script does it; run in a fresh process."""
    t_start = time.time()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras  # noqa: F401
    import sklearn.datasets  # noqa: F401
    import tensorflow  # noqa: F401

    t_imported = time.time()
    seed(SEED)
    c0 = time.perf_counter()
    data = digits_arrays()
    c1 = time.perf_counter()
    model = digits_model()
    clock = EpochClock()
    history = fit_digits(model, data, [clock], epochs)
    c2 = time.perf_counter()
    t_fit_end = time.time()
    out.write_text(
        json.dumps(
            {
                "t_start": t_start,
                "import_s": t_imported - t_start,
                "load_s": c1 - c0,
                "fit_s": c2 - c1,
                "plain_s": c2 - c0,
                "t_fit_end": t_fit_end,
                "epoch_s": clock.spans,
                "epoch_end": clock.ends,
                "last": {k: float(v[-1]) for k, v in history.history.items()},
            }
        )
    )


if __name__ == "__main__":
    plain_fit(Path(sys.argv[1]), *(int(n) for n in sys.argv[2:3]))
