"""Response bodies of the v1 API."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import (
    AliasPath,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    model_validator,
)

from models.runs import JobKind
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
    epochs: int | None = Field(
        default=None,
        validation_alias=AliasPath("spec", "fit", "epochs"),
        description="fit.epochs: the index of the last epoch (null for an evaluate or "
        "predict run, which has no epochs).",
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


class FinalModelOut(BaseModel):
    """The trained model a succeeded job saved; download it from ``/v1/jobs/{id}/model``."""

    model_config = FROM_ROWS  # read from a job row's model_* columns and its spec
    size_bytes: int = Field(
        validation_alias="model_size_bytes", description="The size of model.keras in bytes."
    )
    sha256: str = Field(
        validation_alias="model_sha256",
        description="The SHA-256 of model.keras (hex); its download's ETag.",
    )
    savedmodel: bool = Field(
        default=False,
        validation_alias=AliasPath("spec", "output", "export"),
        description="Whether a SavedModel was exported too (output.export), for "
        "?format=savedmodel.",
    )


class JobOut(BaseModel):
    # Read from a job row: JobOut.model_validate(job, context={"insight": ...}), the
    # insight being computed from the job's epochs (api.job_view). progress and error
    # are each made of several columns, which they read from the row themselves.
    model_config = FROM_ROWS
    id: str
    name: str | None
    queue: str
    kind: JobKind = Field(
        description="fit (a training job), or evaluate or predict (a run that uses the "
        "trained model of the job parent_job_id)."
    )
    parent_job_id: str | None = Field(
        description="For a run: the training job whose model it uses; for a warm start "
        "(model.from_job): the job whose checkpoint it started from."
    )
    status: JobStatus = Field(description="queued, running, succeeded, failed or cancelled.")
    stop_reason: StopReason | None = Field(
        description="completed, early_stopping, cancelled, max_runtime, nan_loss or error."
    )
    spec: dict[str, Any] = Field(
        description="The stored spec, with the seed filled in; for a run, its run spec "
        "(kind, data, batch_size, queue)."
    )
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    attempts: int
    cancel_requested: bool
    progress: Progress
    latest_metrics: dict[str, float | None] | None
    best: Annotated[Best | None, BeforeValidator(_or_none)]
    test_metrics: dict[str, float | None] | None = Field(
        description="evaluate()'s results: on data.test after training, or an evaluate run's."
    )
    class_weight: dict[str, float] | None = Field(
        description="The class weights fit() used; for 'balanced', the computed weights."
    )
    warnings: Annotated[list[str], BeforeValidator(_or_no_items)]
    error: JobError | None
    final_model: FinalModelOut | None = Field(
        description="model.keras, once the job has succeeded: the weights fit() finished "
        "with (after EarlyStopping's restore_best_weights), on which test_metrics were "
        "computed."
    )
    insight: InsightOut | None = Field(
        description="Best epoch, overfitting onset, underfitting and divergence findings."
    )
    model_id: str | None = Field(
        default=None, description="The uploaded model (model.uploaded) the job trains."
    )
    artifacts_removed_at: dt.datetime | None = Field(
        default=None,
        description="When DELETE /v1/jobs/{id}/artifacts removed the job's files "
        "(checkpoints, model, TensorBoard and CSV logs, predictions; the training log "
        "stays); their downloads answer 410 since. Null while they are there.",
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
            final_model=data if data.model_sha256 else None,
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
    removed_at: dt.datetime | None = Field(
        default=None,
        description="When fitq removed the file; null while it is there. Its download "
        "answers 410 since.",
    )
    removed_reason: Literal["retention", "deleted"] | None = Field(
        default=None,
        description="retention: the job's output.retention (or the server's default) did "
        "not keep it once the job ended; deleted: DELETE /v1/jobs/{id}/artifacts.",
    )


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
