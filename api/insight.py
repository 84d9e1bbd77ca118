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

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

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
    epochs: Sequence[Epoch],
    status: str,
    stop_reason: str | None,
    best: Mapping[str, Any] | None = None,
) -> Insight:
    """The insight into a job from its stored ``spec``, its epochs in order and the
    ``best`` epoch the worker recorded (``{epoch, monitor, value}``; never recomputed).

    Findings that need the whole run (underfitting) are made only once the job
    has finished; the others appear while it trains, at the epoch they start.
    """
    monitor, mode = _monitored(spec, epochs)
    insight = Insight(monitor=monitor, mode=mode)
    if best and best.get("monitor") == monitor:
        insight.best_epoch, insight.best_value = best.get("epoch"), best.get("value")
    early = _early_stopping(spec)
    if early is not None and epochs:
        if stop_reason == StopReason.EARLY_STOPPING:
            insight.early_stopping_epoch = epochs[-1].epoch
        if early.get("restore_best_weights") and status in FINISHED:
            insight.final_weights_epoch = _restored_epoch(spec, early, epochs)
    divergence = _divergence(epochs)
    if divergence is not None:
        insight.findings.append(divergence)
    else:
        overfitting = _overfitting(epochs)
        if overfitting is not None:
            insight.overfitting_epoch = overfitting.epoch
            insight.findings.append(overfitting)
        if status == JobStatus.SUCCEEDED and overfitting is None:
            underfitting = _underfitting(epochs, stop_reason)
            if underfitting is not None:
                insight.findings.append(underfitting)
    return insight


def _directions(spec: dict[str, Any]) -> dict[str, Direction]:
    return metric_directions(CompileSpec.model_validate(spec["compile"]))


def _monitored(spec: dict[str, Any], epochs: Sequence[Epoch]) -> tuple[str, Direction]:
    """The monitor the job's best follows, as the worker chose it (checks.monitor's rule)."""
    for cb in spec.get("callbacks") or []:
        if cb.get("type") in ("EarlyStopping", "ModelCheckpoint", "ReduceLROnPlateau"):
            monitor = str(cb.get("monitor", "val_loss"))
            return monitor, direction(monitor, str(cb.get("mode", "auto")), _directions(spec))
    has_val = any(_value(e, "val_loss") is not None for e in epochs)
    return ("val_loss" if has_val else "loss"), "min"


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


def _series(epochs: Sequence[Epoch], key: str) -> list[tuple[int, float]]:
    """(epoch, value) for the epochs that recorded a finite ``key``."""
    out = []
    for e in epochs:
        value = _value(e, key)
        if value is not None and math.isfinite(value):
            out.append((e.epoch, value))
    return out


def _restored_epoch(
    spec: dict[str, Any], early: dict[str, Any], epochs: Sequence[Epoch]
) -> int | None:
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
    for e in epochs:
        value = _value(e, monitor)
        if value is None or e.epoch - 1 < start:
            continue
        if kept is None:
            kept = e.epoch
        if improves(value, best_value, way, min_delta):
            best_value = value
            kept = e.epoch
    return kept


def _divergence(epochs: Sequence[Epoch]) -> Finding | None:
    for e in epochs:
        value = _value(e, "loss")
        # Stored rows hold null for a value that was NaN or infinite.
        if "loss" in e.metrics and (value is None or not math.isfinite(value)):
            shown = "NaN or infinite" if value is None else str(value)
            return Finding(
                "divergence",
                e.epoch,
                f"the training loss became {shown} at epoch {e.epoch}: training diverged",
                "lower compile.optimizer.learning_rate, clip gradients (clipnorm), "
                "or add TerminateOnNaN to stop at once",
            )
    losses = _series(epochs, "loss")
    if len(losses) < 3:
        return None
    low_at, low = min(losses, key=lambda p: p[1])
    last_at, last = losses[-1]
    rising = losses[-1][1] > losses[-2][1] > losses[-3][1]
    if last_at > low_at and rising and last > DIVERGENCE_FACTOR * max(low, 1e-12):
        onset = next(epoch for epoch, _ in losses if epoch > low_at)
        return Finding(
            "divergence",
            onset,
            f"the training loss rose from {low:.4g} at epoch {low_at} to {last:.4g} at "
            f"epoch {last_at}: training is diverging",
            "lower compile.optimizer.learning_rate, or add ReduceLROnPlateau to lower it "
            "when the loss stops improving",
        )
    return None


