"""How big a Keras model config is before Keras builds it: its weights, and the numbers
one training step holds per sample.

Walks a Sequential model's layers in order, or a Functional model's graph call by
call, from the shape of the training samples, with the rules of
``checks.layer_sizes``. Every shape the config declares (an InputLayer's, the first
layer's ``input_shape``, ``build_input_shape``, a layer's ``build_config``) must be
the one the data gives: Keras builds weights from those declarations while it
deserializes the config, before any data flows.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

from checks import catalog
from checks.layer_args import LayerSize, Loc, Shape, SizeError, show
from checks.layer_sizes import Inputs, check_build_config, size_layer

BYTES_PER_NUMBER = 4  # float32
MAX_NODES = 1000  # layer calls in a Functional graph
MAX_CALL_INPUTS = 64
# Layer config keys that declare the model's input shape.
INPUT_KEYS = ("batch_shape", "batch_input_shape", "shape", "input_shape", "input_dim")
SEQUENTIAL_KEYS = {"name", "trainable", "dtype", "layers", "build_input_shape"}
FUNCTIONAL_KEYS = {"name", "trainable", "layers", "input_layers", "output_layers"}
NODE_KWARGS = {"training", "mask"}
TENSOR_KEYS = {"shape", "dtype", "keras_history"}


@dataclass(frozen=True)
class ModelSize:
    """The size of a model on samples of a given shape.

    Attributes:
        params: Weights of the model, trainable or not (``model.count_params()``).
        numbers: Numbers per sample a training step holds: the input, the output of
            every layer call, and what recurrent layers keep for the backward pass.
        output: The model's output shape, per sample.
    """

    params: int
    numbers: int
    output: Shape

    def activation_bytes(self, batch: int) -> int:
        """Bytes of activations for a batch of ``batch`` samples, at 4 bytes a number."""
        return BYTES_PER_NUMBER * batch * self.numbers


def stack_size(layers: list[dict[str, Any]], input_shape: Shape) -> ModelSize:
    """The size of layers applied one after the other (a built-in architecture)."""
    return _sequential({"layers": layers}, input_shape, (), ())


def model_size(config: dict[str, Any], input_shape: Shape, loc: Loc) -> ModelSize:
    """The size of a Sequential or Functional model config on samples of ``input_shape``.

    Raises ``SizeError`` (with the path of the offending field under ``loc``) for a
    config it cannot size or whose declared shapes are not the data's.
    """
    body = config.get("config")
    if not isinstance(body, dict):
        raise SizeError(loc + ("config",), "expected the model's config object")
    # Keras builds the whole model from this shape as it deserializes it.
    check_build_config(config.get("build_config"), input_shape, loc + ("build_config",))
    if config.get("class_name") == "Functional":
        return _functional(body, input_shape, loc + ("config",), loc)
    return _sequential(body, input_shape, loc + ("config",), loc)


def _check_keys(body: dict[str, Any], allowed: set[str], loc: Loc) -> None:
    extra = sorted(set(body) - allowed)
    if extra:
        raise SizeError(
            loc, f"received keys {show(extra)}; expected only {sorted(allowed)} in a model config"
        )


def _declared(layer: Any) -> dict[str, Any]:
    """The input shape declarations in a layer's config (``input_dim`` is an
    Embedding's vocabulary, not a shape)."""
    config = layer.get("config") if isinstance(layer, dict) else None
    if not isinstance(config, dict):
        return {}
    keys = INPUT_KEYS[:-1] if layer.get("class_name") == "Embedding" else INPUT_KEYS
    return {key: config[key] for key in keys if config.get(key) is not None}


def _check_declared(layer: Any, data: Shape, model_loc: Loc) -> None:
    """Refuses an input shape a layer's config declares that is not the data's."""
    for key, value in _declared(layer).items():
        if key in ("batch_shape", "batch_input_shape"):
            declared = value[1:] if isinstance(value, list) and value else value
        else:
            declared = [value] if key == "input_dim" else value
        fits = isinstance(declared, list) and len(declared) == len(data) and _fits(declared, data)
        if not fits:
            raise SizeError(
                model_loc,
                f"the model's input shape is {show(declared)}, "
                f"but the training samples have shape {show(list(data))}",
            )


