"""Which way a monitored quantity improves, and which value is the best: one rule.

It is Keras' own rule (``keras/src/callbacks/monitor_callback.py``,
``MonitorCallback._set_monitor_op``): an explicit ``mode`` wins; in ``auto`` mode,
``loss`` (and ``val_loss``) is minimised, and a compiled metric improves in the
direction its metric object declares, looked up by the name it logs under, so a
metric renamed in its config (``{class_name: AUC, config: {name: roc}}``) keeps its
direction. No name is guessed from its letters. The worker decides ``is_best`` and the
job's ``best`` with it, the checks refuse a monitor it cannot decide, and the API's
insight reads what the worker stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

from checks import catalog
from checks.compile_args import logged, metric_objects
from models.spec import CompileSpec, ObjectSpec

Direction = Literal["min", "max"]


class UndecidedDirection(ValueError):
    """Keras cannot tell whether the monitored quantity should go up or down."""


def metric_directions(
    compile_spec: CompileSpec, outputs: Sequence[str] = ()
) -> dict[str, Direction]:
    """The name each compiled metric logs under (without ``val_``), and its direction.

    ``loss`` is always there; for a model with several ``outputs`` (their names, in the
    model's order), each output's loss and metrics, under the names Keras logs them
    (``checks.compile_args.logged``). A metric whose class or identifier the allowlist
    does not hold is left out (the checks refuse it before this is asked).
    """
    found: dict[str, Direction] = {}
    for key, metric in logged(compile_spec, list(outputs)):
        way = "min" if metric is None else catalog.METRIC_DIRECTIONS.get(_identifier(metric))
        if way is not None:
            found[key] = way
    return found


def keras_decides(monitor: str, compile_spec: CompileSpec) -> bool:
    """Whether EarlyStopping and ModelCheckpoint in mode ``auto`` can tell which way
    ``monitor`` improves, by Keras' rule: ``loss``, or the name of a compiled metric
    object, with or without ``val_``.

    A model with several outputs logs ``<output>_loss`` and ``<output>_<metric>``, and
    a weighted metric may log as ``weighted_<metric>``: names no metric object has, so
    Keras raises for them in mode ``auto`` and asks for ``min`` or ``max``.
    """
    name = monitor.removeprefix("val_")
    objects = {catalog.logged_name(metric) for _, metric in metric_objects(compile_spec)}
    return name == "loss" or name in objects


def _identifier(metric: str | ObjectSpec) -> str:
    return metric if isinstance(metric, str) else metric.class_name


def direction(monitor: str, mode: str, directions: dict[str, Direction]) -> Direction:
    """``min`` or ``max`` for ``monitor`` under ``mode``, as a Keras callback decides it.

    Args:
        monitor: A key of the epoch logs, e.g. ``val_loss`` or ``val_roc``.
        mode: ``auto``, ``min`` or ``max``, as the callback was given it.
        directions: ``metric_directions()`` of the job's compile spec.

    Raises:
        UndecidedDirection: in ``auto`` mode, for a quantity no compiled metric logs
            (Keras raises a ValueError there too).
    """
    if mode in ("min", "max"):
        return "min" if mode == "min" else "max"
    name = monitor.removeprefix("val_")
    if name in directions:
        return directions[name]
    raise UndecidedDirection(
        f"received monitor={monitor!r} with mode='auto', but no compiled metric logs "
        f"{name!r}, so whether it should go up or down is unknown; expected one of "
        f"{sorted(directions)} (with or without 'val_'), or mode 'min' or 'max'"
    )


def improves(value: float, best: float | None, way: Direction, min_delta: float = 0.0) -> bool:
    """Whether ``value`` beats ``best`` by more than ``min_delta``, as Keras compares."""
    if best is None:
        return True
    return value + min_delta < best if way == "min" else value - min_delta > best


def best_of(values: Iterable[tuple[int, float]], way: Direction) -> tuple[int, float] | None:
    """The first ``(epoch, value)`` holding the best value; None when there is none."""
    best: tuple[int, float] | None = None
    for epoch, value in values:
        if improves(value, best[1] if best else None, way):
            best = (epoch, value)
    return best
