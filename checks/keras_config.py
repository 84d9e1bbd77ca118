"""Checks a Keras model config against fitq's allowlist before Keras ever sees it.

Keras' own ``safe_mode`` is a denylist; this is the opposite: every serialized object
in the config must be one of Keras' own classes from ``checks.catalog``, named by its
own module, with no registered (custom) name. Lambda, TFSMLayer, custom objects and
functions are refused because they are not on the list.
"""

from __future__ import annotations

from typing import Any

from checks import catalog
from core.errors import SpecError

MAX_LAYERS = 200
MAX_UNITS = 8192
MAX_DEPTH = 24
SIZE_KEYS = ("units", "filters", "output_dim", "input_dim")
SHAPE_KEYS = ("batch_shape", "batch_input_shape", "target_shape", "input_shape")
MAX_SIDE = 65536
MODULE_CLASSES: dict[str, set[str]] = {
    "keras.layers": catalog.LAYERS,
    "keras.initializers": catalog.INITIALIZERS,
    "keras.regularizers": catalog.REGULARIZERS,
    "keras.constraints": catalog.CONSTRAINTS,
    "keras": {"Sequential", "DTypePolicy", "FloatDTypePolicy"},
    "keras.src.models.functional": {"Functional"},
}
IGNORED_KEYS = {"compile_config"}
# The keys Keras writes around a serialized object (a model, a layer).
OBJECT_KEYS = {
    "module",
    "class_name",
    "config",
    "registered_name",
    "build_config",
    "compile_config",
    "name",
    "inbound_nodes",
}

Loc = tuple[str | int, ...]


def check_keras_config(config: dict[str, Any], loc: Loc) -> list[dict[str, Any]]:
    """Returns the problems found in ``config``, each with its path under ``loc``."""
    problems: list[dict[str, Any]] = []

    def fail(where: Loc, msg: str) -> None:
        problems.append({"loc": list(where), "msg": msg, "type": "keras_config"})

    unknown = sorted(set(config) - OBJECT_KEYS)
    if unknown:
        fail(
            loc,
            f"received keys {unknown}; expected only what model.to_json() writes: "
            f"{sorted(OBJECT_KEYS)}",
        )
        return problems
    top = config.get("class_name")
    if top not in catalog.MODEL_CLASSES:
        fail(
            loc + ("class_name",),
            f"expected a Sequential or Functional model config, received class_name={top!r}",
        )
        return problems
    layers = (config.get("config") or {}).get("layers")
    if not isinstance(layers, list) or not layers:
        fail(loc + ("config", "layers"), "expected a non-empty list of layers")
        return problems
    if len(layers) > MAX_LAYERS:
        fail(
            loc + ("config", "layers"),
            f"received {len(layers)} layers, expected at most {MAX_LAYERS}",
        )

    def walk(node: Any, where: Loc, depth: int) -> None:
        if depth > MAX_DEPTH:
            fail(where, f"config nested deeper than {MAX_DEPTH} levels")
            return
        if isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, where + (i,), depth + 1)
            return
        if not isinstance(node, dict):
            return
        if "class_name" in node:
            check_object(node, where)
            extra = sorted(set(node) - OBJECT_KEYS)
            if extra:
                fail(
                    where,
                    f"received keys {extra} beside class_name; expected only {sorted(OBJECT_KEYS)}",
                )
        for key, value in node.items():
            if key in IGNORED_KEYS and depth == 0:
                continue
            if key == "activation" and isinstance(value, str):
                if value not in catalog.ACTIVATIONS:
                    fail(
                        where + (key,),
                        f"received activation {value!r}, expected one of "
                        f"{sorted(catalog.ACTIVATIONS)}",
                    )
            if key in SIZE_KEYS and isinstance(value, int) and value > MAX_UNITS:
                fail(where + (key,), f"received {key}={value}, expected at most {MAX_UNITS}")
            if key in SHAPE_KEYS and isinstance(value, list):
                dims = [d for d in value if d is not None]
                if any(not isinstance(d, int) or d < 1 or d > MAX_SIDE for d in dims):
                    fail(
                        where + (key,),
                        f"received {key}={value}; expected dimensions from 1 "
                        f"to {MAX_SIDE} (or null for the batch)",
                    )
            walk(value, where + (key,), depth + 1)

    def check_object(node: dict[str, Any], where: Loc) -> None:
        cls, module = node.get("class_name"), node.get("module")
        registered = node.get("registered_name")
        allowed = MODULE_CLASSES.get(module) if isinstance(module, str) else None
        if allowed is None or cls not in allowed:
            fail(
                where,
                f"received {module}.{cls}, which is not one of Keras' own layers, "
                "initializers, regularizers or constraints that fitq allows "
                "(Lambda and custom objects are refused)",
            )
        elif registered not in (None, cls):
            fail(
                where + ("registered_name",),
                f"received registered_name={registered!r}, expected null or {cls!r}",
            )

    walk(config, loc, 0)
    return problems