def _sequential(body: dict[str, Any], data: Shape, loc: Loc, model_loc: Loc) -> ModelSize:
    _check_keys(body, SEQUENTIAL_KEYS, loc)
    layers = body.get("layers")
    if not isinstance(layers, list) or not layers:
        raise SizeError(loc + ("layers",), "expected a non-empty list of layers")
    build = body.get("build_input_shape")
    if build is not None and not (
        isinstance(build, list) and len(build) == len(data) + 1 and _fits(build[1:], data)
    ):
        raise SizeError(
            loc + ("build_input_shape",),
            f"received {show(build)}, but the training samples have shape {show(list(data))}; "
            f"expected {show([None, *data])}",
        )
    shape, params, numbers = data, 0, math.prod(data)
    for i, layer in enumerate(layers):
        where = loc + ("layers", i)
        is_input = isinstance(layer, dict) and layer.get("class_name") == "InputLayer"
        if i == 0:
            _check_declared(layer, data, model_loc)
        else:
            _no_declared_shape(layer, where)
        if is_input:
            if i != 0:
                raise SizeError(
                    where, "an InputLayer is only the first layer of a Sequential model"
                )
            continue
        size = size_layer(layer, shape, where)
        params, numbers, shape = params + size.params, numbers + size.numbers, size.output
    return ModelSize(params, numbers, shape)


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


Ref = tuple[str, int, int]  # (layer name, call index, output index): Keras' keras_history


def _ref(value: Any, loc: Loc) -> Ref:
    if (
        not isinstance(value, list)
        or len(value) != 3
        or not isinstance(value[0], str)
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value[1:])
    ):
        raise SizeError(loc, f"received {show(value)}; expected [layer name, node index, 0]")
    return value[0], value[1], value[2]


def _one_ref(value: Any, loc: Loc, what: str) -> Ref:
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], list):
        value = value[0]
    if isinstance(value, list) and value and isinstance(value[0], list):
        raise SizeError(loc, f"received {len(value)} {what}s; fitq trains models with one {what}")
    return _ref(value, loc)


def _tensor(value: Any, loc: Loc) -> Ref:
    ok = (
        isinstance(value, dict)
        and set(value) == {"class_name", "config"}
        and value["class_name"] == "__keras_tensor__"
        and isinstance(value["config"], dict)
        and set(value["config"]) <= TENSOR_KEYS
        and str(value["config"].get("dtype", "float32")) in catalog.DTYPES
    )
    if not ok:
        raise SizeError(
            loc, f"received {show(value)}; expected a tensor as model.to_json() writes it"
        )
    return _ref(value["config"].get("keras_history"), loc + ("config", "keras_history"))


def _node_refs(node: Any, loc: Loc) -> list[Ref] | Ref:
    """The tensors one layer call takes: one, or a list of them."""
    if not isinstance(node, dict) or set(node) != {"args", "kwargs"}:
        raise SizeError(loc, f"received {show(node)}; expected {{args, kwargs}}")
    kwargs = node["kwargs"]
    if not isinstance(kwargs, dict) or any(
        k not in NODE_KWARGS or not (v is None or isinstance(v, bool)) for k, v in kwargs.items()
    ):
        raise SizeError(
            loc + ("kwargs",),
            f"received {show(kwargs)}; expected no call arguments besides "
            f"{sorted(NODE_KWARGS)} (true, false or null)",
        )
    args = node["args"]
    if not isinstance(args, list) or len(args) != 1:
        raise SizeError(loc + ("args",), f"received {show(args)}; expected [tensor] or [[tensors]]")
    first = args[0]
    if isinstance(first, list):
        if not 0 < len(first) <= MAX_CALL_INPUTS:
            raise SizeError(loc + ("args", 0), f"expected 1 to {MAX_CALL_INPUTS} tensors")
        return [_tensor(t, loc + ("args", 0, i)) for i, t in enumerate(first)]
    return _tensor(first, loc + ("args", 0))


