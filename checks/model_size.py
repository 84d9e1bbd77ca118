"""How big a Keras model config is before Keras builds it: its weights, and the numbers
one training step holds per sample.

Walks a Sequential model's layers in order, or a Functional model's graph call by
call (``checks.model_graph``), from the shapes of the training samples, with the
rules of ``checks.layer_sizes``; a model inside a model is sized on the tensors it is
called on. Every shape the config declares (an InputLayer's, the first layer's
``input_shape``, ``build_input_shape``, a layer's ``build_config``) must be the one
the data gives: Keras builds weights from those declarations while it deserializes
the config, before any data flows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from checks import catalog
from checks.keras_config import model_form
from checks.layer_args import LayerSize, Loc, Shape, SizeError, show
from checks.layer_sizes import Inputs, check_build_config, size_layer
from checks.model_graph import MAX_NODES, CallKey, Graph, Ref, read_graph

BYTES_PER_NUMBER = 4  # float32
# Layer calls sized in all, a model inside a model counted at each of its calls.
MAX_SIZED_CALLS = 4 * MAX_NODES
# Layer config keys that declare the model's input shape.
INPUT_KEYS = ("batch_shape", "batch_input_shape", "shape", "input_shape", "input_dim")
SEQUENTIAL_KEYS = {"name", "trainable", "dtype", "layers", "build_input_shape"}
FUNCTIONAL_KEYS = {"name", "trainable", "layers", "input_layers", "output_layers"}
# The name Keras gives the InputLayer it adds to a Sequential model built without one.
SEQUENTIAL_INPUT = "input_layer"


@dataclass(frozen=True)
class ModelSize:
    """The size of a model on samples of given shapes.

    Attributes:
        params: Weights of the model, trainable or not (``model.count_params()``).
        numbers: Numbers per sample a training step holds: the inputs, the output of
            every layer call, and what recurrent layers keep for the backward pass.
        inputs: The model's input shapes, per sample, by name in the model's order:
            the names Keras keys a dict of inputs by (its InputLayers' names).
        outputs: The model's output shapes, per sample, by name in the model's
            order: ``model.output_names`` (the names of the layers that give them).
    """

    params: int
    numbers: int
    inputs: dict[str, Shape]
    outputs: dict[str, Shape]

    @property
    def output(self) -> Shape:
        """The model's sole (or first) output shape, per sample."""
        return next(iter(self.outputs.values()))

    def activation_bytes(self, batch: int) -> int:
        """Bytes of activations for a batch of ``batch`` samples, at 4 bytes a number."""
        return BYTES_PER_NUMBER * batch * self.numbers


def stack_size(layers: list[dict[str, Any]], input_shape: Shape) -> ModelSize:
    """The size of layers applied one after the other (a built-in architecture)."""
    model = _Model("Sequential", {"layers": layers}, (), (), None)
    return _Sizer().sequential(model, [input_shape], "the training samples")


def model_io(config: dict[str, Any], loc: Loc = ()) -> tuple[list[str], list[str]]:
    """The names of a model config's inputs and outputs, in the model's order.

    Inputs are named by their InputLayers, outputs by the layers that give them
    (``model.output_names``): the keys Keras reads a dict of inputs, targets or
    losses by. A Sequential model whose config holds no InputLayer is named
    ``input_layer`` here; Keras names it as it builds the model (``input_layer``,
    ``input_layer_1``, ... in one process). Raises ``SizeError`` for a config whose
    graph cannot be read.
    """
    model = _Model.read(config, loc)
    if model.cls == "Functional":
        graph = read_graph(model.body, model.loc)
        return [name for name, _ in graph.inputs], [name for name, _ in graph.outputs]
    return _sequential_io(model)


def model_size(config: dict[str, Any], inputs: Shape | Mapping[str, Shape], loc: Loc) -> ModelSize:
    """The size of a Sequential or Functional model config on samples of these shapes.

    ``inputs`` is the shape of the sole input's samples, or the shapes by input name
    (as ``model_io`` names them). Raises ``SizeError`` (with the path of the offending
    field under ``loc``) for a config it cannot size or whose declared shapes are not
    the data's.
    """
    model = _Model.read(config, loc)
    names, _ = model_io(config, loc)
    if isinstance(inputs, Mapping):
        if set(inputs) != set(names):
            raise SizeError(
                model.io_loc,
                f"the model's inputs are {show(names, 200)}, but the data gives "
                f"{show(sorted(inputs), 200)}; expected the same names",
            )
        shapes = [tuple(inputs[name]) for name in names]
        what = "the training data for this input"
    else:
        if len(names) != 1:
            raise SizeError(
                model.io_loc,
                f"the model has {len(names)} inputs {show(names, 200)}, but the data gives one "
                "array; expected the inputs as a dict keyed by these names",
            )
        shapes, what = [tuple(inputs)], "the training samples"
    return _Sizer().model(model, shapes, what)


@dataclass(frozen=True)
class _Model:
    """A model config in either form Keras writes: ``model.to_json()`` or
    ``serialize_keras_object(model)`` (``{class_name, config, ...}``), or the bare
    ``model.get_config()`` (``body`` at ``loc`` is the same in both)."""

    cls: str
    body: dict[str, Any]
    loc: Loc  # of the body
    model_loc: Loc  # of the whole config
    build: Any  # the model's build_config

    @property
    def io_loc(self) -> Loc:
        return self.loc + (("input_layers",) if self.cls == "Functional" else ("layers", 0))

    @classmethod
    def read(cls, config: Any, loc: Loc) -> _Model:
        form = model_form(config)
        if form is None:
            raise SizeError(loc, "expected a Sequential or Functional model config")
        if form.bare:
            assert isinstance(config, dict)
            body, body_loc, build = config, loc, None
        else:
            body, body_loc, build = (
                config.get("config"),
                loc + ("config",),
                config.get("build_config"),
            )
        if not isinstance(body, dict):
            raise SizeError(body_loc, "expected the model's config object")
        keys = FUNCTIONAL_KEYS if form.cls == "Functional" else SEQUENTIAL_KEYS
        extra = sorted(set(body) - keys)
        if extra:
            raise SizeError(
                body_loc,
                f"received keys {show(extra)}; expected only {sorted(keys)} in a {form.cls} config",
            )
        layers = body.get("layers")
        if not isinstance(layers, list) or not layers:
            raise SizeError(body_loc + ("layers",), "expected a non-empty list of layers")
        return cls(form.cls, body, body_loc, loc, build)


def _layer_name(layer: Any, default: str) -> str:
    config = layer.get("config") if isinstance(layer, dict) else None
    name = config.get("name") if isinstance(config, dict) else None
    return name if isinstance(name, str) else default


def _call_name(layer: Any) -> str:
    """A layer's name: a Functional model writes it beside the layer's config."""
    name = layer.get("name") if isinstance(layer, dict) else None
    return name if isinstance(name, str) else _layer_name(layer, "?")


def _sequential_io(model: _Model) -> tuple[list[str], list[str]]:
    layers = model.body["layers"]
    first, last = layers[0], layers[-1]
    is_input = isinstance(first, dict) and first.get("class_name") == "InputLayer"
    source = _layer_name(first, SEQUENTIAL_INPUT) if is_input else SEQUENTIAL_INPUT
    return [source], [_layer_name(last, source)]


def _is_model(layer: Any) -> bool:
    if not isinstance(layer, dict):
        return False
    modules = catalog.MODEL_CLASSES.get(str(layer.get("class_name")))
    module = layer.get("module")
    return modules is not None and isinstance(module, str) and module in modules


def declared_input_shape(config: dict[str, Any]) -> Shape | None:
    """The sample shape a model config declares, when every dimension is known: its
    ``build_config``, a Functional model's InputLayer, or a Sequential model's first
    layer or ``build_input_shape``."""
    body = config.get("config")
    layers = body.get("layers") if isinstance(body, dict) else None
    if not isinstance(body, dict) or not isinstance(layers, list):
        return None
    candidates: list[Any] = []
    build = config.get("build_config")
    if isinstance(build, dict):
        candidates.append(build.get("input_shape"))
    candidates.append(body.get("build_input_shape"))
    if config.get("class_name") == "Functional":
        firsts = [
            layer
            for layer in layers
            if isinstance(layer, dict) and layer.get("class_name") == "InputLayer"
        ]
    else:
        firsts = layers[:1]
    for layer in firsts[:1]:
        for key, value in _declared(layer).items():
            with_batch = key in ("batch_shape", "batch_input_shape")
            candidates.append(value if with_batch else [None, *_as_dims(value)])
    for shape in candidates:
        if isinstance(shape, list) and len(shape) > 1 and all(_known(d) for d in shape[1:]):
            return tuple(shape[1:])
    return None


def _as_dims(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _known(dim: Any) -> bool:
    return isinstance(dim, int) and not isinstance(dim, bool) and dim > 0


def _declared(layer: Any) -> dict[str, Any]:
    """The input shape declarations in a layer's config (``input_dim`` is an
    Embedding's vocabulary, not a shape)."""
    config = layer.get("config") if isinstance(layer, dict) else None
    if not isinstance(config, dict) or _is_model(layer):
        return {}
    keys = INPUT_KEYS[:-1] if layer.get("class_name") == "Embedding" else INPUT_KEYS
    return {key: config[key] for key in keys if config.get(key) is not None}


def _check_declared(layer: Any, data: Shape, where: Loc, name: str, what: str) -> None:
    """Refuses an input shape a layer's config declares that is not the data's, and an
    InputLayer that declares none (Keras cannot build it)."""
    declarations = _declared(layer)
    if not declarations and isinstance(layer, dict) and layer.get("class_name") == "InputLayer":
        raise SizeError(
            where + ("config",),
            f"InputLayer {name!r} declares no shape; expected batch_shape: [null, ...] as "
            "model.to_json() writes it",
        )
    for key, value in declarations.items():
        if key in ("batch_shape", "batch_input_shape"):
            declared = value[1:] if isinstance(value, list) and value else value
        else:
            declared = [value] if key == "input_dim" else value
        fits = isinstance(declared, list) and len(declared) == len(data) and _fits(declared, data)
        if not fits:
            raise SizeError(
                where + ("config", key),
                f"input {name!r}: the model's input shape is {show(declared)}, "
                f"but {what} have shape {show(list(data))}",
            )


def _fits(declared: list[Any], data: Shape) -> bool:
    return all(
        d is None or (isinstance(d, int) and d == g) for d, g in zip(declared, data, strict=True)
    )


def _no_declared_shape(layer: Any, where: Loc) -> None:
    for key, value in _declared(layer).items():
        raise SizeError(
            where + ("config", key),
            f"received {key}={show(value)}; only the model's input declares the input shape",
        )


@dataclass(frozen=True)
class _Called:
    """What one call of a layer or of a model gives (its outputs) and holds."""

    outputs: list[Shape]
    params: int
    numbers: int


class _Sizer:
    """Sizes a model and the models inside it, within one budget of layer calls."""

    def __init__(self) -> None:
        self.calls_left = MAX_SIZED_CALLS

    def model(self, model: _Model, shapes: list[Shape], what: str) -> ModelSize:
        """``shapes``: the inputs' shapes in the model's order."""
        # Keras builds the whole model from this shape as it deserializes it.
        build = shapes[0] if len(shapes) == 1 else list(shapes)
        check_build_config(model.build, build, model.model_loc + ("build_config",))
        if model.cls == "Functional":
            return self.functional(model, read_graph(model.body, model.loc), shapes, what)
        return self.sequential(model, shapes, what)

    def call(self, layer: Any, inputs: Inputs, where: Loc) -> _Called:
        """One call of a layer, or of a model inside the model, on ``inputs``."""
        self.calls_left -= 1
        if self.calls_left < 0:
            raise SizeError(where, f"expected at most {MAX_SIZED_CALLS} layer calls in all")
        name = _call_name(layer)
        try:
            if not _is_model(layer):
                size: LayerSize = size_layer(layer, inputs, where)
                return _Called([size.output], size.params, size.numbers)
            inner = _Model.read(layer, where)
            shapes = list(inputs) if isinstance(inputs, list) else [inputs]
            n_in = len(model_io(layer, where)[0])
            if n_in != len(shapes):
                raise SizeError(where, f"has {n_in} inputs, but is called on {len(shapes)} tensors")
            sub = self.model(inner, shapes, "the tensors it is called on")
            held = sub.numbers - sum(math.prod(s) for s in shapes)
            return _Called(list(sub.outputs.values()), sub.params, held)
        except SizeError as exc:
            raise SizeError(exc.loc, f"layer {name[:60]!r}: {exc.msg}") from None

    def sequential(self, model: _Model, shapes: list[Shape], what: str) -> ModelSize:
        (data,) = shapes
        body, loc = model.body, model.loc
        build = body.get("build_input_shape")
        if build is not None and not (
            isinstance(build, list) and len(build) == len(data) + 1 and _fits(build[1:], data)
        ):
            raise SizeError(
                loc + ("build_input_shape",),
                f"received {show(build)}, but {what} have shape {show(list(data))}; "
                f"expected {show([None, *data])}",
            )
        (source,), (target,) = _sequential_io(model)
        shape, params, numbers = data, 0, math.prod(data)
        for i, layer in enumerate(body["layers"]):
            where = loc + ("layers", i)
            is_input = isinstance(layer, dict) and layer.get("class_name") == "InputLayer"
            if i == 0:
                _check_declared(layer, data, where, source, what)
            else:
                _no_declared_shape(layer, where)
            if is_input:
                if i != 0:
                    raise SizeError(
                        where, "an InputLayer is only the first layer of a Sequential model"
                    )
                continue
            called = self.call(layer, shape, where)
            if len(called.outputs) != 1:
                raise SizeError(where, "a layer of a Sequential model gives one output")
            params, numbers, shape = (
                params + called.params,
                numbers + called.numbers,
                called.outputs[0],
            )
        return ModelSize(params, numbers, {source: data}, {target: shape})

    def functional(self, model: _Model, graph: Graph, shapes: list[Shape], what: str) -> ModelSize:
        layers, loc = model.body["layers"], model.loc
        outputs: dict[CallKey, list[Shape]] = {}
        for (name, i), shape in zip(graph.inputs, shapes, strict=True):
            _check_declared(layers[i], shape, loc + ("layers", i), name, what)
            outputs[(name, 0)] = [shape]
        params: dict[str, int] = {}
        numbers = sum(math.prod(s) for s in shapes)
        for call in graph.calls:
            where = loc + ("layers", call.index)
            _no_declared_shape(layers[call.index], where)
            if isinstance(call.args, list):
                args: Inputs = [_shape(outputs, ref, call.loc) for ref in call.args]
            else:
                args = _shape(outputs, call.args, call.loc)
            called = self.call(layers[call.index], args, where)
            if params.setdefault(call.name, called.params) != called.params:
                raise SizeError(
                    call.loc, f"layer {call.name!r} is called on inputs of another shape"
                )
            numbers += called.numbers
            outputs[(call.name, call.node)] = called.outputs
        given = {
            name: _shape(outputs, ref, loc + ("output_layers",)) for name, ref in graph.outputs
        }
        source = {name: shape for (name, _), shape in zip(graph.inputs, shapes, strict=True)}
        return ModelSize(sum(params.values()), numbers, source, given)


def _shape(outputs: dict[CallKey, list[Shape]], ref: Ref, loc: Loc) -> Shape:
    """The shape of the tensor ``ref`` names, all its layer's outputs computed by now."""
    name, node, tensor = ref
    given = outputs[(name, node)]
    if tensor >= len(given):
        raise SizeError(
            loc,
            f"received output {tensor} of call {node} of {name!r}; it gives {len(given)}",
        )
    return given[tensor]


__all__ = ["LayerSize", "ModelSize", "SizeError", "model_io", "model_size", "stack_size"]
