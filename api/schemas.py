"""Response bodies of the v1 API."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import (
    AliasPath,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    model_validator,
)

from models.states import JobStatus, StopReason
from models.tables import Job

# Responses are read from rows: ``JobOut.model_validate(job)``, ``EpochOut.model_validate(row)``.
FROM_ROWS = ConfigDict(from_attributes=True)


class With:
    """An object's attributes, with some added: what ``model_validate`` reads for a response
    whose fields are not all columns of one row."""

    def __init__(self, obj: object, **added: Any) -> None:
        self._obj = obj
        self.__dict__.update(added)

    def __getattr__(self, name: str) -> Any:  # only for names not added
        return getattr(self._obj, name)


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
    model_config = FROM_ROWS  # read from a job row: progress_* and the spec's fit.epochs
    epoch: int | None = Field(
        validation_alias="progress_epoch", description="The epoch being trained (1-based)."
    )
    epochs: int = Field(
        validation_alias=AliasPath("spec", "fit", "epochs"),
        description="fit.epochs: the index of the last epoch.",
    )
    step: int | None = Field(
        validation_alias="progress_step", description="Batches done in the current epoch."
    )
    steps: int | None = Field(
        validation_alias="progress_steps", description="Batches in an epoch, when Keras knows it."
    )


class Best(BaseModel):
    epoch: int
    monitor: str
    value: float


def _or_empty(text: str | None) -> str:
    return text or ""


def _or_none(value: Any) -> Any:
    return value or None


def _or_no_items(items: list[str] | None) -> list[str]:
    return items or []


class JobError(BaseModel):
    model_config = FROM_ROWS  # read from a job row's error_* columns
    type: str = Field(validation_alias="error_type")
    message: Annotated[str, BeforeValidator(_or_empty)] = Field(validation_alias="error_message")
    traceback_tail: Annotated[str, BeforeValidator(_or_empty)] = Field(
        validation_alias="error_traceback"
    )


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
    # Read from a job row: JobOut.model_validate(job, context={"insight": ...}), the
    # insight being computed from the job's epochs (api.job_view). progress and error
    # are each made of several columns, which they read from the row themselves.
    model_config = FROM_ROWS
    id: str
    name: str | None
    queue: str
    status: JobStatus = Field(description="queued, running, succeeded, failed or cancelled.")
    stop_reason: StopReason | None = Field(
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
    best: Annotated[Best | None, BeforeValidator(_or_none)]
    test_metrics: dict[str, float | None] | None
    class_weight: dict[str, float] | None = Field(
        description="The class weights fit() used; for 'balanced', the computed weights."
    )
    warnings: Annotated[list[str], BeforeValidator(_or_no_items)]
    error: JobError | None
    insight: InsightOut | None = Field(
        description="Best epoch, overfitting onset, underfitting and divergence findings."
    )

    @model_validator(mode="before")
    @classmethod
    def _from_row(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, Job):
            return data
        return With(
            data,
            progress=data,
            error=data if data.error_type else None,
            insight=(info.context or {}).get("insight"),
        )


class Validation(BaseModel):
    warnings: list[str] = Field(description="Advice on a spec that can run.")


class JobList(BaseModel):
    items: list[JobOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page.")


class EpochOut(BaseModel):
    model_config = FROM_ROWS
    epoch: int = Field(description="1-based, as in Keras' progress output.")
    metrics: dict[str, float | None] = Field(description="Every key Keras put in the logs.")
    lr: float | None
    duration_s: float
    recorded_at: dt.datetime
    attempt: int | None = Field(description="The attempt that recorded this epoch.")


class MetricsList(BaseModel):
    items: list[EpochOut]
    last_epoch: int | None = Field(description="The last epoch returned, for ?after_epoch=.")


class CheckpointOut(BaseModel):
    model_config = FROM_ROWS
    id: int
    epoch: int
    path: str = Field(description="Relative to the job's artifact folder.")
    monitor: str | None
    value: float | None
    is_best: bool
    size_bytes: int
    created_at: dt.datetime


class CheckpointList(BaseModel):
    items: list[CheckpointOut]


class EventOut(BaseModel):
    model_config = FROM_ROWS
    at: dt.datetime
    kind: str
    message: str
    attempt: int | None


class EventList(BaseModel):
    items: list[EventOut]
