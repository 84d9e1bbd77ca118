"""fitq's size of a model, made without Keras at submit time, matches Keras' own.

Every layer on the allowlist is built by Keras in a tiny model, with a couple of
configs each; the config ``model.to_json()`` writes passes the allowlist, and fitq's
count of its weights and its output shape are exactly Keras'.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest

keras = pytest.importorskip("keras")

from checks import catalog  # noqa: E402
from checks.architectures import CNNParams, MLPParams  # noqa: E402
from checks.catalog import output_head  # noqa: E402
from checks.keras_config import check_keras_config  # noqa: E402
from checks.layer_sizes import RULES  # noqa: E402
from checks.model_size import model_io, model_size, stack_size  # noqa: E402
from checks.validation import _builtin_layers, check_spec  # noqa: E402
from core.errors import SpecError  # noqa: E402
from core.settings import Settings  # noqa: E402
from models.spec import JobSpec  # noqa: E402
from worker.training.architectures import build_cnn, build_mlp, build_model  # noqa: E402
from worker.training.data import load_job_data  # noqa: E402

L = keras.layers
Shape = tuple[int, ...]

# (input shape, the layer) for a Sequential model of that one layer.
SEQUENTIAL: list[tuple[Shape, Callable[[], Any]]] = [
    ((7,), lambda: L.Dense(5)),
    ((4, 6), lambda: L.Dense(3, use_bias=False, activation="relu")),
    ((10,), lambda: L.Embedding(50, 8)),
    ((3, 4), lambda: L.Embedding(20, 2, mask_zero=True)),
    ((5,), lambda: L.Dropout(0.5)),
    ((5,), lambda: L.GaussianNoise(0.1)),
    ((5,), lambda: L.GaussianDropout(0.2)),
    ((5,), lambda: L.ActivityRegularization(l1=0.01)),
    ((5,), lambda: L.Activation("tanh")),
    ((5,), lambda: L.ReLU(max_value=6.0)),
    ((5,), lambda: L.LeakyReLU(negative_slope=0.2)),
    ((5,), lambda: L.ELU()),
    ((3, 4), lambda: L.Softmax(axis=1)),
    ((3, 4), lambda: L.UnitNormalization(axis=[1, 2])),
    ((6,), lambda: L.Rescaling(1 / 255, offset=-1.0)),
    ((5, 3), lambda: L.SpatialDropout1D(0.1)),
    ((4, 4, 3), lambda: L.SpatialDropout2D(0.1)),
    ((3, 4), lambda: L.PReLU()),
    ((3, 4, 2), lambda: L.PReLU(shared_axes=[1, 2])),
    ((2, 3, 4), lambda: L.Flatten()),
    ((2, 3, 4), lambda: L.Reshape((6, 4))),
    ((2, 3, 4), lambda: L.Reshape((-1, 2))),
    ((3, 5), lambda: L.Permute((2, 1))),
    ((2, 3, 4), lambda: L.Permute((3, 1, 2))),
    ((3,), lambda: L.RepeatVector(4)),
    ((5, 6, 2), lambda: L.ZeroPadding2D(((1, 2), (3, 4)))),
    ((5, 6, 2), lambda: L.ZeroPadding2D(2)),
    ((6, 7, 3), lambda: L.Cropping2D(((1, 0), (2, 1)))),
    ((6, 7, 3), lambda: L.Cropping2D(2)),
    ((4, 5, 2), lambda: L.UpSampling2D((2, 3))),
    ((4, 5, 2), lambda: L.UpSampling2D(2, interpolation="bilinear")),
    ((10, 2), lambda: L.Conv1D(4, 3)),
    ((10, 2), lambda: L.Conv1D(4, 3, padding="causal", dilation_rate=2)),
    ((11, 4), lambda: L.Conv1D(6, 3, strides=2, groups=2, use_bias=False)),
    ((9, 9, 3), lambda: L.Conv2D(8, 3)),
    ((9, 8, 3), lambda: L.Conv2D(8, (3, 2), strides=2, padding="same")),
    ((3, 9, 8), lambda: L.Conv2D(4, 3, data_format="channels_first")),
    ((5, 5, 5, 2), lambda: L.Conv3D(4, 2)),
    ((6, 7, 5, 2), lambda: L.Conv3D(3, (3, 2, 1), strides=(2, 1, 1), padding="same")),
    ((9, 9, 3), lambda: L.SeparableConv2D(8, 3, depth_multiplier=2)),
    ((9, 9, 3), lambda: L.SeparableConv2D(4, 2, strides=2, padding="same", use_bias=False)),
    ((9, 9, 3), lambda: L.DepthwiseConv2D(3, depth_multiplier=2)),
    ((9, 9, 3), lambda: L.DepthwiseConv2D((3, 2), strides=2, padding="same")),
    ((9, 3), lambda: L.MaxPooling1D(2)),
    ((9, 3), lambda: L.MaxPooling1D(3, strides=2, padding="same")),
    ((9, 3), lambda: L.AveragePooling1D(4, strides=1)),
    ((9, 9, 3), lambda: L.MaxPooling2D(2)),
    ((9, 9, 3), lambda: L.AveragePooling2D((2, 3), strides=(1, 2))),
    ((3, 9, 9), lambda: L.MaxPooling2D(2, padding="same", data_format="channels_first")),
    ((5, 3), lambda: L.GlobalAveragePooling1D()),
    ((5, 3), lambda: L.GlobalMaxPooling1D(keepdims=True)),
    ((4, 4, 3), lambda: L.GlobalAveragePooling2D(keepdims=True)),
    ((3, 4, 4), lambda: L.GlobalMaxPooling2D(data_format="channels_first")),
    ((4, 4, 3), lambda: L.BatchNormalization()),
    ((4, 3), lambda: L.BatchNormalization(axis=1, center=False)),
    ((4, 3), lambda: L.BatchNormalization(renorm=True)),
    ((5, 3), lambda: L.LayerNormalization()),
    ((5, 3), lambda: L.LayerNormalization(axis=[1, 2], scale=False)),
    ((4,), lambda: L.Normalization()),
    ((4, 3), lambda: L.Normalization(axis=1)),
    ((4, 3), lambda: L.Normalization(axis=None)),
    ((4,), lambda: L.Normalization(mean=0.5, variance=2.0)),
    ((5, 3), lambda: L.LSTM(6)),
    ((5, 3), lambda: L.LSTM(4, return_sequences=True, use_bias=False)),
    ((5, 3), lambda: L.GRU(5)),
    ((5, 3), lambda: L.GRU(5, reset_after=False, return_sequences=True)),
    ((5, 3), lambda: L.SimpleRNN(7, return_sequences=True)),
    ((5, 3), lambda: L.SimpleRNN(2, go_backwards=True, unroll=True)),
    ((5, 3), lambda: L.Bidirectional(L.LSTM(4))),
    ((5, 3), lambda: L.Bidirectional(L.GRU(3, return_sequences=True), merge_mode="sum")),
    (
        (5, 3),
        lambda: L.Bidirectional(
            L.LSTM(4), backward_layer=L.LSTM(4, go_backwards=True, use_bias=False)
        ),
    ),
    ((5, 3), lambda: L.TimeDistributed(L.Dense(4))),
    ((3, 6, 6, 1), lambda: L.TimeDistributed(L.Conv2D(2, 3))),
]


def _functional(merge: Callable[[], Any], shape: Shape, widths: tuple[int, int]) -> Any:
    x = keras.Input(shape)
    a, b = L.Dense(widths[0])(x), L.Dense(widths[1])(x)
    return keras.Model(x, L.Dense(2)(merge()([a, b])))


def _shared() -> Any:
    x = keras.Input((4,))
    shared = L.Dense(4)
    return keras.Model(x, L.Add()([shared(x), shared(shared(x))]))


def _dot(axes: Any, a: Shape, b: Shape, normalize: bool = False) -> Any:
    x, y = keras.Input(a), keras.Input(b)
    return keras.Model([x, y], L.Dot(axes, normalize=normalize)([x, y]))


FUNCTIONAL: list[tuple[Shape, Callable[[], Any]]] = [
    ((6,), lambda: _functional(L.Add, (6,), (4, 4))),
    ((6,), lambda: _functional(L.Multiply, (6,), (4, 4))),
    ((6,), lambda: _functional(L.Average, (6,), (4, 4))),
    ((6,), lambda: _functional(L.Maximum, (6,), (4, 4))),
    ((6,), lambda: _functional(L.Minimum, (6,), (4, 4))),
    ((6,), lambda: _functional(L.Subtract, (6,), (4, 4))),
    ((6,), lambda: _functional(L.Concatenate, (6,), (3, 5))),
    ((3, 4), lambda: _functional(L.Concatenate, (3, 4), (2, 5))),
    ((3, 4), lambda: _functional(lambda: L.Concatenate(axis=1), (3, 4), (4, 4))),
    ((4,), _shared),
]


def _two_in_two_out() -> Any:
    a, b = keras.Input((4,), name="a"), keras.Input((3,), name="b")
    both = L.Concatenate()([L.Dense(5)(a), b])
    return keras.Model([a, b], [L.Dense(2, name="y1")(both), L.Dense(1, name="y2")(both)])


def _dicts() -> Any:
    a, b = keras.Input((4,), name="a"), keras.Input((4,), name="b")
    total = L.Add()([a, b])
    outputs = {"z": L.Dense(3, name="z")(total), "m": L.Dense(2, name="m")(L.Multiply()([a, b]))}
    return keras.Model({"b": b, "a": a}, outputs)


def _residual_conv() -> Any:
    x = keras.Input((8, 8, 1))
    c0 = L.Conv2D(4, 3, padding="same", activation="relu")(x)
    c1 = L.BatchNormalization()(L.Conv2D(4, 3, padding="same")(c0))
    pooled = L.MaxPooling2D(2)(L.Activation("relu")(L.Add()([c0, c1])))
    return keras.Model(x, L.Dense(10)(L.Flatten()(pooled)))


def _nested() -> Any:
    inner_seq = keras.Sequential([L.Dense(6), L.BatchNormalization(), L.Dense(5)], name="inner_seq")
    ix = keras.Input((5,), name="ix")
    inner_fn = keras.Model(ix, L.Dense(3)(ix), name="inner_fn")
    z = keras.Input((4,), name="z")
    h = inner_seq(z)
    return keras.Model(z, L.Subtract()([inner_fn(h), inner_fn(h)]))


def _nested_two_outputs() -> Any:
    ix = keras.Input((4,), name="ix")
    inner = keras.Model(ix, [L.Dense(3, name="p")(ix), L.Dense(2, name="q")(ix)], name="inner")
    z = keras.Input((4,), name="z")
    p, q = inner(z)
    return keras.Model(z, L.Concatenate(name="both")([p, q]))


def _sequential_in_sequential() -> Any:
    inner = keras.Sequential([L.Dense(7), L.Dense(3)], name="inner")
    return keras.Sequential([keras.Input((5,), name="pixels"), L.Dense(4), inner, L.Dense(2)])


# Models of several inputs or outputs, merges, shared layers, models inside models.
GRAPHS: list[Callable[[], Any]] = [
    _two_in_two_out,
    _dicts,
    _residual_conv,
    _nested,
    _nested_two_outputs,
    _sequential_in_sequential,
    _shared,
    lambda: _dot(1, (4,), (4,)),
    lambda: _dot([2, 2], (3, 4), (5, 4)),
    lambda: _dot(1, (3, 4), (3, 2), normalize=True),
    lambda: _dot(-1, (2, 3), (3,)),
]


def _config(model: Any) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(model.to_json())
    assert check_keras_config(config, ("model",)) == [], "the allowlist refuses Keras' own config"
    return config


def _case_id(case: tuple[Shape, Callable[[], Any]]) -> str:
    return f"{case[1]().__class__.__name__}-{'x'.join(map(str, case[0]))}"


@pytest.mark.parametrize("case", SEQUENTIAL, ids=[_case_id(c) for c in SEQUENTIAL])
def test_each_layer_matches_keras(case: tuple[Shape, Callable[[], Any]]) -> None:
    shape, make = case
    model = keras.Sequential([keras.Input(shape), make()])
    size = model_size(_config(model), shape, ("model",))
    assert size.params == model.count_params()
    out = tuple(model.compute_output_shape((None, *shape))[1:])
    assert size.output == out
    if model.layers[0].__class__.__name__ in HOLDING:
        assert size.numbers >= math.prod(shape) + math.prod(out)
    else:
        assert size.numbers == math.prod(shape) + math.prod(out)


# Layers that keep more than their output for the backward pass.
HOLDING = ("LSTM", "GRU", "SimpleRNN", "Bidirectional", "TimeDistributed")


@pytest.mark.parametrize(
    "case", FUNCTIONAL, ids=[f"functional-{i}" for i in range(len(FUNCTIONAL))]
)
def test_functional_graphs_match_keras(case: tuple[Shape, Callable[[], Any]]) -> None:
    shape, make = case
    model = make()
    size = model_size(_config(model), shape, ("model",))
    assert size.params == model.count_params()
    assert size.output == tuple(model.output.shape[1:])


def _forms(model: Any) -> list[dict[str, Any]]:
    """The forms Keras gives of a model's config, each as it travels (JSON)."""
    return [
        json.loads(model.to_json()),
        json.loads(json.dumps(keras.saving.serialize_keras_object(model))),
        json.loads(json.dumps(model.get_config())),
    ]


