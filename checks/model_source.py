"""Models from stored architectures: an uploaded ``.keras`` file, or a parent job's
model (a warm start).

Where such a model is, and whether the owner may use it, is the database's to say:
the caller passes a lookup. What is checked here needs no Keras: the stored config
passes the allowlist again, fits the training data's shape and the size limits as a
``keras_config`` does, and every layer to freeze is one of its layers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from checks.problems import Loc, Problems
from models.spec import ModelSpec


@dataclass(frozen=True)
class StoredArchitecture:
    """The architecture a model source names, found.

    Attributes:
        config: The model's config, as ``model.to_json()`` writes it.
        checkpoint: For a warm start, the id of the parent's checkpoint whose weights
            the model starts from (``best`` and ``last`` resolved).
    """

    config: dict[str, Any]
    checkpoint: int | None = None


@dataclass(frozen=True)
class SourceProblem:
    """Why a model source cannot be used: ``field`` is its key under ``model``."""

    field: str
    msg: str


# Finds what ``model.uploaded`` or ``model.from_job`` names, for the submitting owner.
ArchitectureLookup = Callable[[ModelSpec], StoredArchitecture | SourceProblem]


def source_field(model: ModelSpec) -> str:
    return "uploaded" if model.uploaded is not None else "from_job"


def no_stored_models(model: ModelSpec) -> StoredArchitecture | SourceProblem:
    """The lookup where nothing is stored: every upload and job is unknown."""
    field = source_field(model)
    return SourceProblem(field, f"unknown {field} {getattr(model, field)!r}")


def layer_names(config: dict[str, Any]) -> list[str]:
    """The names of a model config's layers (``model.layers``)."""
    body = config.get("config")
    layers = body.get("layers") if isinstance(body, dict) else None
    names = []
    for layer in layers if isinstance(layers, list) else []:
        inner = layer.get("config") if isinstance(layer, dict) else None
        name = inner.get("name") if isinstance(inner, dict) else None
        if isinstance(name, str):
            names.append(name)
    return names


def check_freeze(model: ModelSpec, config: dict[str, Any], problems: Problems) -> None:
    """Every name in ``model.freeze`` is a layer of the model, once."""
    known = layer_names(config)
    seen: set[str] = set()
    for i, name in enumerate(model.freeze or []):
        loc: Loc = ("model", "freeze", i)
        if name not in known:
            problems.add(
                loc,
                f"received layer {name[:60]!r}, which the model does not have; expected "
                f"one of {known}",
            )
        elif name in seen:
            problems.add(loc, f"layer {name!r} is named twice")
        seen.add(name)
