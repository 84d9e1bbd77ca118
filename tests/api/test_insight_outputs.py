"""Insight on a model with several outputs: the monitored output's metric keeps the
direction its metric has, found by the names Keras logs (``<output>_<metric>``)."""

from __future__ import annotations

from api.insight import Epoch, analyse
from tests.api.test_multi_io_specs import MODELS


def test_an_outputs_metric_monitored_in_mode_auto_keeps_its_direction() -> None:
    compiled = {
        "loss": {"cls": "sparse_categorical_crossentropy", "reg": "mse"},
        "metrics": {"cls": ["accuracy"], "reg": ["mae"]},
    }
    plateau = {"type": "ReduceLROnPlateau", "monitor": "val_cls_accuracy"}
    spec = {
        "model": {"keras_config": MODELS["two_outputs"]},
        "compile": compiled,
        "callbacks": [plateau],
    }
    accuracy = [0.5, 0.7, 0.9, 0.8]
    history = [
        Epoch(i + 1, {"loss": 1.0 / (i + 1), "val_cls_accuracy": a}) for i, a in enumerate(accuracy)
    ]

    insight = analyse(spec, history, "running", None, None)

    assert (insight.monitor, insight.mode) == ("val_cls_accuracy", "max")
