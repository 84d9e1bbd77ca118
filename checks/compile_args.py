"""The arguments of ``model.compile()`` against the allowlist, and the keys Keras logs."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from checks import catalog
from checks.data_info import DataInfo, ModelOutputs, Shape, TargetInfo
from checks.layer_args import SizeError
from checks.model_size import model_io
from checks.problems import Loc, Problems
from models.spec import (
    CompileSpec,
    JobSpec,
    KerasObject,
    Metrics,
    ObjectSpec,
    OutputMetrics,
    ScheduleSpec,
)

# What each kind of argument in ``catalog.*_CONFIG_KEYS`` holds, as a message says it.
VALUE_KINDS = {
    "number": "a finite number",
    "int": "an integer",
    "bool": "true or false",
    "name": "a string of at most 200 characters",
    "numbers": "a finite number or a list of them",
    "learning_rate": (
        "a finite number or a learning-rate schedule ({class_name, config} of "
        f"{catalog.LR_SCHEDULE_MODULE}: {', '.join(catalog.LR_SCHEDULES)})"
    ),
    "rate": "a finite number",
    "steps": "a finite number > 0",
    "positive": "a finite number > 0",
    "count": f"an integer from 0 to {2**31 - 1}",
    "scope": "a name of letters, digits and _.- (at most 64, not starting with _ or -)",
    "boundaries": f"a non-empty list of strictly increasing integers from 0 to {2**31 - 1}",
    "rates": "a non-empty list of finite numbers",
}
# Keras' optimizer steps are counted in int64 but a schedule's boundaries become int32
# tensors before they are cast; TensorFlow names a scope with these characters only.
_MAX_STEP = 2**31 - 1
_SCOPE = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_.\-]{0,63}")
LEARNING_RATE_LOC: Loc = ("compile", "optimizer", "config", "learning_rate")


def output_names(keras_config: dict[str, Any] | None) -> list[str]:
    """A model config's output names, in its order ([] for a built-in model): the
    names Keras prefixes its logs with when there are several."""
    if keras_config is None:
        return []
    try:
        return model_io(keras_config)[1]
    except SizeError:
        return []


def _name(value: KerasObject) -> str:
    return value if isinstance(value, str) else value.class_name


def loss_name(spec: JobSpec) -> str:
    """The loss's name: the one loss, or the first output's."""
    return _name(next(iter(losses_by_output(spec.compile, []).values())))


def losses_by_output(c: CompileSpec, names: list[str]) -> dict[str, KerasObject]:
    """Each output's loss, by the model's output ``names`` ([]: one unnamed output).

    A loss for every output (a dict's keys beyond ``names`` are kept, for the checks
    to refuse); a list pairs with ``names`` in order.
    """
    loss = c.loss
    if isinstance(loss, dict):
        return dict(loss)
    if isinstance(loss, list):
        return dict(zip(names or [""], loss, strict=False))
    return {name: loss for name in names or [""]}


def _per_output(metrics: Metrics | None, names: list[str]) -> dict[str, list[KerasObject]]:
    """Each output's metrics, as Keras 3 pairs them with its outputs.

    One output: every metric (a dict's values, a list flattened). Several: a dict by
    output name, or a list of one entry per output.
    """
    if not metrics:
        return {}
    entries = metrics.values() if isinstance(metrics, dict) else metrics
    if len(names) <= 1:
        return {names[0] if names else "": [m for e in entries for m in _as_list(e)]}
    if isinstance(metrics, dict):
        return {name: _as_list(e) for name, e in metrics.items()}
    return {name: _as_list(e) for name, e in zip(names, metrics, strict=False)}


def _as_list(entry: OutputMetrics) -> list[KerasObject]:
    return list(entry) if isinstance(entry, list) else [entry]


def log_keys(spec: JobSpec, names: list[str] | None = None) -> list[str]:
    """The keys Keras puts in the epoch logs (without ``val_``), for a model with
    outputs ``names`` ([] or None: one output)."""
    return [key for key, _ in logged(spec.compile, names or [])]


def logged(c: CompileSpec, names: list[str]) -> list[tuple[str, KerasObject | None]]:
    """The keys Keras 3.15 logs, each with the metric that logs it (None for a loss).

    ``loss``; with several outputs each output's loss, ``<output>_loss``; then each
    output's metrics (``<output>_<metric>`` with several outputs), then its weighted
    metrics, named ``weighted_<metric>`` where a metric took the name already.
    """
    keys: list[tuple[str, KerasObject | None]] = [("loss", None)]
    if len(names) > 1:
        keys += [(f"{name}_loss", None) for name in losses_by_output(c, names)]
    prefix = {name: f"{name}_" if len(names) > 1 else "" for name in names or [""]}
    for output, metrics in _per_output(c.metrics, names).items():
        keys += [(prefix.get(output, "") + n, m) for n, m in _logged(metrics)]
    taken = {key for key, _ in keys}
    for output, metrics in _per_output(c.weighted_metrics, names).items():
        for n, m in _logged(metrics):
            key = prefix.get(output, "") + n
            keys.append((prefix.get(output, "") + "weighted_" + n if key in taken else key, m))
    return keys


def _logged(metrics: list[KerasObject]) -> list[tuple[str, KerasObject]]:
    named = ((catalog.logged_name(metric), metric) for metric in metrics)
    return [(name, metric) for name, metric in named if name is not None]


def metric_objects(c: CompileSpec) -> list[tuple[Loc, KerasObject]]:
    """Every metric and weighted metric of ``c``, each with its path."""
    found: list[tuple[Loc, KerasObject]] = []
    for field in ("metrics", "weighted_metrics"):
        value = getattr(c, field)
        items = value.items() if isinstance(value, dict) else enumerate(value or [])
        for key, entry in items:
            if isinstance(entry, list):
                found += [((field, key, i), m) for i, m in enumerate(entry)]
            else:
                found.append(((field, key), entry))
    return found


def check_compile(
    spec: JobSpec,
    splits: dict[str, DataInfo | None],
    max_classes: int,
    problems: Problems,
    outputs: ModelOutputs | None = None,
) -> None:
    """Optimizer, loss and metrics are allowed objects, in the forms Keras reads for
    the model's outputs; each output's loss fits its labels.

    ``splits`` names each data set (``training``, ...) as the messages say it;
    ``outputs`` are the model's outputs (names [] for a built-in model's one output;
    None when they are unknown, the model being refused).
    """
    c = spec.compile
    names = outputs.names if outputs else []
    optimizer = c.optimizer
    schedule = optimizer_schedule(spec)
    if schedule is not None:
        assert isinstance(optimizer, ObjectSpec)
        check_schedule(schedule, LEARNING_RATE_LOC, problems)
        config = {k: v for k, v in optimizer.config.items() if k != "learning_rate"}
        optimizer = ObjectSpec(class_name=optimizer.class_name, config=config)
    _check_object(
        optimizer,
        ("compile", "optimizer"),
        catalog.OPTIMIZERS,
        catalog.OPTIMIZER_CONFIG_KEYS,
        "optimizer",
        problems,
    )
    losses = _loss_objects(c)
    for loc, loss in losses:
        _check_object(loss, loc, catalog.LOSSES, catalog.LOSS_CONFIG_KEYS, "loss", problems)
    for loc, metric in metric_objects(c):
        _check_object(
            metric,
            ("compile", *loc),
            catalog.METRIC_NAMES,
            catalog.METRIC_CONFIG_KEYS,
            "metric",
            problems,
        )
    if outputs is None or not check_forms(c, names, problems):
        return
    _check_unique_keys(spec, names, problems)
    for i, (output, loss) in enumerate(losses_by_output(c, names).items()):
        whose = f"{output!r} labels" if len(names) > 1 else "labels"
        at = {dict: (output,), list: (i,)}.get(type(c.loss), ())
        labels = _Labels(output, whose, ("compile", "loss", *at), outputs, max_classes)
        _check_labels(labels, _name(loss), splits, problems)


def _loss_objects(c: CompileSpec) -> list[tuple[Loc, KerasObject]]:
    loc: Loc = ("compile", "loss")
    if isinstance(c.loss, dict):
        return [(loc + (k,), v) for k, v in c.loss.items()]
    if isinstance(c.loss, list):
        return [(loc + (i,), v) for i, v in enumerate(c.loss)]
    return [(loc, c.loss)]


def _check_unique_keys(spec: JobSpec, names: list[str], problems: Problems) -> None:
    keys = log_keys(spec, names)
    if len(set(keys)) != len(keys):
        problems.add(
            ("compile", "metrics"),
            f"metrics log under the names {keys}; each name must appear once",
        )


def check_forms(c: CompileSpec, names: list[str], problems: Problems) -> bool:
    """``loss``, ``loss_weights``, ``metrics`` and ``weighted_metrics`` name the model's
    outputs, or give one entry per output, as Keras 3 reads them."""
    found = len(problems.items)
    shown = names or ["one unnamed output"]
    n = max(len(names), 1)
    loc: Loc = ("compile", "loss")
    if isinstance(c.loss, dict) and set(c.loss) != set(names):
        problems.add(
            loc,
            f"received losses for {sorted(c.loss)}; a loss dict names every output of "
            f"the model, expected {shown}",
        )
    if isinstance(c.loss, list) and len(c.loss) != n:
        problems.add(
            loc,
            f"received {len(c.loss)} losses; a loss list has one per output of the model, "
            f"in order: expected {n} ({shown})",
        )
    _check_weights(c, names, problems)
    for field in ("metrics", "weighted_metrics"):
        _check_metric_form(getattr(c, field), field, names, problems)
    return len(problems.items) == found


def _check_weights(c: CompileSpec, names: list[str], problems: Problems) -> None:
    weights, loc = c.loss_weights, ("compile", "loss_weights")
    n = max(len(names), 1)
    if isinstance(weights, dict) and not (isinstance(c.loss, dict) and set(weights) == set(names)):
        problems.add(
            loc,
            f"received weights for {sorted(weights)}; weights by output name go with a loss "
            f"dict and name every output, expected {names or 'a number'}",
        )
    elif isinstance(weights, list) and (
        len(weights) != n or (n > 1 and not isinstance(c.loss, (dict, list)))
    ):
        problems.add(
            loc,
            f"received {len(weights)} weights; a list has one per output, in order, with "
            f"one loss per output (a list or dict): expected {n}",
        )
    elif isinstance(weights, float) and n > 1 and isinstance(c.loss, (dict, list)):
        problems.add(
            loc,
            f"received one number for {n} losses; expected a list or dict of {n} weights",
        )


def _check_metric_form(
    metrics: Metrics | None, field: str, names: list[str], problems: Problems
) -> None:
    loc: Loc = ("compile", field)
    if isinstance(metrics, dict) and not set(metrics) <= set(names):
        unknown = sorted(set(metrics) - set(names))
        problems.add(
            loc,
            f"received {field} for {unknown}, which name no output of the model; "
            f"expected keys among {names or ['(a built-in model has one output, unnamed)']}",
        )
    if len(names) > 1 and isinstance(metrics, list) and metrics and len(metrics) != len(names):
        problems.add(
            loc,
            f"received a list of {len(metrics)}; with {len(names)} outputs Keras reads "
            f"{field} as one entry (a metric or a list of metrics) per output, in order "
            f"{names}, or as a dict by output name",
        )


@dataclass(frozen=True)
class _Labels:
    """One output's labels, as the messages about them say it."""

    output: str  # its name ("" for a built-in model's one output)
    whose: str  # "labels", or "'out' labels" with several outputs
    loc: Loc  # where its loss is given
    outputs: ModelOutputs | None
    max_classes: int

    @property
    def width(self) -> Shape | None:
        shapes = self.outputs.shapes if self.outputs else None
        return shapes.get(self.output) if shapes else None


