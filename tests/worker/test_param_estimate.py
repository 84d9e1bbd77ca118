"""fitq's weight count, made without Keras at submit time, matches Keras' own."""

from __future__ import annotations

import json

import pytest

keras = pytest.importorskip("keras")

from checks.architectures import CNNParams, MLPParams  # noqa: E402
from checks.keras_config import estimate_params  # noqa: E402
from checks.validation import _builtin_layers  # noqa: E402
from worker.training.architectures import build_cnn, build_mlp  # noqa: E402


@pytest.mark.parametrize("params", [MLPParams(), MLPParams(hidden_units=[128, 64, 32])])
def test_mlp(params: MLPParams) -> None:
    model = build_mlp(params, (8, 8, 1), (10, "softmax"))
    layers = _builtin_layers("mlp", params, (8, 8, 1), 10)
    assert estimate_params({"config": {"layers": layers}}, (8, 8, 1)) == model.count_params()


@pytest.mark.parametrize("params", [CNNParams(), CNNParams(filters=[8, 16, 32], kernel_size=5)])
def test_cnn(params: CNNParams) -> None:
    model = build_cnn(params, (32, 32, 3), (4, "softmax"))
    layers = _builtin_layers("cnn", params, (32, 32, 3), 4)
    assert estimate_params({"config": {"layers": layers}}, (32, 32, 3)) == model.count_params()


def test_keras_config() -> None:
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(40), keras.layers.Dense(7)])
    config = json.loads(model.to_json())
    assert estimate_params(config, (12,)) == model.count_params()