def _functional(body: dict[str, Any], data: Shape, loc: Loc, model_loc: Loc) -> ModelSize:
    _check_keys(body, FUNCTIONAL_KEYS, loc)
    layers = body.get("layers")
    if not isinstance(layers, list) or not layers:
        raise SizeError(loc + ("layers",), "expected a non-empty list of layers")
    source = _one_ref(body.get("input_layers"), loc + ("input_layers",), "input")
    target = _one_ref(body.get("output_layers"), loc + ("output_layers",), "output")
    outputs: dict[tuple[str, int], Shape] = {}
    calls: list[tuple[int, str, list[Any]]] = []
    index: dict[str, int] = {}
    for i, layer in enumerate(layers):
        where = loc + ("layers", i)
        name = layer.get("name") if isinstance(layer, dict) else None
        nodes = layer.get("inbound_nodes") if isinstance(layer, dict) else None
        if not isinstance(name, str) or name in index or not isinstance(nodes, list):
            raise SizeError(where, "expected a layer with a unique name and its inbound_nodes")
        index[name] = i
        if layer.get("class_name") == "InputLayer":
            if name != source[0] or nodes:
                raise SizeError(where, f"expected one InputLayer, the model's input {source[0]!r}")
            _check_declared(layer, data, model_loc)
            outputs[(name, 0)] = data
            continue
        _no_declared_shape(layer, where)
        if not nodes:
            raise SizeError(where + ("inbound_nodes",), f"layer {name!r} is never called")
        calls.append((i, name, nodes))
    if (source[0], 0) not in outputs or source[1:] != (0, 0):
        raise SizeError(loc + ("input_layers",), f"expected [{source[0]!r}, 0, 0], an InputLayer")
    if sum(len(nodes) for _, _, nodes in calls) > MAX_NODES:
        raise SizeError(loc + ("layers",), f"expected at most {MAX_NODES} layer calls")
    params, numbers = _walk(layers, calls, outputs, loc)
    if (target[0], target[1]) not in outputs or target[2] != 0:
        raise SizeError(
            loc + ("output_layers",), f"received {show(list(target))}, which no call gives"
        )
    return ModelSize(params, math.prod(data) + numbers, outputs[(target[0], target[1])])


def _walk(
    layers: list[Any],
    calls: list[tuple[int, str, list[Any]]],
    outputs: dict[tuple[str, int], Shape],
    loc: Loc,
) -> tuple[int, int]:
    """Calls every layer on its inputs once they are known, as Keras rebuilds a
    Functional graph: a layer's calls in their order, each after the calls it reads."""
    Node = tuple[str, int]
    refs: dict[Node, list[Ref] | Ref] = {}
    where: dict[Node, tuple[int, Loc]] = {}
    waiting: dict[Node, list[Node]] = {}
    missing: dict[Node, int] = {}
    ready: deque[Node] = deque()
    for i, name, nodes in calls:
        for k, node in enumerate(nodes):
            here = loc + ("layers", i, "inbound_nodes", k)
            refs[(name, k)] = _node_refs(node, here)
            where[(name, k)] = (i, here)
            needs = {(n, c) for n, c, _ in _as_list(refs[(name, k)])}
            needs |= {(name, k - 1)} if k else set()
            needs -= set(outputs)
            missing[(name, k)] = len(needs)
            for need in needs:
                waiting.setdefault(need, []).append((name, k))
            if not needs:
                ready.append((name, k))
    params: dict[str, int] = {}
    numbers = 0
    while ready:
        call = ready.popleft()
        i, here = where[call]
        size = size_layer(layers[i], _shapes(refs[call], outputs, here), loc + ("layers", i))
        if params.setdefault(call[0], size.params) != size.params:
            raise SizeError(here, f"layer {call[0]!r} is called on inputs of another shape")
        numbers += size.numbers
        outputs[call] = size.output
        for after in waiting.get(call, []):
            missing[after] -= 1
            if not missing[after]:
                ready.append(after)
    for call, (i, _) in where.items():
        if call not in outputs:
            raise SizeError(
                loc + ("layers", i, "inbound_nodes"),
                f"layer {call[0]!r} is called on tensors no call gives "
                "(a loop, or a missing layer)",
            )
    return sum(params.values()), numbers


def _as_list(refs: list[Ref] | Ref) -> list[Ref]:
    return refs if isinstance(refs, list) else [refs]


def _shapes(refs: list[Ref] | Ref, outputs: dict[tuple[str, int], Shape], here: Loc) -> Inputs:
    """The shapes of the tensors ``refs`` names, all computed by now."""
    shapes = []
    for name, node, tensor in _as_list(refs):
        if tensor != 0:
            raise SizeError(here, f"received output {tensor} of {name!r}; its layer has one")
        shapes.append(outputs[(name, node)])
    return shapes if isinstance(refs, list) else shapes[0]


__all__ = ["LayerSize", "ModelSize", "SizeError", "model_size", "stack_size"]