def _check_labels(
    labels: _Labels, loss: str, splits: dict[str, DataInfo | None], problems: Problems
) -> None:
    """A sparse loss gets class ids within the output's width; any other loss labels of
    the output's shape (a model config's, once sized)."""
    width, names = labels.width, labels.outputs.names if labels.outputs else []
    for split, info in splits.items():
        target = info.targets(names).get(labels.output) if info else None
        if target is None:
            continue
        if loss in catalog.SPARSE_LOSSES:
            _check_class_ids(labels, loss, target, split, problems)
        elif loss in catalog.ONE_HOT_LOSSES and target.shape == ():
            problems.add(labels.loc, _not_one_hot(loss, target, split, labels.whose))
            return  # the first split says it; the others would say the same
        elif width and len(width) == 1:
            why = _units_misfit(loss, target, width[0])
            if why is not None:
                n = width[0]
                problems.add(
                    labels.loc,
                    f"the model gives {n} number{'s' if n > 1 else ''} per sample, but "
                    f"the {split} {labels.whose} {why}; Keras fails on the first batch",
                )
                return
        elif width and target.shape != width:
            # Keras fails at the first step on labels that are not the output's shape
            # ("Incompatible shapes: [32] vs. [32,3]").
            kind = "one-hot labels" if loss in catalog.ONE_HOT_LOSSES else "labels"
            problems.add(
                labels.loc,
                f"{loss} needs {kind} of the output's shape {list(width)} per sample, but "
                f"the {split} {labels.whose} have shape {list(target.shape)}",
            )


