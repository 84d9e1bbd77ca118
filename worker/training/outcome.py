"""How a training run ended, as the job records it: status, stop reason, error, test
metrics, the trained model's file."""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np

from models.spec import JobSpec, TerminateOnNaNSpec
from models.states import JobStatus, StopReason
from worker.training.final_model import ModelFile


@dataclass
class Outcome:
    """How a run ended: ``status`` and ``stop_reason`` as the job records them."""

    status: JobStatus
    stop_reason: StopReason
    test_metrics: dict[str, float | None] | None = None
    error: tuple[str, str, str] | None = None
    history: dict[str, list[float]] = field(default_factory=dict)
    class_weight: dict[int, float] | None = None
    model_file: ModelFile | None = None  # model.keras, once saved


def fit_outcome(
    spec: JobSpec, callbacks: list[keras.callbacks.Callback], history: dict[str, list[float]]
) -> Outcome:
    """The outcome of a ``fit()`` that returned: the loss became NaN under
    TerminateOnNaN, EarlyStopping stopped it, or every epoch ran."""
    losses = history.get("loss") or []
    terminate_on_nan = any(isinstance(cb, TerminateOnNaNSpec) for cb in spec.callbacks)
    if terminate_on_nan and losses and not np.isfinite(losses[-1]):
        return Outcome(
            JobStatus.FAILED,
            StopReason.NAN_LOSS,
            history=history,
            error=(
                "NaNLoss",
                f"the loss became {losses[-1]} in epoch "
                f"{spec.fit.initial_epoch + len(losses)}; TerminateOnNaN stopped training",
                "",
            ),
        )
    for cb in callbacks:
        if isinstance(cb, keras.callbacks.EarlyStopping) and cb.stopped_epoch > 0:
            return Outcome(JobStatus.SUCCEEDED, StopReason.EARLY_STOPPING, history=history)
    return Outcome(JobStatus.SUCCEEDED, StopReason.COMPLETED, history=history)


def cancelled(class_weight: dict[int, float] | None) -> Outcome:
    return Outcome(JobStatus.CANCELLED, StopReason.CANCELLED, class_weight=class_weight)


def past_deadline(spec: JobSpec, class_weight: dict[int, float] | None) -> Outcome:
    return Outcome(
        JobStatus.FAILED,
        StopReason.MAX_RUNTIME,
        class_weight=class_weight,
        error=(
            "MaxRuntimeExceeded",
            f"the job ran past max_runtime_seconds={spec.max_runtime_seconds}",
            "",
        ),
    )
