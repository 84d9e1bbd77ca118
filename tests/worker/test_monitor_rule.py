"""checks.monitor decides as Keras' own callbacks do, for every metric the allowlist holds.

For each metric (string identifier or class, plain or renamed), a tiny model is
compiled with it and fitted for one epoch; then Keras' EarlyStopping, in ``auto``
mode, decides which way the logged name improves (``_set_monitor_op``), and
fitq's rule must say the same.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras.src import ops  # noqa: E402

from checks import catalog  # noqa: E402
from checks.monitor import UndecidedDirection, direction, metric_directions  # noqa: E402
from models.spec import CompileSpec  # noqa: E402

# Which targets each metric needs: sparse labels, one-hot, binary, or a regression.
KIND = {
    "accuracy": "sparse", "acc": "sparse", "sparse_categorical_accuracy": "sparse",
    "sparse_top_k_categorical_accuracy": "sparse", "sparse_categorical_crossentropy": "sparse",
    "SparseCategoricalAccuracy": "sparse", "SparseTopKCategoricalAccuracy": "sparse",
    "categorical_accuracy": "onehot", "top_k_categorical_accuracy": "onehot",
    "categorical_crossentropy": "onehot", "CategoricalAccuracy": "onehot",
    "TopKCategoricalAccuracy": "onehot",
    "binary_accuracy": "binary", "auc": "binary", "precision": "binary", "recall": "binary",
    "binary_crossentropy": "binary", "BinaryAccuracy": "binary", "AUC": "binary",
    "Precision": "binary", "Recall": "binary",
    "mse": "regression", "mean_squared_error": "regression", "mae": "regression",
    "mean_absolute_error": "regression", "MeanSquaredError": "regression",
    "MeanAbsoluteError": "regression", "Accuracy": "regression",
}  # fmt: skip
LOSS = {
    "sparse": "sparse_categorical_crossentropy",
    "onehot": "categorical_crossentropy",
    "binary": "binary_crossentropy",
    "regression": "mse",
}


def keras_direction(metric: str | dict[str, Any], monitor: str) -> str:
    """The way Keras' EarlyStopping(mode='auto') decides ``monitor`` improves."""
    key = metric if isinstance(metric, str) else metric["class_name"]
    kind = KIND[key]
    # A fresh session, as each job's process has: Keras numbers a second "auc" "auc_1".
    keras.backend.clear_session()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    units, activation = {"sparse": (3, "softmax"), "onehot": (3, "softmax"),
                         "binary": (1, "sigmoid"), "regression": (1, None)}[kind]  # fmt: skip
    y = {
        "sparse": rng.integers(0, 3, 32),
        "onehot": np.eye(3)[rng.integers(0, 3, 32)],
        "binary": rng.integers(0, 2, (32, 1)).astype("float32"),
        "regression": rng.normal(size=(32, 1)).astype("float32"),
    }[kind]
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(units, activation=activation)])
    compiled = metric if isinstance(metric, str) else keras.metrics.deserialize(metric)
    model.compile(optimizer="sgd", loss=LOSS[kind], metrics=[compiled])
    model.fit(x, y, validation_data=(x, y), epochs=1, verbose=0)
    callback = keras.callbacks.EarlyStopping(monitor=monitor, mode="auto")
    callback.set_model(model)
    callback._set_monitor_op()
    return "max" if callback.monitor_op is ops.greater else "min"


def fitq_direction(metric: str | dict[str, Any], monitor: str) -> str:
    key = metric if isinstance(metric, str) else metric["class_name"]
    spec = CompileSpec(loss=LOSS[KIND[key]], metrics=[metric])
    return direction(monitor, "auto", metric_directions(spec))


def test_every_allowlisted_metric_has_a_direction() -> None:
    allowed = catalog.METRIC_NAMES | set(catalog.METRIC_CLASSES)
    assert allowed == set(catalog.METRIC_DIRECTIONS) == set(KIND)


@pytest.mark.parametrize("name", sorted(catalog.METRIC_NAMES))
def test_a_metric_named_by_string_improves_as_keras_says(name: str) -> None:
    for monitor in (name, f"val_{name}"):
        assert fitq_direction(name, monitor) == keras_direction(name, monitor), monitor


@pytest.mark.parametrize("class_name", sorted(catalog.METRIC_CLASSES))
def test_a_metric_class_plain_or_renamed_improves_as_keras_says(class_name: str) -> None:
    plain = {"class_name": class_name, "config": {}}
    logged = catalog.METRIC_CLASSES[class_name]
    assert fitq_direction(plain, f"val_{logged}") == keras_direction(plain, f"val_{logged}")
    # Renamed to a name that says nothing of its direction.
    renamed = {"class_name": class_name, "config": {"name": "score"}}
    assert fitq_direction(renamed, "val_score") == keras_direction(renamed, "val_score")


def test_loss_is_minimised_and_an_unknown_quantity_is_refused_as_keras_refuses_it() -> None:
    assert fitq_direction("mse", "val_loss") == keras_direction("mse", "val_loss") == "min"
    with pytest.raises(ValueError, match="isn't able to automatically determine"):
        keras_direction("mse", "val_f1")
    with pytest.raises(UndecidedDirection, match="no compiled metric logs 'f1'"):
        fitq_direction("mse", "val_f1")
