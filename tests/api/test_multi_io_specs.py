"""Specs for models with several inputs and outputs: refused with a 422 that names the
field and what was expected, before anything is queued; good ones are accepted.

The models are those of ``tests/worker/plain_multi_io.py`` (inputs ``a`` and ``b``;
outputs ``cls``, three classes, and ``reg``), as ``model.to_json()`` writes them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.factories import set_path

MODELS = json.loads((Path(__file__).parent / "multi_io_models.json").read_text())
A = [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9], [1.0, 1.1, 1.2]]
B = [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6], [0.7, 0.8]]
CLS = [0, 1, 2, 1]
REG = [[0.5], [0.1], [0.2], [0.3]]


def two_inputs(**overrides: Any) -> dict[str, Any]:
    """Inputs a and b, one output: cls."""
    spec: dict[str, Any] = {
        "seed": 1,
        "model": {"keras_config": MODELS["two_inputs"]},
        "compile": {"optimizer": "adam", "loss": "sparse_categorical_crossentropy"},
        "data": {"train": {"x": {"a": A, "b": B}, "y": CLS}},
        "fit": {"epochs": 1},
    }
    for path, value in overrides.items():
        set_path(spec, path, value)
    return spec


def two_outputs(**overrides: Any) -> dict[str, Any]:
    """Input a, outputs cls and reg."""
    spec: dict[str, Any] = {
        "seed": 1,
        "model": {"keras_config": MODELS["two_outputs"]},
        "compile": {
            "optimizer": "adam",
            "loss": {"cls": "sparse_categorical_crossentropy", "reg": "mse"},
            "metrics": {"cls": ["accuracy"]},
        },
        "data": {
            "train": {"x": A, "y": {"cls": CLS, "reg": REG}},
            "validation": {"x": A, "y": {"cls": CLS, "reg": REG}},
        },
        "fit": {"epochs": 1},
    }
    for path, value in overrides.items():
        set_path(spec, path, value)
    return spec


def refused(client: TestClient, spec: dict[str, Any]) -> list[dict[str, Any]]:
    resp = client.post("/v1/jobs", json=spec)
    assert resp.status_code == 422, resp.text
    assert client.get("/v1/jobs").json()["items"] == []
    errors: list[dict[str, Any]] = resp.json()["detail"]
    return errors


def error_at(errors: list[dict[str, Any]], loc: list[Any]) -> str:
    found = [e["msg"] for e in errors if e["loc"] == ["body", *loc]]
    assert found, f"no error at {loc}: {errors}"
    return found[0]


@pytest.mark.parametrize(
    ("spec", "loc", "says"),
    [
        pytest.param(
            two_inputs(**{"data.train.x": {"a": A}}),
            ["data", "train", "x"],
            ["no x array for the model's input 'b'", "['a', 'b']"],
            id="missing input key",
        ),
        pytest.param(
            two_inputs(**{"data.train.x": {"a": A, "b": B, "c": B}}),
            ["data", "train", "x", "c"],
            ["input 'c'", "the model's inputs ['a', 'b']"],
            id="unknown input key",
        ),
        pytest.param(
            two_inputs(**{"data.train.x": A}),
            ["data", "train", "x"],
            ["the model has 2 inputs ['a', 'b']", "object by input name"],
            id="one array for two inputs",
        ),
        pytest.param(
            two_outputs(**{"data.train.y": {"cls": CLS}}),
            ["data", "train", "y"],
            ["no y array for the model's output 'reg'"],
            id="missing output key",
        ),
        pytest.param(
            two_outputs(**{"data.validation.y": {"cls": CLS, "rgr": REG}}),
            ["data", "validation", "y", "rgr"],
            ["output 'rgr'", "['cls', 'reg']"],
            id="unknown output key in validation data",
        ),
        pytest.param(
            two_inputs(**{"data.train.x.b": [[0.1], [0.2], [0.3], [0.4]]}),
            ["model", "keras_config", "config", "layers", 1, "config", "batch_shape"],
            ["input 'b'", "input shape is [2]", "have shape [1]"],
            id="wrong input shape",
        ),
        pytest.param(
            two_outputs(**{"data.train.y.reg": [[0.1, 1], [0.2, 1], [0.3, 1], [0.4, 1]]}),
            ["compile", "loss", "reg"],
            ["the model gives 1 number per sample", "'reg' labels have 2 numbers per sample"],
            id="labels not of an output's shape",
        ),
        pytest.param(
            two_inputs(**{"data.train.x.b": B[:3]}),
            ["data", "train", "x", "b"],
            ["received 3 samples for 4 samples in x.a"],
            id="inputs of different lengths",
        ),
        pytest.param(
            two_outputs(
                **{"compile.loss": {"cls": "sparse_categorical_crossentropy", "rgr": "mse"}}
            ),
            ["compile", "loss"],
            ["received losses for ['cls', 'rgr']", "expected ['cls', 'reg']"],
            id="loss dict naming an unknown output",
        ),
        pytest.param(
            two_outputs(**{"compile.loss": ["mse"]}),
            ["compile", "loss"],
            ["received 1 losses", "expected 2"],
            id="loss list too short",
        ),
        pytest.param(
            two_outputs(**{"compile.loss_weights": {"cls": 1.0, "zz": 0.5}}),
            ["compile", "loss_weights"],
            ["['cls', 'zz']", "['cls', 'reg']"],
            id="loss_weights naming an unknown output",
        ),
        pytest.param(
            two_outputs(**{"compile.loss": "mse", "compile.loss_weights": [1.0, 0.5]}),
            ["compile", "loss_weights"],
            ["one loss per output"],
            id="loss_weights list with one loss",
        ),
        pytest.param(
            two_outputs(**{"compile.metrics": ["accuracy"]}),
            ["compile", "metrics"],
            ["one entry (a metric or a list of metrics) per output", "['cls', 'reg']"],
            id="metrics list of the wrong length",
        ),
        pytest.param(
            two_outputs(**{"compile.weighted_metrics": {"out": ["mae"]}}),
            ["compile", "weighted_metrics"],
            ["['out']", "['cls', 'reg']"],
            id="weighted_metrics naming an unknown output",
        ),
        pytest.param(
            two_outputs(
                **{"callbacks": [{"type": "EarlyStopping", "monitor": "val_reg_accuracy"}]}
            ),
            ["callbacks", 0, "monitor"],
            ["'val_reg_accuracy'", "'val_cls_accuracy'", "'val_reg_loss'"],
            id="monitor naming a metric Keras does not log",
        ),
        pytest.param(
            two_outputs(**{"callbacks": [{"type": "EarlyStopping", "monitor": "val_accuracy"}]}),
            ["callbacks", 0, "monitor"],
            ["'val_accuracy'", "'val_cls_accuracy'"],
            id="monitor with a one-output name",
        ),
        pytest.param(
            two_outputs(**{"callbacks": [{"type": "EarlyStopping", "monitor": "val_cls_loss"}]}),
            ["callbacks", 0, "mode"],
            ["mode='auto' with monitor='val_cls_loss'", "expected mode 'min' or 'max'"],
            id="an output's loss monitored in mode auto",
        ),
        pytest.param(
            two_inputs(
                **{
                    "compile.metrics": ["accuracy"],
                    "compile.weighted_metrics": ["accuracy"],
                    "data.train.sample_weight": [1.0, 2.0, 1.0, 1.0],
                    "callbacks": [
                        {
                            "type": "ModelCheckpoint",
                            "filepath": "m.keras",
                            "monitor": "weighted_accuracy",
                        }
                    ],
                }
            ),
            ["callbacks", 0, "mode"],
            ["monitor='weighted_accuracy'"],
            id="a weighted metric renamed by Keras monitored in mode auto",
        ),
        pytest.param(
            two_outputs(**{"data.train.y.cls": [0, 1, 5, 1]}),
            ["compile", "loss", "cls"],
            ["go up to 5", "3 units"],
            id="class ids beyond the output's width",
        ),
        pytest.param(
            two_outputs(**{"data.train.y.cls": [0.5, 1, 2, 1]}),
            ["compile", "loss", "cls"],
            ["needs integer class labels", "the training 'cls' labels"],
            id="sparse loss on real labels of one output",
        ),
        pytest.param(
            two_outputs(**{"fit.class_weight": {"0": 1.0, "1": 2.0}}),
            ["fit", "class_weight"],
            ["one output", "['cls', 'reg']"],
            id="class_weight with two outputs",
        ),
        pytest.param(
            two_outputs(**{"data.train.sample_weight": [1.0, 2.0, 0.5]}),
            ["data", "train", "sample_weight"],
            ["received 3 weights for 4 samples"],
            id="a weight missing",
        ),
        pytest.param(
            two_outputs(**{"data.train.sample_weight": {"cls": [1, 1, 1, 1]}}),
            ["data", "train", "sample_weight"],
            ["['cls']", "one per output of y: ['cls', 'reg']"],
            id="weights for one of two outputs",
        ),
        pytest.param(
            two_outputs(**{"data.train.sample_weight": [[1.0], [2.0], [1.0], [1.0]]}),
            ["data", "train", "sample_weight"],
            ["one weight per sample"],
            id="weights not one number a sample",
        ),
        pytest.param(
            two_inputs(
                **{"data.train.sample_weight": [1.0, 2.0, 0.5, 1.0], "fit.class_weight": "balanced"}
            ),
            ["fit", "class_weight"],
            ["class_weight or sample_weight, not both"],
            id="class_weight with sample weights",
        ),
    ],
)
def test_bad_multi_io_specs_are_refused(
    client: TestClient, spec: dict[str, Any], loc: list[Any], says: list[str]
) -> None:
    msg = error_at(refused(client, spec), loc)
    for part in says:
        assert part in msg, (part, msg)


def test_a_builtin_model_takes_plain_arrays(client: TestClient) -> None:
    spec = two_inputs(**{"model": {"builtin": "mlp"}})
    msg = error_at(refused(client, spec), ["data", "train", "x", "a"])
    assert "a built-in model has one input" in msg


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(two_inputs(), id="two inputs by name"),
        pytest.param(
            two_outputs(
                **{
                    "compile.loss_weights": {"cls": 1.0, "reg": 0.5},
                    "compile.weighted_metrics": [["accuracy"], ["mae"]],
                    "data.train.sample_weight": {"cls": [1, 2, 1, 1], "reg": [1, 1, 0.5, 1]},
                    "callbacks": [
                        {
                            "type": "EarlyStopping",
                            "monitor": "val_cls_weighted_accuracy",
                            "mode": "max",
                        },
                        {"type": "ReduceLROnPlateau", "monitor": "val_reg_loss"},
                        {
                            "type": "ModelCheckpoint",
                            "filepath": "e{epoch:02d}-{val_cls_accuracy:.3f}.keras",
                            "monitor": "cls_loss",
                            "mode": "min",
                        },
                        {"type": "EarlyStopping", "monitor": "val_loss"},
                    ],
                }
            ),
            id="two outputs, weights, monitors by output",
        ),
        pytest.param(
            two_outputs(**{"compile.loss": ["sparse_categorical_crossentropy", "mse"]}),
            id="loss list in output order",
        ),
        pytest.param(
            two_outputs(**{"compile.metrics": [["accuracy"], "mae"]}),
            id="metrics one entry per output",
        ),
    ],
)
def test_good_multi_io_specs_are_accepted(client: TestClient, spec: dict[str, Any]) -> None:
    resp = client.post("/v1/jobs", json=spec)
    assert resp.status_code == 201, resp.text
