"""A Functional model's graph as its config writes it, read without shapes.

Keras writes each layer of a Functional model with its ``inbound_nodes``: one entry
per call of the layer, holding the tensors the call takes, each named by its
``keras_history``: (layer name, call index, output index). The model's inputs and
outputs are such references too (``input_layers``, ``output_layers``). This module
reads those references, refuses one that names no layer or no call, and orders the
calls as Keras rebuilds the graph: each after the calls whose outputs it reads, and
after the layer's earlier calls; a loop is refused. Shapes are ``checks.model_size``'s.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from checks import catalog
from checks.layer_args import Loc, SizeError, show

MAX_NODES = 1000  # layer calls in a Functional graph
MAX_CALL_INPUTS = 64
MAX_IO = 64  # inputs or outputs of a model
NODE_KWARGS = {"training", "mask"}
TENSOR_KEYS = {"shape", "dtype", "keras_history"}

Ref = tuple[str, int, int]  # (layer name, call index, output index): Keras' keras_history
CallKey = tuple[str, int]  # (layer name, call index)


@dataclass(frozen=True)
class Call:
    """One call of a layer: the layer (its place in ``layers``), which call, what it reads.

    ``args`` is one tensor, or the list of tensors a merge layer (or a model of
    several inputs) is called on.
    """

    index: int
    name: str
    node: int
    args: Ref | list[Ref]
    loc: Loc

    @property
    def reads(self) -> list[Ref]:
        return self.args if isinstance(self.args, list) else [self.args]


@dataclass(frozen=True)
class Graph:
    """A Functional model's calls in an order Keras can make them.

    Attributes:
        inputs: The model's inputs in order: (name, index of its InputLayer).
        outputs: The model's outputs in order: (name, the tensor). Each is named as
            Keras names it in ``model.output_names``: by the layer that gives it.
        calls: Every layer call, each after the calls it reads.
    """

    inputs: list[tuple[str, int]]
    outputs: list[tuple[str, Ref]]
    calls: list[Call]


def output_offset(layer: Any) -> int:
    """How far ``output_layers`` counts a layer's calls from where its tensors do.

    Keras writes the calls of a Functional model inside another from 1 in
    ``output_layers`` (and subtracts 1 as it reads them back), from 0 everywhere else.
    """
    return 1 if isinstance(layer, dict) and layer.get("class_name") == "Functional" else 0


def read_graph(body: dict[str, Any], loc: Loc) -> Graph:
    """The graph of a Functional model's config ``body`` (what ``get_config()`` gives)."""
    layers = body.get("layers")
    if not isinstance(layers, list) or not layers:
        raise SizeError(loc + ("layers",), "expected a non-empty list of layers")
    index: dict[str, int] = {}
    sources: set[str] = set()
    calls: list[Call] = []
    for i, layer in enumerate(layers):
        where = loc + ("layers", i)
        name = layer.get("name") if isinstance(layer, dict) else None
        nodes = layer.get("inbound_nodes") if isinstance(layer, dict) else None
        if not isinstance(name, str) or name in index or not isinstance(nodes, list):
            raise SizeError(where, "expected a layer with a unique name and its inbound_nodes")
        index[name] = i
        if layer.get("class_name") == "InputLayer":
            if nodes:
                raise SizeError(where + ("inbound_nodes",), f"InputLayer {name!r} is never called")
            sources.add(name)
            continue
        if not nodes:
            raise SizeError(where + ("inbound_nodes",), f"layer {name!r} is never called")
        for k, node in enumerate(nodes):
            here = where + ("inbound_nodes", k)
            calls.append(Call(i, name, k, _node_args(node, here), here))
            if len(calls) > MAX_NODES:
                raise SizeError(loc + ("layers",), f"expected at most {MAX_NODES} layer calls")
    given = {(c.name, c.node) for c in calls} | {(name, 0) for name in sources}
    for call in calls:
        for ref in call.reads:
            _check_ref(ref, index, given, call.loc, f"layer {call.name!r} reads")
    inputs = _inputs(body.get("input_layers"), sources, index, loc + ("input_layers",))
    outputs = _outputs(body.get("output_layers"), layers, index, given, loc + ("output_layers",))
    return Graph(inputs, outputs, _ordered(calls, sources, loc))


def _check_ref(ref: Ref, index: dict[str, int], given: set[CallKey], loc: Loc, what: str) -> None:
    name, node, _ = ref
    if name not in index:
        raise SizeError(loc, f"{what} the output of layer {name!r}, which the model does not hold")
    if (name, node) not in given:
        raise SizeError(
            loc, f"{what} the output of call {node} of layer {name!r}, which is never made"
        )