def input_shape(config: dict[str, Any]) -> tuple[int | None, ...] | None:
    """The per-sample input shape a model config declares, when it declares one."""
    layers = (config.get("config") or {}).get("layers") or []
    for layer in layers:
        if not isinstance(layer, dict):
            continue
        cfg = layer.get("config") or {}
        shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
        if isinstance(shape, list) and len(shape) >= 2:
            return tuple(shape[1:])
        if layer.get("class_name") != "InputLayer":
            build = (layer.get("build_config") or {}).get("input_shape")
            if isinstance(build, list) and len(build) >= 2:
                return tuple(build[1:])
            return None
    return None


def raise_if_problems(problems: list[dict[str, Any]]) -> None:
    if problems:
        raise SpecError(problems)


def _dim(value: Any) -> int:
    return int(value) if isinstance(value, int) and value > 0 else 1


def estimate_params(config: dict[str, Any], input_shape: tuple[int, ...]) -> int:
    """About how many weights a model config holds, walking its layers in order.

    Exact for the stacks fitq's builtins and most Sequential models make (Dense,
    Conv, Flatten, Embedding, recurrent layers); an estimate for anything else.
    """
    shape = list(input_shape)
    total = 0
    layers = (config.get("config") or {}).get("layers") or []
    for layer in layers:
        if not isinstance(layer, dict):
            continue
        cls, cfg = layer.get("class_name"), layer.get("config") or {}
        last = _dim(shape[-1]) if shape else 1
        if cls == "Dense":
            units = _dim(cfg.get("units"))
            total += (last + 1) * units
            shape = [*shape[:-1], units] if shape else [units]
        elif cls in ("Conv1D", "Conv2D", "Conv3D", "SeparableConv2D", "DepthwiseConv2D"):
            kernel = cfg.get("kernel_size", 3)
            area = 1
            for k in kernel if isinstance(kernel, list) else [kernel] * (len(shape) - 1 or 1):
                area *= _dim(k)
            filters = _dim(cfg.get("filters", last))
            total += (area * last + 1) * filters
            shape = [*shape[:-1], filters] if shape else [filters]
        elif cls == "Flatten":
            size = 1
            for d in shape:
                size *= _dim(d)
            shape = [size]
        elif cls == "Embedding":
            total += _dim(cfg.get("input_dim")) * _dim(cfg.get("output_dim"))
            shape = [*shape, _dim(cfg.get("output_dim"))]
        elif cls in ("LSTM", "GRU", "SimpleRNN"):
            units = _dim(cfg.get("units"))
            gates = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}[str(cls)]
            total += gates * (units * (units + last) + units)
            shape = [units]
        elif cls in ("MaxPooling2D", "AveragePooling2D") and len(shape) == 3:
            pool = cfg.get("pool_size", 2)
            ph, pw = (pool, pool) if isinstance(pool, int) else (pool[0], pool[1])
            shape = [
                max(1, _dim(shape[0]) // _dim(ph)),
                max(1, _dim(shape[1]) // _dim(pw)),
                shape[2],
            ]
        elif cls in ("BatchNormalization", "LayerNormalization"):
            total += 4 * last
    return total
