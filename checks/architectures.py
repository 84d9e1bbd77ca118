"""Parameters of fitq's built-in architectures (the Keras builders live in the worker)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict

Activation = Literal[
    "relu", "sigmoid", "tanh", "elu", "selu", "gelu", "swish", "silu", "linear", "leaky_relu"
]
# Strict: a count is never a boolean (``true`` is not 1 unit) nor a float.
Units = Annotated[int, Strict(), Field(gt=0, le=8192)]


class MLPParams(BaseModel):
    """A multilayer perceptron: Flatten, then Dense layers, then a softmax output.

    Attributes:
        hidden_units: Units of each hidden Dense layer. Defaults to ``[64]``.
        activation: Activation of the hidden layers. Defaults to ``relu``.
        dropout: Dropout rate after each hidden layer. Defaults to 0 (none).
        output_activation: Activation of the output layer, sized to the number of
            classes (one linear unit per target for regression). Defaults to
            ``softmax`` for classification.
    """

    model_config = ConfigDict(extra="forbid")
    hidden_units: list[Units] = Field(default_factory=lambda: [64], max_length=16)
    activation: Activation = "relu"
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    output_activation: Literal["softmax", "sigmoid", "linear"] | None = None


class CNNParams(BaseModel):
    """A small convolutional network for image-shaped inputs (height, width, channels).

    Attributes:
        filters: Filters of each Conv2D block (conv, then max pooling when the
            image is still large enough). Defaults to ``[16, 32]``.
        kernel_size: Square kernel size. Defaults to 3.
        dense_units: Units of the Dense layer before the output. Defaults to 64.
        activation: Activation of hidden layers. Defaults to ``relu``.
        dropout: Dropout rate before the output layer. Defaults to 0.
        output_activation: As for the MLP.
    """

    model_config = ConfigDict(extra="forbid")
    filters: list[Units] = Field(default_factory=lambda: [16, 32], min_length=1, max_length=8)
    kernel_size: Annotated[int, Strict(), Field(gt=0, le=11)] = 3
    dense_units: Units = 64
    activation: Activation = "relu"
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    output_activation: Literal["softmax", "sigmoid", "linear"] | None = None


ARCHITECTURES: dict[str, type[BaseModel]] = {"mlp": MLPParams, "cnn": CNNParams}