def _not_one_hot(loss: str, target: TargetInfo, split: str, whose: str) -> str:
    """Why one number a sample is not what a categorical (one-hot) loss reads."""
    if target.n_classes is not None:
        got = (
            f"are class indices, one integer per sample (0 to {target.n_classes - 1}); "
            "expected one-hot rows, one column per class: use "
            "sparse_categorical_crossentropy for class indices, or one-hot encode them"
        )
    else:
        got = (
            "hold one number per sample; expected one-hot rows (or class "
            "probabilities), one column per class, shape (samples, classes)"
        )
    return f"{loss} needs one-hot labels, but the {split} {whose} {got}"


def _check_class_ids(
    labels: _Labels, loss: str, target: TargetInfo, split: str, problems: Problems
) -> None:
    # The worker sizes a built-in model's output layer to the largest label of any split.
    width, most, whose = labels.width, labels.max_classes, labels.whose
    if target.n_classes is None and math.prod(target.shape) > 1:
        problems.add(
            labels.loc,
            f"{loss} needs one integer class index per sample, but the {split} {whose} "
            f"have {math.prod(target.shape)} numbers per sample, as one-hot rows do; expected "
            "categorical_crossentropy for one-hot labels, or the class indices "
            "(each row's argmax) as labels",
        )
    elif target.n_classes is None:
        problems.add(
            labels.loc,
            f"{loss} needs integer class labels from 0 to {most - 1} "
            f"(FITQ_MAX_LABEL_CLASSES), one per sample, but the {split} {whose} are not: "
            "real numbers, negative, larger, or more than one per sample",
        )
    elif target.n_classes > most:
        problems.add(
            labels.loc,
            f"the {split} {whose} go up to {target.n_classes - 1}, expected "
            f"at most {most} classes for {loss} (FITQ_MAX_LABEL_CLASSES)",
        )
    elif width and target.n_classes > width[-1]:
        problems.add(
            labels.loc,
            f"the {split} {whose} go up to {target.n_classes - 1}, but the output has "
            f"{width[-1]} units; {loss} expects class ids from 0 to {width[-1] - 1}; "
            "Keras fails on the first batch",
        )


