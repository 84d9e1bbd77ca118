"""Checks a Keras model config against fitq's allowlist before Keras ever sees it.

Keras' own ``safe_mode`` is a denylist; this is the opposite: every serialized object
in the config must be one of Keras' own classes from ``models.catalog``, named by its
own module, with no registered (custom) name. Lambda, TFSMLayer, custom objects and
functions are refused because they are not on the list.
"""

from __future__ import annotations

from typing import Any

from models import catalog
from models.errors import SpecError

MAX_LAYERS = 200
MAX_UNITS = 8192
MAX_DEPTH = 24
SIZE_KEYS = ("units", "filters", "output_dim", "input_dim")
MODULE_CLASSES: dict[str, set[str]] = {
    "keras.layers": catalog.LAYERS,
    "keras.initializers": catalog.INITIALIZERS,
    "keras.regularizers": catalog.REGULARIZERS,
    "keras.constraints": catalog.CONSTRAINTS,
    "keras": {"Sequential", "DTypePolicy", "FloatDTypePolicy"},
    "keras.src.models.functional": {"Functional"},
}
IGNORED_KEYS = {"compile_config"}

Loc = tuple[str | int, ...]


def check_keras_config(config: dict[str, Any], loc: Loc) -> list[dict[str, Any]]:
    """Returns the problems found in ``config``, each with its path under ``loc``."""
    problems: list[dict[str, Any]] = []

    def fail(where: Loc, msg: str) -> None:
        problems.append({"loc": list(where), "msg": msg, "type": "keras_config"})

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
