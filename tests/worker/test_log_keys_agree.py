"""The keys fitq expects Keras to log (``checks.compile_args.log_keys``, the names
callbacks may monitor) are those Keras 3 logs, for one output and for several."""

from __future__ import annotations

from typing import Any

import pytest

keras = pytest.importorskip("keras")
np = pytest.importorskip("numpy")

from checks.compile_args import log_keys  # noqa: E402
from checks.monitor import keras_decides, metric_directions  # noqa: E402
from models.spec import JobSpec  # noqa: E402
from tests.factories import digits_spec  # noqa: E402
from tests.worker.plain_multi_io import arrays, two_outputs  # noqa: E402
from worker.training.runner import _structure  # noqa: E402

SPARSE = "sparse_categorical_crossentropy"
TOP2 = {"class_name": "SparseTopKCategoricalAccuracy", "config": {"name": "top2", "k": 2}}
CASES: dict[str, dict[str, Any]] = {
    "one output": {"loss": SPARSE, "metrics": ["accuracy"]},
    "one output, weighted": {
        "loss": SPARSE,
        "metrics": ["accuracy"],
        "weighted_metrics": ["accuracy", "sparse_top_k_categorical_accuracy"],
    },
    "loss dict": {"loss": {"cls": SPARSE, "reg": "mse"}},
    "one loss for both": {"loss": "mse", "loss_weights": 0.5},
    "loss list, weights": {"loss": [SPARSE, "mse"], "loss_weights": [1.0, 0.2]},
    "metrics dict": {
        "loss": {"cls": SPARSE, "reg": "mse"},
        "loss_weights": {"cls": 1.0, "reg": 0.3},
        "metrics": {"cls": ["accuracy", TOP2]},
    },
    "metrics per output": {
        "loss": [SPARSE, "mse"],
        "metrics": [["accuracy"], ["mae", "mse"]],
        "weighted_metrics": [["accuracy"], "mse"],
    },
    "weighted only": {"loss": [SPARSE, "mse"], "weighted_metrics": {"reg": ["mae"]}},
}


@pytest.mark.parametrize("case", list(CASES))
def test_log_keys_are_the_keys_keras_logs(case: str) -> None:
    spec = JobSpec.model_validate(digits_spec(compile=CASES[case]))
    one, c = case.startswith("one output"), spec.compile
    keras.utils.set_random_seed(0)
    d = arrays(16, 0)
    if one:
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3, activation="softmax")])
        y: Any = d["cls"]
        names: list[str] = []
    else:
        model = two_outputs()
        # Labels in output order (Keras 3 takes sample weights with labels as a list);
        # one mse for both outputs needs one-hot classes.
        y = [np.eye(3)[d["cls"]] if c.loss == "mse" else d["cls"], d["reg"]]
        names = ["cls", "reg"]
    model.compile(
        optimizer="sgd",
        loss=_structure(c.loss, keras.losses),
        loss_weights=c.loss_weights,
        metrics=_structure(c.metrics, keras.metrics),
        weighted_metrics=_structure(c.weighted_metrics, keras.metrics),
    )
    history = model.fit(
        d["a"], y, sample_weight=d["w"], validation_split=0.25, epochs=1, verbose=0
    ).history

    expected = log_keys(spec, names)
    assert sorted(history) == sorted(expected + [f"val_{k}" for k in expected])
    assert set(metric_directions(c, names)) == set(expected)
    logs = {k: v[-1] for k, v in history.items()}
    for key in expected:  # Keras' EarlyStopping in mode "auto" decides as fitq says
        stopping = keras.callbacks.EarlyStopping(monitor=f"val_{key}")
        stopping.set_model(model)
        try:
            stopping.on_epoch_end(0, logs)
            decided = True
        except ValueError:
            decided = False
        assert decided == keras_decides(key, c), key