def _overfitting(epochs: Sequence[Epoch]) -> Finding | None:
    """Validation loss rising while training loss falls, or their gap widening."""
    val = _series(epochs, "val_loss")
    train = dict(_series(epochs, "loss"))
    if len(val) < RISE_VALIDATIONS + 1:
        return None
    best_i = min(range(len(val)), key=lambda i: val[i][1])
    best_at, best = val[best_i]
    after = val[best_i + 1 :]
    if len(after) < RISE_VALIDATIONS or best_at not in train:
        return None
    last_at = after[-1][0]
    if last_at not in train or train[last_at] > TRAIN_STILL_FALLING * train[best_at]:
        return None  # training loss is not falling: not overfitting
    recent = [v for _, v in after[-RISE_VALIDATIONS:]]
    rise = sum(recent) / len(recent) - best
    onset = after[0][0]
    if min(recent) > best and rise > RISE_FRACTION * abs(best):
        return Finding(
            "overfitting",
            onset,
            f"val_loss was lowest at epoch {best_at} ({best:.4g}) and has risen since "
            f"(to {after[-1][1]:.4g} at epoch {last_at}) while the training loss kept "
            f"falling ({train[best_at]:.4g} to {train[last_at]:.4g}): the model is "
            "memorising the training data",
            f"EarlyStopping(monitor='val_loss', restore_best_weights=True) with a patience "
            f"of a few epochs would stop near epoch {onset} and keep epoch {best_at}'s "
            "weights; more data or augmentation, regularisation or a smaller model "
            "delay the turn",
        )
    gap_best = best - train[best_at]
    gap_last = after[-1][1] - train[last_at]
    if gap_best > 0 and gap_last > GAP_GROWTH * gap_best and gap_last > RISE_FRACTION * best:
        return Finding(
            "overfitting",
            onset,
            f"val_loss has not improved since epoch {best_at} ({best:.4g}) while the gap "
            f"between validation and training loss grew from {gap_best:.4g} to "
            f"{gap_last:.4g}: the model is fitting the training data more than the task",
            "fewer epochs or EarlyStopping(monitor='val_loss', restore_best_weights=True); "
            "more data or augmentation, regularisation or a smaller model",
        )
    return None


def _underfitting(epochs: Sequence[Epoch], stop_reason: str | None) -> Finding | None:
    losses = _series(epochs, "loss")
    if len(losses) < 2 * WINDOW:
        return None
    first = losses[0][1]
    last_at = losses[-1][0]
    recent = sum(v for _, v in losses[-WINDOW:]) / WINDOW
    before = sum(v for _, v in losses[-2 * WINDOW : -WINDOW]) / WINDOW
    change = (before - recent) / max(abs(before), 1e-12)
    rate = change / WINDOW
    val = _series(epochs, "val_loss")
    val_improving = not val or min(val, key=lambda p: p[1])[0] in {e for e, _ in val[-2:]}
    if stop_reason == StopReason.COMPLETED and rate > STILL_LEARNING_RATE and val_improving:
        return Finding(
            "underfitting",
            losses[-WINDOW][0],
            f"the training loss was still falling about {rate:.1%} per epoch at the last "
            f"epoch ({last_at}) and validation had not stopped improving: training ended "
            "before the model had learned what it can",
            "raise fit.epochs (with EarlyStopping to stop at the right point), or a "
            "higher learning rate",
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