def _ref(value: Any, loc: Loc) -> Ref:
    if (
        not isinstance(value, list)
        or len(value) != 3
        or not isinstance(value[0], str)
        or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**31 for v in value[1:]
        )
    ):
        raise SizeError(
            loc, f"received {show(value)}; expected [layer name, node index, tensor index]"
        )
    return value[0], value[1], value[2]


def _is_ref(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 3 and isinstance(value[0], str)


def refs(value: Any, loc: Loc) -> list[tuple[str | None, Ref]]:
    """``input_layers`` or ``output_layers``: one tensor, a list of them, or a dict of
    them by name; each with its dict key (None outside a dict), in Keras' order (a
    dict's keys sorted, as Keras flattens it)."""
    if _is_ref(value):
        return [(None, _ref(value, loc))]
    if isinstance(value, dict) and value and len(value) <= MAX_IO:
        if not all(isinstance(k, str) for k in value):
            raise SizeError(loc, "expected names (strings) as keys")
        return [(k, _ref(value[k], loc + (k,))) for k in sorted(value)]
    if isinstance(value, list) and value and len(value) <= MAX_IO:
        return [(None, _ref(v, loc + (i,))) for i, v in enumerate(value)]
    raise SizeError(
        loc,
        f"received {show(value)}; expected [layer name, 0, 0], a list of 1 to {MAX_IO} of "
        "them, or a dict of them by name",
    )


def _named(key: str | None, ref: Ref, loc: Loc) -> str:
    """The name Keras keys this input or output by: its layer's name."""
    if key is not None and key != ref[0]:
        raise SizeError(
            loc + (key,),
            f"received the key {key!r} for the layer {ref[0]!r}; expected the layer's name "
            "(Keras names inputs and outputs by their layers)",
        )
    return ref[0]


def _inputs(
    value: Any, sources: set[str], index: dict[str, int], loc: Loc
) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    for key, ref in refs(value, loc):
        name = _named(key, ref, loc)
        if name not in sources or ref[1:] != (0, 0):
            raise SizeError(
                loc, f"received {show(list(ref))}; expected [name, 0, 0] of an InputLayer"
            )
        if any(name == seen for seen, _ in found):
            raise SizeError(loc, f"received the input {name!r} twice")
        found.append((name, index[name]))
    unused = sorted(sources - {name for name, _ in found})
    if unused:
        raise SizeError(loc, f"the InputLayer {unused[0]!r} is not one of the model's inputs")
    return found


def _outputs(
    value: Any, layers: list[Any], index: dict[str, int], given: set[CallKey], loc: Loc
) -> list[tuple[str, Ref]]:
    found: list[tuple[str, Ref]] = []
    for key, written in refs(value, loc):
        name = _named(key, written, loc)
        node = written[1] - (output_offset(layers[index[name]]) if name in index else 0)
        ref = (name, node, written[2])
        _check_ref(ref, index, given, loc, "the model outputs")
        if any(name == seen for seen, _ in found):
            raise SizeError(
                loc,
                f"two outputs come from the layer {name!r}; fitq names outputs by their "
                "layers (model.output_names), so each must come from its own layer",
            )
        found.append((name, ref))
    return found


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


def _node_args(node: Any, loc: Loc) -> Ref | list[Ref]:
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


def _ordered(calls: list[Call], sources: set[str], loc: Loc) -> list[Call]:
    """The calls in an order Keras can make them; a loop is refused."""
    by_key = {(c.name, c.node): c for c in calls}
    waiting: dict[CallKey, list[CallKey]] = {}
    missing: dict[CallKey, int] = {}
    ready: deque[CallKey] = deque()
    for call in calls:
        key = (call.name, call.node)
        needs = {(name, node) for name, node, _ in call.reads} - {(s, 0) for s in sources}
        if call.node:
            needs.add((call.name, call.node - 1))
        missing[key] = len(needs)
        for need in needs:
            waiting.setdefault(need, []).append(key)
        if not needs:
            ready.append(key)
    order: list[Call] = []
    while ready:
        key = ready.popleft()
        order.append(by_key[key])
        for after in waiting.get(key, []):
            missing[after] -= 1
            if not missing[after]:
                ready.append(after)
    if len(order) < len(calls):
        done = {(c.name, c.node) for c in order}
        stuck = [c for c in calls if (c.name, c.node) not in done]
        names = list(dict.fromkeys(c.name for c in stuck))
        raise SizeError(
            loc + ("layers", stuck[0].index, "inbound_nodes"),
            f"layer {stuck[0].name!r} is called on tensors that need its own output: a loop "
            f"through the layers {show(names, 200)}",
        )
    return order