@pytest.mark.parametrize("make", GRAPHS, ids=[f"graph-{i}" for i in range(len(GRAPHS))])
def test_every_form_of_a_graph_is_sized_as_keras_builds_it(make: Callable[[], Any]) -> None:
    model = make()
    for config in _forms(model):
        assert check_keras_config(config, ("model",)) == [], "the allowlist refuses it"
        # the model the worker builds from the config: its inputs are named by their
        # InputLayers (an unnamed keras.Input's tensor is named otherwise until then)
        built = build_model(None, {}, config, (), (1, "linear"))
        inputs = {t.name: tuple(t.shape[1:]) for t in built.inputs}
        names = getattr(built, "output_names", None) or [built.layers[-1].name]
        outputs = {n: tuple(t.shape[1:]) for n, t in zip(names, built.outputs, strict=True)}
        assert list(inputs.values()) == [tuple(t.shape[1:]) for t in model.inputs]
        assert model_io(config) == (list(inputs), list(outputs))
        size = model_size(config, inputs, ("model",))
        assert size.params == model.count_params() == built.count_params()
        assert (size.inputs, size.outputs) == (inputs, outputs)


def test_every_allowlisted_layer_is_checked_against_keras() -> None:
    seen = {"InputLayer"}
    for _, make in SEQUENTIAL:
        layer = make()
        seen.add(layer.__class__.__name__)
        inner = getattr(layer, "layer", None) or getattr(layer, "forward_layer", None)
        if inner is not None:
            seen.add(inner.__class__.__name__)
    for _, make in FUNCTIONAL:
        seen |= {layer.__class__.__name__ for layer in make().layers}
    for make in GRAPHS:
        seen |= {layer.__class__.__name__ for layer in make().layers}
    assert catalog.LAYERS <= seen, sorted(catalog.LAYERS - seen)
    # and fitq sizes exactly the layers it allows (the InputLayer is the data's shape)
    assert set(RULES) == catalog.LAYERS - {"InputLayer"}


