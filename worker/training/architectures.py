"""Keras builders of fitq's built-in architectures, and safe loading of model configs."""

from __future__ import annotations

from typing import Any

import keras

from checks.architectures import CNNParams, MLPParams
from checks.keras_config import keras_object

Head = tuple[int, str]  # output units and default activation (checks.catalog.output_head)


def _output(head: Head, activation: str | None) -> keras.layers.Layer:
    return keras.layers.Dense(head[0], activation=activation or head[1])


def build_mlp(p: MLPParams, input_shape: tuple[int, ...], head: Head) -> keras.Model:
    layers: list[Any] = [keras.Input(shape=input_shape), keras.layers.Flatten()]
    for units in p.hidden_units:
        layers.append(keras.layers.Dense(units, activation=p.activation))
        if p.dropout:
            layers.append(keras.layers.Dropout(p.dropout))
    layers.append(_output(head, p.output_activation))
    return keras.Sequential(layers, name="mlp")


def build_cnn(p: CNNParams, input_shape: tuple[int, ...], head: Head) -> keras.Model:
    layers: list[Any] = [keras.Input(shape=input_shape)]
    if len(input_shape) == 2:
        layers.append(keras.layers.Reshape((*input_shape, 1)))
    size = min(input_shape[0], input_shape[1])
    for filters in p.filters:
        layers.append(
            keras.layers.Conv2D(filters, p.kernel_size, padding="same", activation=p.activation)
        )
        if size >= 4:
            layers.append(keras.layers.MaxPooling2D(2))
            size //= 2
    layers += [keras.layers.Flatten(), keras.layers.Dense(p.dense_units, activation=p.activation)]
    if p.dropout:
        layers.append(keras.layers.Dropout(p.dropout))
    layers.append(_output(head, p.output_activation))
    return keras.Sequential(layers, name="cnn")


def build_model(
    builtin: str | None,
    params: dict[str, Any],
    keras_config: dict[str, Any] | None,
    input_shape: tuple[int, ...],
    head: Head,
) -> keras.Model:
    """The job's model; a ``keras_config`` has passed fitq's allowlist at submit time."""
    if builtin == "mlp":
        return build_mlp(MLPParams.model_validate(params), input_shape, head)
    if builtin == "cnn":
        return build_cnn(CNNParams.model_validate(params), input_shape, head)
    assert keras_config is not None
    return from_config(keras_config)


def from_config(keras_config: dict[str, Any]) -> keras.Model:
    """A model from a config that passed fitq's allowlist, with Keras' ``safe_mode``,
    without any compile config (jobs compile with their spec's ``compile``), as
    ``keras.saving.load_model(..., compile=False)`` builds it."""
    model = keras.saving.deserialize_keras_object(keras_object(keras_config), safe_mode=True)
    if not isinstance(model, keras.Model):
        raise TypeError(f"keras_config built a {type(model).__name__}, expected a keras.Model")
    return model
