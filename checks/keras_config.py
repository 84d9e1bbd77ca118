"""Checks a Keras model config against fitq's allowlist before Keras ever sees it.

Keras' own ``safe_mode`` is a denylist; this is the opposite: every serialized object
in the config must be one of Keras' own classes from ``checks.catalog``, named by its
own module, with no registered (custom) name. Lambda, TFSMLayer, custom objects and
functions are refused because they are not on the list. A string that names a Keras
object (an activation, initializer, regularizer, constraint or dtype) must be one of
the names Keras resolves to an allowed class. Shapes and sizes are checked in
``checks.model_size``.

A config comes in the forms Keras gives: ``model.to_json()`` (parsed) and
``keras.saving.serialize_keras_object(model)`` write the model as an object
(``{module, class_name, config, ...}``); ``model.get_config()`` writes only that
object's ``config``, which is read as a Functional model's when it holds
``input_layers`` or ``output_layers``, as a Sequential model's otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from checks import catalog

MAX_LAYERS = 200
MAX_UNITS = 8192
MAX_DEPTH = 24
SIZE_KEYS = ("units", "filters", "output_dim", "input_dim")
SHAPE_KEYS = ("batch_shape", "batch_input_shape", "target_shape", "input_shape", "shape")
MAX_SIDE = 65536
MODULE_CLASSES: dict[str, set[str]] = {
    "keras.layers": catalog.LAYERS,
    "keras.initializers": catalog.INITIALIZERS,
    "keras.regularizers": catalog.REGULARIZERS,
    "keras.constraints": catalog.CONSTRAINTS,
    "keras": {"Sequential", "DTypePolicy", "FloatDTypePolicy"},
    "keras.src.models.functional": {"Functional"},
}
DTYPE_POLICIES = {"DTypePolicy", "FloatDTypePolicy"}
IGNORED_KEYS = {"compile_config"}
# Checked call by call, with the shapes, by checks.model_size.
GRAPH_KEYS = {"inbound_nodes"}
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
    # model.save() marks an object used in several places (a dtype policy) with an
    # id, so that load_model() builds it once; an integer, nothing more.
    "shared_object_id",
}


# What model.get_config() holds: a Sequential model's keys, a Functional model's.
BARE_KEYS = {"name", "trainable", "dtype", "layers", "build_input_shape"} | {
    "input_layers",
    "output_layers",
}
# The module Keras writes for each model class (``serialize_keras_object``).
MODEL_MODULES = {"Sequential": "keras", "Functional": "keras.src.models.functional"}


@dataclass(frozen=True)
class ModelForm:
    """Which model a config is, and whether it is a bare ``model.get_config()``."""

    cls: str
    bare: bool


def model_form(config: Any) -> ModelForm | None:
    """The model ``config`` is, or None when it is neither form of a model config."""
    if not isinstance(config, dict):
        return None
    if "class_name" in config:
        cls = config["class_name"]
        return (
            ModelForm(cls, False) if isinstance(cls, str) and cls in catalog.MODEL_CLASSES else None
        )
    if not isinstance(config.get("layers"), list):
        return None
    functional = "input_layers" in config or "output_layers" in config
    return ModelForm("Functional" if functional else "Sequential", True)


def keras_object(config: dict[str, Any]) -> dict[str, Any]:
    """The config as ``serialize_keras_object`` writes it, for
    ``keras.saving.deserialize_keras_object``; without a ``compile_config``, its own
    or a model's inside it (fitq compiles the model from the job's ``compile``)."""
    form = model_form(config)
    if form is not None and form.bare:
        config = {
            "module": MODEL_MODULES[form.cls],
            "class_name": form.cls,
            "config": config,
            "registered_name": None,
        }
    return _uncompiled(config)


def _uncompiled(model: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in model.items() if k != "compile_config"}
    body = model.get("config")
    if isinstance(body, dict) and isinstance(body.get("layers"), list):
        layers = [
            _uncompiled(layer) if model_form(layer) is not None else layer
            for layer in body["layers"]
        ]
        out["config"] = {**body, "layers": layers}
    return out


@dataclass(frozen=True)
class NamedKind:
    """What a layer argument names: the strings, and the objects, Keras accepts there."""

    what: str
    names: set[str]  # strings accepted; empty: an object is expected
    module: str | None  # the module of an object accepted; None: no object
    classes: set[str]


ACTIVATION = NamedKind("activation", catalog.ACTIVATIONS, None, set())
INITIALIZER = NamedKind(
    "initializer", catalog.INITIALIZER_NAMES, "keras.initializers", catalog.INITIALIZERS
)
REGULARIZER = NamedKind(
    "regularizer", catalog.REGULARIZER_NAMES, "keras.regularizers", catalog.REGULARIZERS
)
CONSTRAINT = NamedKind(
    "constraint", catalog.CONSTRAINT_NAMES, "keras.constraints", catalog.CONSTRAINTS
)
DTYPE = NamedKind("dtype", catalog.DTYPES, "keras", DTYPE_POLICIES)
LAYER = NamedKind("layer", set(), "keras.layers", catalog.LAYERS)


def named_kind(key: str) -> NamedKind | None:
    """The kind of Keras object a layer argument called ``key`` names, if any."""
    if key in ("activation", "recurrent_activation"):
        return ACTIVATION
    if key == "dtype":
        return DTYPE
    if key in ("layer", "backward_layer"):
        return LAYER
    for suffix, kind in (
        ("_initializer", INITIALIZER),
        ("_regularizer", REGULARIZER),
        ("_constraint", CONSTRAINT),
    ):
        if key.endswith(suffix):
            return kind
    return None


Loc = tuple[str | int, ...]


def check_keras_config(config: dict[str, Any], loc: Loc) -> list[dict[str, Any]]:
    """Returns the problems found in ``config``, each with its path under ``loc``."""
    check = _ConfigCheck()
    if check.model_keys(config, loc):
        check.walk(config, loc, 0)
    return check.problems


class _ConfigCheck:
    """Walks a model config once, gathering every problem with its path."""

    def __init__(self) -> None:
        self.problems: list[dict[str, Any]] = []

    def fail(self, where: Loc, msg: str) -> None:
        self.problems.append({"loc": list(where), "msg": msg, "type": "keras_config"})

    def model_keys(self, config: dict[str, Any], loc: Loc) -> bool:
        """The config is a model's with its layers; False when nothing more can be read."""
        form = model_form(config)
        keys = BARE_KEYS if form is not None and form.bare else OBJECT_KEYS
        unknown = sorted(set(config) - keys)
        if unknown:
            self.fail(
                loc,
                f"received keys {[str(k)[:40] for k in unknown[:10]]}; expected only what "
                f"model.to_json() writes: {sorted(OBJECT_KEYS)}, or model.get_config(): "
                f"{sorted(BARE_KEYS)}",
            )
            return False
        if form is None:
            top = config.get("class_name")
            self.fail(
                loc + (("class_name",) if "class_name" in config else ()),
                f"expected a Sequential or Functional model config (model.to_json(), "
                f"model.get_config()), received class_name={str(top)[:60]!r}",
            )
            return False
        body, body_loc = (config, loc) if form.bare else (config.get("config"), loc + ("config",))
        layers = body.get("layers") if isinstance(body, dict) else None
        if not isinstance(layers, list) or not layers:
            self.fail(body_loc + ("layers",), "expected a non-empty list of layers")
            return False
        if len(layers) > MAX_LAYERS:
            self.fail(
                body_loc + ("layers",),
                f"received {len(layers)} layers, expected at most {MAX_LAYERS}",
            )
        return True

    def walk(self, node: Any, where: Loc, depth: int) -> None:
        if depth > MAX_DEPTH:
            self.fail(where, f"config nested deeper than {MAX_DEPTH} levels")
            return
        if isinstance(node, list):
            for i, item in enumerate(node):
                self.walk(item, where + (i,), depth + 1)
            return
        if not isinstance(node, dict):
            return
        if "class_name" in node:
            self.keras_object(node, where)
            extra = sorted(set(node) - OBJECT_KEYS)
            if extra:
                self.fail(
                    where,
                    f"received keys {extra} beside class_name; expected only {sorted(OBJECT_KEYS)}",
                )
        for key, value in node.items():
            if (key in IGNORED_KEYS and (depth == 0 or model_form(node))) or key in GRAPH_KEYS:
                continue
            self.argument(key, value, where + (key,))
            self.walk(value, where + (key,), depth + 1)

    def argument(self, key: Any, value: Any, where: Loc) -> None:
        """A value Keras reads by its key: a name of a Keras object, a size, a shape."""
        kind = named_kind(key) if isinstance(key, str) else None
        if kind is not None:
            self.named(kind, value, where)
        if key in SIZE_KEYS and isinstance(value, int) and value > MAX_UNITS:
            self.fail(where, f"received {key}={value}, expected at most {MAX_UNITS}")
        if key in SHAPE_KEYS and isinstance(value, list):
            self.shape(key, value, where)

    def named(self, kind: NamedKind, value: Any, where: Loc) -> None:
        if isinstance(value, str) and kind.names:
            if value not in kind.names:
                self.fail(
                    where,
                    f"received {kind.what} {value[:60]!r}, expected one of {sorted(kind.names)}",
                )
        elif isinstance(value, dict) and kind.module is not None:
            module, cls = value.get("module"), value.get("class_name")
            if module != kind.module or not isinstance(cls, str) or cls not in kind.classes:
                self.fail(
                    where,
                    f"received {str(module)[:40]}.{str(cls)[:40]}; expected one of "
                    f"{sorted(kind.classes)} from {kind.module} ({kind.what})",
                )
        elif value is not None:
            expected = "one of " + str(sorted(kind.names)) if kind.names else "an object"
            self.fail(
                where, f"received {str(value)[:60]}; expected a {kind.what}, {expected}, or null"
            )

    def shape(self, key: str, value: list[Any], where: Loc) -> None:
        if value and all(isinstance(d, list) for d in value):
            for i, dims in enumerate(value):
                self.shape(key, dims, where + (i,))
            return
        dims = [d for d in value if d is not None and not (key == "target_shape" and d == -1)]
        if any(not isinstance(d, int) or d < 1 or d > MAX_SIDE for d in dims):
            self.fail(
                where,
                f"received {key}={str(value)[:80]}; expected dimensions from 1 "
                f"to {MAX_SIDE} (or null for the batch)",
            )

    def keras_object(self, node: dict[str, Any], where: Loc) -> None:
        """An object of one of Keras' own allowed classes, by its own name."""
        cls, module = node.get("class_name"), node.get("module")
        registered = node.get("registered_name")
        allowed = MODULE_CLASSES.get(module) if isinstance(module, str) else None
        if allowed is None or not isinstance(cls, str) or cls not in allowed:
            self.fail(
                where,
                f"received {str(module)[:60]}.{str(cls)[:60]}, which is not one of Keras' "
                "own layers, initializers, regularizers or constraints that fitq allows "
                "(Lambda and custom objects are refused)",
            )
        elif "shared_object_id" in node and not _is_int(node["shared_object_id"]):
            self.fail(
                where + ("shared_object_id",),
                f"received shared_object_id={str(node['shared_object_id'])[:40]!r}, "
                "expected an integer",
            )
        elif registered not in (None, cls):
            self.fail(
                where + ("registered_name",),
                f"received registered_name={str(registered)[:60]!r}, expected null or {cls!r}",
            )
        elif cls in DTYPE_POLICIES:
            self.dtype_policy(node.get("config"), where)

    def dtype_policy(self, policy: Any, where: Loc) -> None:
        name = policy.get("name") if isinstance(policy, dict) else None
        if not isinstance(name, str) or name not in catalog.DTYPES:
            self.fail(
                where + ("config", "name"),
                f"received dtype policy {str(name)[:60]!r}, expected one of "
                f"{sorted(catalog.DTYPES)}",
            )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
