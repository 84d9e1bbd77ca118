"""The arguments of ``model.compile()`` against the allowlist, and the keys Keras logs."""

from __future__ import annotations

import math
from typing import Any

from checks import catalog
from checks.data_info import DataInfo
from checks.problems import Loc, Problems
from models.spec import JobSpec, ObjectSpec

# What each kind of argument in ``catalog.*_CONFIG_KEYS`` holds, as a message says it.
VALUE_KINDS = {
    "number": "a finite number",
    "int": "an integer",
    "bool": "true or false",
    "name": "a string of at most 200 characters",
    "numbers": "a finite number or a list of them",
}


def loss_name(spec: JobSpec) -> str:
    loss = spec.compile.loss
    return loss if isinstance(loss, str) else loss.class_name


def log_keys(spec: JobSpec) -> list[str]:
    """The keys Keras will put in the epoch logs: ``loss`` and the compiled metrics."""
    names = (catalog.logged_name(metric) for metric in spec.compile.metrics)
    return ["loss", *(name for name in names if name is not None)]


def check_compile(
    spec: JobSpec, splits: dict[str, DataInfo | None], max_classes: int, problems: Problems
) -> None:
    """Optimizer, loss and metrics are allowed objects; a sparse loss gets class labels.

    ``splits`` names each data set (``training``, ...) as the messages say it.
    """
    c = spec.compile
    _check_object(
        c.optimizer,
        ("compile", "optimizer"),
        catalog.OPTIMIZERS,
        catalog.OPTIMIZER_CONFIG_KEYS,
        "optimizer",
        problems,
    )
    _check_object(
        c.loss, ("compile", "loss"), catalog.LOSSES, catalog.LOSS_CONFIG_KEYS, "loss", problems
    )
    for i, metric in enumerate(c.metrics):
        _check_object(
            metric,
            ("compile", "metrics", i),
            catalog.METRIC_NAMES,
            catalog.METRIC_CONFIG_KEYS,
            "metric",
            problems,
        )
    keys = log_keys(spec)
    if len(set(keys)) != len(keys):
        problems.add(
            ("compile", "metrics"),
            f"metrics log under the names {keys}; each name must appear once",
        )
    if loss_name(spec) in catalog.SPARSE_LOSSES:
        _check_sparse_labels(loss_name(spec), splits, max_classes, problems)


def _check_sparse_labels(
    loss: str, splits: dict[str, DataInfo | None], max_classes: int, problems: Problems
) -> None:
    # The worker sizes the output layer to the largest label of any split.
    for split, info in splits.items():
        if info is not None and info.n_classes is None:
            problems.add(
                ("compile", "loss"),
                f"{loss} needs integer class labels from 0 to {max_classes - 1} "
                f"(FITQ_MAX_LABEL_CLASSES), one per sample, but the {split} labels are not: "
                "real numbers, negative, larger, or more than one per sample",
            )
        elif info is not None and info.n_classes and info.n_classes > max_classes:
            problems.add(
                ("compile", "loss"),
                f"the {split} labels go up to {info.n_classes - 1}, expected "
                f"at most {max_classes} classes for {loss} (FITQ_MAX_LABEL_CLASSES)",
            )


def _check_object(
    value: str | ObjectSpec,
    loc: Loc,
    names: dict[str, str] | set[str],
    config_keys: dict[str, str],
    what: str,
    problems: Problems,
) -> None:
    if isinstance(value, str):
        if value not in names:
            problems.add(loc, f"unknown {what} {value[:60]!r}, expected one of {sorted(names)}")
        return
    classes = set(names.values()) if isinstance(names, dict) else set()
    if what == "metric":
        classes = set(catalog.METRIC_CLASSES)
    if value.class_name not in classes:
        problems.add(
            loc + ("class_name",),
            f"unknown {what} class {value.class_name!r}, expected one of {sorted(classes)}",
        )
    for key, item in value.config.items():
        kind = config_keys.get(key)
        if kind is None:
            problems.add(
                loc + ("config", key),
                f"unknown {what} argument {key[:60]!r}, expected one of {sorted(config_keys)}",
            )
        elif not _is_kind(kind, item):
            expected = VALUE_KINDS[kind.rstrip("?")] + (" or null" if kind.endswith("?") else "")
            shown = repr(item) if len(repr(item)) <= 60 else repr(item)[:57] + "..."
            problems.add(loc + ("config", key), f"received {key}={shown}, expected {expected}")


def _is_kind(kind: str, item: Any) -> bool:
    """Whether ``item`` is what an argument of ``kind`` holds (``catalog.*_CONFIG_KEYS``)."""
    if item is None:
        return kind.endswith("?")
    kind = kind.rstrip("?")
    if kind == "bool":
        return isinstance(item, bool)
    if kind == "name":
        return isinstance(item, str) and len(item) <= 200
    if kind == "int":
        return isinstance(item, int) and not isinstance(item, bool)
    if kind == "numbers" and isinstance(item, list):
        return 0 < len(item) <= 1000 and all(_is_kind("number", v) for v in item)
    return isinstance(item, (int, float)) and not isinstance(item, bool) and math.isfinite(item)
