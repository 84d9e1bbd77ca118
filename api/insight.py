"""Training insight: what a job's epoch history says about how it is learning.

One pure function, ``analyse()``, reads the recorded epochs of a job and its spec
and finds the best epoch for the monitored metric, the point where the model
starts to overfit, signs of underfitting and divergence, and, when EarlyStopping
restores the best weights, which epoch's weights the final model holds. The API
serves the result on every job; the dashboard draws it and the CLI can gate on it.

Every finding names the epoch it starts at and the ``fit()`` argument or callback
that addresses it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from checks.compile_args import output_names
from checks.monitor import Direction, direction, improves, metric_directions
from models.spec import CompileSpec
from models.states import FINISHED, JobStatus, StopReason

# Validations after the best one, all worse, before a rise counts as overfitting.
RISE_VALIDATIONS = 3
# ... and their mean must exceed the best value by this fraction.
RISE_FRACTION = 0.02
# ... while the training loss falls below this fraction of its value at the best epoch.
TRAIN_STILL_FALLING = 0.9
# The train/validation gap must grow this many times over its value at the best epoch.
GAP_GROWTH = 2.0
# Epochs in each of the two windows whose mean losses are compared at the end of a run.
WINDOW = 3
# Training loss falling faster than this fraction per epoch at the end is "still learning".
STILL_LEARNING_RATE = 0.02
# A loss that moved less than this fraction over the last window is flat; it is high
# when it is still above HIGH_FRACTION of the first epoch's loss.
FLAT_FRACTION = 0.01
HIGH_FRACTION = 0.5
# A training loss this many times its minimum, rising at the end, is divergence.
DIVERGENCE_FACTOR = 1.5

FINDING_KINDS = ("overfitting", "underfitting", "divergence")


@dataclass(frozen=True)
class Epoch:
    """One recorded epoch: its 1-based number and the logs Keras gave."""

    epoch: int
    metrics: dict[str, float | None]


class History:
    """A job's epochs as ``analyse`` reads them, kept as they arrive (``add``).

    It keeps the epochs' numbers and each metric's value per epoch (None where the
    epoch has none), the finite training and validation losses in order, the index of
    each one's first minimum and the first epoch whose loss was not finite, so that
    adding an epoch, and the findings of a job still training, cost the same however
    many epochs came before. It holds numbers and tuples of numbers only, which
    Python's garbage collector does not walk: a history of 200,000 epochs does not
    lengthen the API's collections.
    """

    def __init__(self, epochs: Iterable[Epoch] = ()) -> None:
        self.numbers: list[int] = []
        self.columns: dict[str, list[float | None]] = {}
        self.loss: list[tuple[int, float]] = []
        self.val: list[tuple[int, float]] = []
        self.loss_low = 0
        self.val_low = 0
        self.not_finite: tuple[int, float | None] | None = None
        self.has_val = False
        for epoch in epochs:
            self.add(epoch)

    def add(self, epoch: Epoch) -> None:
        """Appends ``epoch``, which comes after every epoch added before."""
        for key in epoch.metrics.keys() - self.columns.keys():
            self.columns[key] = [None] * len(self.numbers)
        self.numbers.append(epoch.epoch)
        for key, column in self.columns.items():
            column.append(_value(epoch, key))
        loss = _value(epoch, "loss")
        if "loss" in epoch.metrics and (loss is None or not math.isfinite(loss)):
            # Stored rows hold null for a value that was NaN or infinite.
            self.not_finite = self.not_finite or (epoch.epoch, loss)
        elif loss is not None:
            self.loss.append((epoch.epoch, loss))
            if loss < self.loss[self.loss_low][1]:
                self.loss_low = len(self.loss) - 1
        val = _value(epoch, "val_loss")
        self.has_val = self.has_val or val is not None
        if val is not None and math.isfinite(val):
            self.val.append((epoch.epoch, val))
            if val < self.val[self.val_low][1]:
                self.val_low = len(self.val) - 1

    @property
    def last_epoch(self) -> int | None:
        return self.numbers[-1] if self.numbers else None

    def series(self, key: str) -> Iterable[tuple[int, float | None]]:
        """(epoch, value of ``key`` or None) for every epoch, in order."""
        column = self.columns.get(key)
        return zip(
            self.numbers, column if column is not None else [None] * len(self.numbers), strict=True
        )

    def loss_at(self, epoch: int) -> float | None:
        """The finite training loss of ``epoch``, if it recorded one."""
        i = bisect.bisect_left(self.loss, (epoch, -math.inf))
        return self.loss[i][1] if i < len(self.loss) and self.loss[i][0] == epoch else None


@dataclass
class Finding:
    kind: str
    epoch: int
    message: str
    remedy: str


@dataclass
class Insight:
    monitor: str
    mode: str
    best_epoch: int | None = None
    best_value: float | None = None
    early_stopping_epoch: int | None = None
    final_weights_epoch: int | None = None
    overfitting_epoch: int | None = None
    findings: list[Finding] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def analyse(
    spec: dict[str, Any],
    epochs: Sequence[Epoch] | History,
    status: str,
    stop_reason: str | None,
    best: Mapping[str, Any] | None = None,
) -> Insight:
    """The insight into a job from its stored ``spec``, its epochs in order (or their
    ``History``) and the ``best`` epoch the worker recorded (``{epoch, monitor, value}``;
    never recomputed).

    Findings that need the whole run (underfitting) are made only once the job
    has finished; the others appear while it trains, at the epoch they start.
    """
    history = epochs if isinstance(epochs, History) else History(epochs)
    monitor, mode = _monitored(spec, history)
    insight = Insight(monitor=monitor, mode=mode)
    if best and best.get("monitor") == monitor:
        insight.best_epoch, insight.best_value = best.get("epoch"), best.get("value")
    early = _early_stopping(spec)
    if early is not None and history.numbers:
        if stop_reason == StopReason.EARLY_STOPPING:
            insight.early_stopping_epoch = history.last_epoch
        if early.get("restore_best_weights") and status in FINISHED:
            insight.final_weights_epoch = _restored_epoch(spec, early, history)
    remedies = Remedies(spec)
    divergence = _divergence(history, remedies)
    if divergence is not None:
        insight.findings.append(divergence)
    else:
        overfitting = _overfitting(history, remedies)
        if overfitting is not None:
            insight.overfitting_epoch = overfitting.epoch
            insight.findings.append(overfitting)
        if status == JobStatus.SUCCEEDED and overfitting is None:
            underfitting = _underfitting(history, stop_reason, remedies)
            if underfitting is not None:
                insight.findings.append(underfitting)
    return insight


def insight_keys(spec: Mapping[str, Any]) -> frozenset[str]:
    """The metrics ``analyse`` reads from an epoch of a job with this ``spec``: the
    losses, and the monitor of each callback that has one."""
    return frozenset({"loss", "val_loss", *(monitor for _, monitor in _monitors(spec))})


def _monitors(spec: Mapping[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """The spec's callbacks that monitor a metric, each with the metric's name."""
    return [
        (cb, str(cb.get("monitor", "val_loss")))
        for cb in spec.get("callbacks") or []
        if cb.get("type") in ("EarlyStopping", "ModelCheckpoint", "ReduceLROnPlateau")
    ]


def _directions(spec: dict[str, Any]) -> dict[str, Direction]:
    outputs = output_names((spec.get("model") or {}).get("keras_config"))
    return metric_directions(CompileSpec.model_validate(spec["compile"]), outputs)


def _monitored(spec: dict[str, Any], history: History) -> tuple[str, Direction]:
    """The monitor the job's best follows, as the worker chose it (checks.monitor's rule)."""
    monitors = _monitors(spec)
    if monitors:
        cb, monitor = monitors[0]
        return monitor, direction(monitor, str(cb.get("mode", "auto")), _directions(spec))
    return ("val_loss" if history.has_val else "loss"), "min"


def _early_stopping(spec: dict[str, Any]) -> dict[str, Any] | None:
    for cb in spec.get("callbacks") or []:
        if cb.get("type") == "EarlyStopping":
            return dict(cb)
    return None


def _value(epoch: Epoch, key: str) -> float | None:
    value = epoch.metrics.get(key)
    if value is None:
        return None
    return float(value)


def _restored_epoch(spec: dict[str, Any], early: dict[str, Any], history: History) -> int | None:
    """The epoch whose weights EarlyStopping(restore_best_weights=True) leaves in the model.

    Replays Keras' bookkeeping: from ``start_from_epoch`` on, the first epoch that
    reports the monitor is kept, then each epoch that improves on the best by more
    than ``min_delta``; at the end of training the kept weights are restored.
    """
    monitor = str(early.get("monitor", "val_loss"))
    way = direction(monitor, str(early.get("mode", "auto")), _directions(spec))
    min_delta = abs(float(early.get("min_delta") or 0.0))
    start = int(early.get("start_from_epoch") or 0)
    best_value: float | None = None
    kept: int | None = None
    for epoch, value in history.series(monitor):
        if value is None or epoch - 1 < start:
            continue
        if kept is None:
            kept = epoch
        if improves(value, best_value, way, min_delta):
            best_value = value
            kept = epoch
    return kept


def _divergence(history: History, remedies: Remedies) -> Finding | None:
    if history.not_finite is not None:
        at, value = history.not_finite
        shown = "NaN or infinite" if value is None else str(value)
        return Finding(
            "divergence",
            at,
            f"the training loss became {shown} at epoch {at}: training diverged",
            remedies.not_a_number(),
        )
    losses = history.loss
    if len(losses) < 3:
        return None
    low_at, low = losses[history.loss_low]
    last_at, last = losses[-1]
    rising = losses[-1][1] > losses[-2][1] > losses[-3][1]
    if last_at > low_at and rising and last > DIVERGENCE_FACTOR * max(low, 1e-12):
        onset = losses[history.loss_low + 1][0]
        return Finding(
            "divergence",
            onset,
            f"the training loss rose from {low:.4g} at epoch {low_at} to {last:.4g} at "
            f"epoch {last_at}: training is diverging",
            remedies.rising_loss(),
        )
    return None


def _overfitting(history: History, remedies: Remedies) -> Finding | None:
    """Validation loss rising while training loss falls, or their gap widening."""
    val = history.val
    if len(val) < RISE_VALIDATIONS + 1:
        return None
    best_i = history.val_low
    best_at, best = val[best_i]
    train_best = history.loss_at(best_at)
    if len(val) - best_i - 1 < RISE_VALIDATIONS or train_best is None:
        return None
    onset, (last_at, last_val) = val[best_i + 1][0], val[-1]
    train_last = history.loss_at(last_at)
    if train_last is None or train_last > TRAIN_STILL_FALLING * train_best:
        return None  # training loss is not falling: not overfitting
    recent = [v for _, v in val[-RISE_VALIDATIONS:]]
    rise = sum(recent) / len(recent) - best
    if min(recent) > best and rise > RISE_FRACTION * abs(best):
        return Finding(
            "overfitting",
            onset,
            f"val_loss was lowest at epoch {best_at} ({best:.4g}) and has risen since "
            f"(to {last_val:.4g} at epoch {last_at}) while the training loss kept "
            f"falling ({train_best:.4g} to {train_last:.4g}): the model is "
            "memorising the training data",
            remedies.overfitting(onset, best_at),
        )
    gap_best = best - train_best
    gap_last = last_val - train_last
    if gap_best > 0 and gap_last > GAP_GROWTH * gap_best and gap_last > RISE_FRACTION * best:
        return Finding(
            "overfitting",
            onset,
            f"val_loss has not improved since epoch {best_at} ({best:.4g}) while the gap "
            f"between validation and training loss grew from {gap_best:.4g} to "
            f"{gap_last:.4g}: the model is fitting the training data more than the task",
            remedies.overfitting(onset, best_at),
        )
    return None


def _underfitting(history: History, stop_reason: str | None, remedies: Remedies) -> Finding | None:
    losses = history.loss
    if len(losses) < 2 * WINDOW:
        return None
    first = losses[0][1]
    last_at = losses[-1][0]
    recent = sum(v for _, v in losses[-WINDOW:]) / WINDOW
    before = sum(v for _, v in losses[-2 * WINDOW : -WINDOW]) / WINDOW
    change = (before - recent) / max(abs(before), 1e-12)
    rate = change / WINDOW
    val = history.val
    val_improving = not val or val[history.val_low][0] in {e for e, _ in val[-2:]}
    if stop_reason == StopReason.COMPLETED and rate > STILL_LEARNING_RATE and val_improving:
        return Finding(
            "underfitting",
            losses[-WINDOW][0],
            f"the training loss was still falling about {rate:.1%} per epoch at the last "
            f"epoch ({last_at}) and validation had not stopped improving: training ended "
            "before the model had learned what it can",
            remedies.still_learning(),
        )
    if abs(change) < FLAT_FRACTION and recent > HIGH_FRACTION * first:
        flat_from = losses[-1][0]
        for epoch, value in reversed(losses):
            if abs(value - recent) > 2 * FLAT_FRACTION * abs(recent):
                break
            flat_from = epoch
        return Finding(
            "underfitting",
            flat_from,
            f"the training loss has stayed near {recent:.4g} since epoch {flat_from}, "
            f"{recent / first:.0%} of the first epoch's {first:.4g}: the model is not "
            "learning the task",
            "a larger model, another learning rate (compile.optimizer), more epochs, or "
            "check that the labels match the inputs",
        )
    return None


class Remedies:
    """What a finding recommends, from what the job's spec already has: never a
    callback or setting the job holds as recommended, and its own values named."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.callbacks: dict[str, tuple[int, dict[str, Any]]] = {}
        for i, cb in enumerate(spec.get("callbacks") or []):
            self.callbacks.setdefault(str(cb.get("type")), (i, dict(cb)))
        optimizer = (spec.get("compile") or {}).get("optimizer")
        config = optimizer.get("config") if isinstance(optimizer, Mapping) else None
        self.optimizer: dict[str, Any] = dict(config or {})
        self.fit: dict[str, Any] = dict(spec.get("fit") or {})
        self.augmented = bool((spec.get("data") or {}).get("augmentation"))

    def _callback(self, kind: str) -> tuple[int, dict[str, Any]] | None:
        return self.callbacks.get(kind)

    def not_a_number(self) -> str:
        steps = ["lower compile.optimizer.learning_rate"]
        clip = [k for k in ("clipnorm", "clipvalue", "global_clipnorm") if self.optimizer.get(k)]
        if clip:
            steps.append(f"clip gradients harder ({clip[0]} is {self.optimizer[clip[0]]})")
        else:
            steps.append("clip gradients (compile.optimizer.config.clipnorm)")
        if self._callback("TerminateOnNaN") is None:
            steps.append("add TerminateOnNaN to stop at once")
        return ", ".join(steps[:-1]) + ", or " + steps[-1]

    def rising_loss(self) -> str:
        found = self._callback("ReduceLROnPlateau")
        rate = self.optimizer.get("learning_rate")
        if isinstance(rate, Mapping):
            # A schedule: Keras cannot set its rate, so no ReduceLROnPlateau beside it.
            return (
                "lower the schedule's rates (compile.optimizer.config.learning_rate: "
                f"{str(rate.get('class_name'))[:40]}), or make it decay sooner"
            )
        if found is None:
            return (
                "lower compile.optimizer.learning_rate, or add ReduceLROnPlateau to lower "
                "it when the loss stops improving"
            )
        i, cb = found
        return (
            "lower compile.optimizer.learning_rate, or let the job's ReduceLROnPlateau "
            f"(callbacks[{i}]) act sooner: a patience below {cb.get('patience', 10)} or a "
            f"factor below {cb.get('factor', 0.1)}"
        )

    def overfitting(self, onset: int, best_at: int) -> str:
        more = (
            "more data or stronger augmentation"
            if self.augmented
            else "more data or augmentation (data.augmentation)"
        )
        general = f"{more}, regularisation or a smaller model delay the turn"
        found = self._callback("EarlyStopping")
        if found is None:
            return (
                "EarlyStopping(monitor='val_loss', restore_best_weights=True) with a "
                f"patience of a few epochs would stop near epoch {onset} and keep epoch "
                f"{best_at}'s weights; {general}"
            )
        i, cb = found
        here = f"the job's EarlyStopping (callbacks[{i}])"
        monitor, patience = cb.get("monitor", "val_loss"), cb.get("patience") or 0
        if monitor != "val_loss":
            first = f"{here} monitors {monitor!r}; on 'val_loss' it would stop near epoch {onset}"
        elif not cb.get("restore_best_weights"):
            first = f"restore_best_weights=True on {here} would keep epoch {best_at}'s weights"
        elif patience > 0:
            first = (
                f"{here} keeps the best epoch's weights; a patience below {patience} "
                f"would stop sooner, nearer epoch {onset}"
            )
        else:
            first = f"{here} keeps the best epoch's weights"
        return f"{first}; {general}"

    def still_learning(self) -> str:
        epochs = self.fit.get("epochs", 1)
        if self._callback("EarlyStopping") is None:
            return (
                f"raise fit.epochs (now {epochs}), with EarlyStopping to stop at the right "
                "point, or a higher learning rate"
            )
        return (
            f"raise fit.epochs (now {epochs}): the job's EarlyStopping stops it at the right "
            "point; or a higher learning rate"
        )