def test_output_shapes_follow_keras_through_a_stack() -> None:
    """Shapes carry from layer to layer: the last Dense's weights depend on all before it."""
    model = keras.Sequential(
        [
            keras.Input((12, 3)),
            L.Conv1D(8, 3, padding="same"),
            L.MaxPooling1D(2),
            L.Bidirectional(L.LSTM(5, return_sequences=True)),
            L.TimeDistributed(L.Dense(4)),
            L.Flatten(),
            L.RepeatVector(3),
            L.GRU(2),
            L.Dense(7),
        ]
    )
    size = model_size(_config(model), (12, 3), ())
    assert (size.params, size.output) == (model.count_params(), (7,))


@pytest.mark.parametrize("params", [MLPParams(), MLPParams(hidden_units=[128, 64], dropout=0.2)])
def test_mlp(params: MLPParams) -> None:
    model = build_mlp(params, (8, 8, 1), (10, "softmax"))
    layers = _builtin_layers("mlp", params, (8, 8, 1), 10)
    assert stack_size(layers, (8, 8, 1)).params == model.count_params()


@pytest.mark.parametrize(
    ("params", "shape"),
    [
        (CNNParams(), (32, 32, 3)),
        (CNNParams(filters=[8, 16, 32], kernel_size=5, dropout=0.1), (32, 32, 3)),
        (CNNParams(filters=[4, 4, 4]), (8, 8)),
    ],
)
def test_cnn(params: CNNParams, shape: Shape) -> None:
    model = build_cnn(params, shape, (4, "softmax"))
    layers = _builtin_layers("cnn", params, shape, 4)
    assert stack_size(layers, shape).params == model.count_params()


