"""Response bodies of the v1 API."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field

from models.tables import Checkpoint, EpochMetric, Job


class ErrorOut(BaseModel):
    """Every error: a message, or FastAPI's list of {loc, msg, type} for invalid input."""

    detail: Any


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {
        "model": ErrorOut,
        "description": "Missing, unknown or revoked bearer token (when auth is on).",
    },
    404: {"model": ErrorOut, "description": "No such resource, or it belongs to another owner."},
    413: {"model": ErrorOut, "description": "The request body is over its size limit."},
    422: {
        "model": ErrorOut,
        "description": "Invalid input; `detail` names each field and what was expected.",
    },
}


class Progress(BaseModel):
    epoch: int | None = Field(description="The epoch being trained (1-based).")
    epochs: int = Field(description="fit.epochs: the index of the last epoch.")
    step: int | None = Field(description="Batches done in the current epoch.")
    steps: int | None = Field(description="Batches in an epoch, when Keras knows it.")


class Best(BaseModel):
    epoch: int
    monitor: str
    value: float


class JobError(BaseModel):
    type: str
    message: str
    traceback_tail: str


class FindingOut(BaseModel):
    kind: str = Field(description="overfitting, underfitting or divergence.")
    epoch: int = Field(description="The epoch the finding starts at (1-based).")
    message: str = Field(description="What the epoch history shows.")
    remedy: str = Field(description="The fit() argument, callback or change that addresses it.")


class InsightOut(BaseModel):
    """What the job's epoch history says, recomputed as epochs are recorded."""

    monitor: str = Field(description="The metric followed: the first monitoring callback's.")
    mode: str = Field(description="min or max: the direction in which the monitor improves.")
    best_epoch: int | None = Field(description="The epoch with the best monitored value.")
    best_value: float | None
    early_stopping_epoch: int | None = Field(
        description="The last epoch, when EarlyStopping stopped the job."
    )
    final_weights_epoch: int | None = Field(
        description="With restore_best_weights: the epoch whose weights the final model "
        "holds (null while training or without restore_best_weights)."
    )
    overfitting_epoch: int | None = Field(description="Where overfitting starts, if it does.")
    findings: list[FindingOut]


class JobOut(BaseModel):
    id: str
    name: str | None
    queue: str
    status: str = Field(description="queued, running, succeeded, failed or cancelled.")
    stop_reason: str | None = Field(
        description="completed, early_stopping, cancelled, max_runtime, nan_loss or error."
    )
    spec: dict[str, Any] = Field(description="The stored spec, with the seed filled in.")
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    attempts: int
    cancel_requested: bool
    progress: Progress
    latest_metrics: dict[str, float | None] | None
    best: Best | None
    test_metrics: dict[str, float | None] | None
    class_weight: dict[str, float] | None = Field(
        description="The class weights fit() used; for 'balanced', the computed weights."
    )
    warnings: list[str]
    error: JobError | None
    insight: InsightOut | None = Field(
        description="Best epoch, overfitting onset, underfitting and divergence findings."
    )

    @classmethod
    def of(cls, job: Job, insight: dict[str, Any] | None) -> JobOut:
        error = None
        if job.error_type:
            error = JobError(
                type=job.error_type,
                message=job.error_message or "",
                traceback_tail=job.error_traceback or "",
            )
        return cls(
            id=job.id,
            name=job.name,
            queue=job.queue,
            status=job.status,
            stop_reason=job.stop_reason,
            spec=job.spec,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            attempts=job.attempts,
            cancel_requested=job.cancel_requested,
            progress=Progress(
                epoch=job.progress_epoch,
                epochs=int(job.spec["fit"]["epochs"]),
                step=job.progress_step,
                steps=job.progress_steps,
            ),
            latest_metrics=job.latest_metrics,
            best=Best.model_validate(job.best) if job.best else None,
            test_metrics=job.test_metrics,
            class_weight=job.class_weight,
            warnings=list(job.warnings or []),
            error=error,
            insight=InsightOut.model_validate(insight) if insight is not None else None,
        )


class Validation(BaseModel):
    warnings: list[str] = Field(description="Advice on a spec that can run.")


class JobList(BaseModel):
    items: list[JobOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page.")


class EpochOut(BaseModel):
    epoch: int = Field(description="1-based, as in Keras' progress output.")
    metrics: dict[str, float | None] = Field(description="Every key Keras put in the logs.")
    lr: float | None
    duration_s: float
    recorded_at: dt.datetime
    attempt: int | None = Field(description="The attempt that recorded this epoch.")

    @classmethod
    def of(cls, row: EpochMetric) -> EpochOut:
        return cls(
            attempt=row.attempt,
            epoch=row.epoch,
            metrics=row.metrics,
            lr=row.lr,
            duration_s=row.duration_s,
            recorded_at=row.recorded_at,
        )


class MetricsList(BaseModel):
    items: list[EpochOut]
    last_epoch: int | None = Field(description="The last epoch returned, for ?after_epoch=.")


class CheckpointOut(BaseModel):
    id: int
    epoch: int
    path: str = Field(description="Relative to the job's artifact folder.")
    monitor: str | None
    value: float | None
    is_best: bool
    size_bytes: int
    created_at: dt.datetime

    @classmethod
    def of(cls, row: Checkpoint) -> CheckpointOut:
        return cls(
            id=row.id,
            epoch=row.epoch,
            path=row.path,
            monitor=row.monitor,
            value=row.value,
            is_best=row.is_best,
            size_bytes=row.size_bytes,
            created_at=row.created_at,
        )


class CheckpointList(BaseModel):
    items: list[CheckpointOut]


class EventOut(BaseModel):
    at: dt.datetime
    kind: str
    message: str
    attempt: int | None


class EventList(BaseModel):
    items: list[EventOut]