def optimizer_schedule(spec: JobSpec) -> dict[str, Any] | None:
    """The optimizer's ``learning_rate`` when it is a schedule (a ``{class_name, config}``)."""
    optimizer = spec.compile.optimizer
    if isinstance(optimizer, str):
        return None
    rate = optimizer.config.get("learning_rate")
    return rate if isinstance(rate, dict) else None


def check_schedule(value: ScheduleSpec | dict[str, Any], loc: Loc, problems: Problems) -> None:
    """A learning-rate schedule is one of ``keras.optimizers.schedules``, with arguments
    its class takes, each of the kind ``catalog.LR_SCHEDULES`` says, the required ones
    given, and (PiecewiseConstantDecay) one more value than boundaries."""
    if not isinstance(value, ScheduleSpec):
        try:
            value = ScheduleSpec.model_validate(value)
        except ValidationError as exc:
            problems.add_validation_error(loc, exc)
            return
    name, config = value.class_name, value.config
    keys = catalog.LR_SCHEDULES.get(name)
    if keys is None:
        problems.add(
            loc + ("class_name",),
            f"unknown learning-rate schedule {name[:60]!r}, expected one of "
            f"{sorted(catalog.LR_SCHEDULES)} ({catalog.LR_SCHEDULE_MODULE})",
        )
        return
    for key in catalog.LR_SCHEDULE_REQUIRED[name]:
        if key not in config:
            problems.add(
                loc + ("config", key),
                f"{name} needs {key}, {_expected(keys[key])}",
                "missing",
            )
    _check_config(config, keys, f"{name} argument", loc, problems)
    values, boundaries = config.get("values"), config.get("boundaries")
    if isinstance(values, list) and isinstance(boundaries, list):
        if len(values) != len(boundaries) + 1:
            problems.add(
                loc + ("config", "values"),
                f"received {len(values)} values for {len(boundaries)} boundaries; expected "
                f"one more value than boundaries ({len(boundaries) + 1})",
            )