def test_keras_config() -> None:
    model = keras.Sequential([keras.Input((12,)), L.Dense(40), L.Dense(7)])
    assert model_size(_config(model), (12,), ()).params == model.count_params()


@pytest.mark.parametrize(
    ("loss", "y"),
    [
        ("mse", [float(i * 15_873) for i in range(64)]),  # integer targets up to 1,000,000
        ("huber", [float(i % 3) for i in range(64)]),
        ("sparse_categorical_crossentropy", [float(i % 7) for i in range(64)]),
        ("binary_crossentropy", [float(i % 2) for i in range(64)]),
    ],
)
def test_builtin_head_is_sized_as_the_worker_builds_it(loss: str, y: list[float]) -> None:
    """The check's count is the count of the model the worker builds from the same data."""
    spec = JobSpec.model_validate(
        {
            "seed": 1,
            "model": {"builtin": "mlp", "params": {"hidden_units": [64]}},
            "compile": {"loss": loss},
            "data": {"train": {"x": [[float(i % 5)] for i in range(64)], "y": y}},
        }
    )
    data = load_job_data(spec.data)
    head = output_head(loss, data.n_classes, 1)
    built = build_model("mlp", spec.model.params, None, (1,), head).count_params()
    check_spec(spec, Settings(max_params=built))
    with pytest.raises(SpecError, match=f"about {built:,} weights"):
        check_spec(spec, Settings(max_params=built - 1))


def test_every_allowed_name_is_one_keras_resolves_to_an_allowed_class() -> None:
    for name in catalog.INITIALIZER_NAMES:
        assert keras.initializers.get(name).__class__.__name__ in catalog.INITIALIZERS, name
    for name in catalog.REGULARIZER_NAMES:
        assert keras.regularizers.get(name).__class__.__name__ in catalog.REGULARIZERS, name
    for name in catalog.CONSTRAINT_NAMES:
        assert keras.constraints.get(name).__class__.__name__ in catalog.CONSTRAINTS, name
    for name in catalog.ACTIVATIONS:
        assert callable(keras.activations.get(name)), name
    for name in catalog.DTYPES:
        assert keras.dtype_policies.get(name).name == name