# Losses whose labels must have the output's shape; the other regression losses
# broadcast a label column against the output.
SAME_SHAPE_LOSSES = {"binary_crossentropy", "BinaryCrossentropy"}


def _units_misfit(loss: str, info: TargetInfo, units: int) -> str | None:
    """Why ``units`` outputs cannot meet labels ``info`` under a loss that is not sparse
    (``_check_class_ids`` sees to those); None if they can."""
    shape = info.shape
    if loss in catalog.ONE_HOT_LOSSES or loss in SAME_SHAPE_LOSSES:
        labels = shape[0] if len(shape) == 1 else 1 if not shape else None
        if labels is not None and labels != units:
            return (
                f"have {labels} per sample; {loss} needs as many labels as outputs, "
                f"expected {units}"
            )
        return None
    if not shape and units > 1:
        return (
            f"are one number per sample (a 1-D array); {loss} compares labels and outputs "
            f"number by number, expected {units} per sample (or sparse_categorical_crossentropy "
            "for class indices)"
        )
    if len(shape) == 1 and shape[0] not in (1, units):
        # Keras would broadcast one output against several labels: it runs, but it is
        # not the model the labels describe.
        return f"have {shape[0]} numbers per sample; {loss} expected {units} (or 1)"
    return None


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
    _check_config(value.config, config_keys, f"{what} argument", loc, problems)


def _check_config(
    config: dict[str, Any], config_keys: dict[str, str], what: str, loc: Loc, problems: Problems
) -> None:
    """Each argument is one ``config_keys`` names, holding what it says."""
    for key, item in config.items():
        kind = config_keys.get(key)
        if kind is None:
            problems.add(
                loc + ("config", key),
                f"unknown {what} {key[:60]!r}, expected one of {sorted(config_keys)}",
            )
        elif not _is_kind(kind, item):
            shown = repr(item) if len(repr(item)) <= 60 else repr(item)[:57] + "..."
            msg = f"received {key}={shown}, expected {_expected(kind)}"
            problems.add(loc + ("config", key), msg)


def _expected(kind: str) -> str:
    return VALUE_KINDS[kind.rstrip("?")] + (" or null" if kind.endswith("?") else "")


def _finite(item: Any) -> bool:
    return isinstance(item, (int, float)) and not isinstance(item, bool) and math.isfinite(item)


def _count(item: Any) -> bool:
    return isinstance(item, int) and not isinstance(item, bool) and 0 <= item <= _MAX_STEP


def _boundaries(item: Any) -> bool:
    return (
        isinstance(item, list)
        and 0 < len(item) <= 1000
        and all(_count(b) for b in item)
        and all(a < b for a, b in zip(item, item[1:], strict=False))
    )


# Whether a value is what an argument of each kind (``catalog.*_CONFIG_KEYS``,
# ``catalog.LR_SCHEDULES``) holds.
_KINDS: dict[str, Callable[[Any], bool]] = {
    "bool": lambda v: isinstance(v, bool),
    "name": lambda v: isinstance(v, str) and len(v) <= 200,
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": _finite,
    "numbers": lambda v: (
        _finite(v) or (isinstance(v, list) and 0 < len(v) <= 1000 and all(map(_finite, v)))
    ),
    "learning_rate": _finite,  # a schedule is checked on its own (check_schedule)
    "rate": _finite,
    "steps": lambda v: _finite(v) and v > 0,
    "positive": lambda v: _finite(v) and v > 0,
    "count": _count,
    "scope": lambda v: isinstance(v, str) and _SCOPE.fullmatch(v) is not None,
    "boundaries": _boundaries,
    "rates": lambda v: isinstance(v, list) and 0 < len(v) <= 1001 and all(map(_finite, v)),
}


def _is_kind(kind: str, item: Any) -> bool:
    """Whether ``item`` is what an argument of ``kind`` holds; "?" allows null."""
    if item is None:
        return kind.endswith("?")
    return _KINDS[kind.rstrip("?")](item)
