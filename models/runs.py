"""Runs: a finished job's trained model evaluated or used to predict, as a job of its own.

A run is queued, claimed, leased and cancelled like a training job. Its stored spec
is one of the run specs here (``kind`` tells which), not a ``JobSpec``: it names the
data and ``batch_size``, and the queue it waits on (its parent's). The model is the
parent job's ``model.keras``; the parent is the job's ``parent_job_id``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, TypeAdapter, model_validator

from models.spec import DataRef

PositiveInt = Annotated[int, Strict(), Field(gt=0)]


class JobKind(StrEnum):
    """What a job does: trains a model (``fit``), or uses a trained one."""

    FIT = "fit"
    EVALUATE = "evaluate"
    PREDICT = "predict"


RUN_KINDS = (JobKind.EVALUATE, JobKind.PREDICT)
# The file a run of kind predict writes in its job folder: ``np.save`` of predict()'s array.
PREDICTIONS_FILE = "predictions.npy"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class InputRef(_Strict):
    """The inputs to predict on: a stored dataset's ``x``, or inline ``x`` alone.

    Attributes:
        dataset: ``builtin:digits`` (or another built-in), or an uploaded dataset's id.
        split: Which part of the dataset, as in a job's data. Defaults to ``all``.
        take: Use only the first ``take`` samples. Defaults to all of them.
        x: Inline inputs, a (nested) list of numbers, first axis the samples.
    """

    dataset: str | None = Field(default=None, max_length=128)
    split: Literal["train", "validation", "test", "all"] = "all"
    take: PositiveInt | None = None
    x: list[Any] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> InputRef:
        if (self.dataset is None) == (self.x is None):
            raise ValueError("give either 'dataset' (e.g. 'builtin:digits') or inline 'x'")
        if self.x is not None and self.split != "all":
            raise ValueError("'split' applies to a 'dataset', not to inline data")
        return self

    def data_ref(self) -> DataRef | None:
        """The same data as a job's ``DataRef``, for a dataset (inline ``x`` has no labels)."""
        if self.dataset is None:
            return None
        return DataRef(dataset=self.dataset, split=self.split, take=self.take)


class EvaluateRequest(_Strict):
    """``model.evaluate()`` with a finished job's model.

    Attributes:
        data: The data and labels to evaluate on, as a job's ``data.test``.
        batch_size: evaluate()'s ``batch_size``. Defaults to null (Keras: 32).
        name: A label for the run. Optional.
    """

    data: DataRef
    batch_size: PositiveInt | None = None
    name: str | None = Field(default=None, max_length=200)


class PredictRequest(_Strict):
    """``model.predict()`` with a finished job's model.

    Attributes:
        data: The inputs: a dataset (its labels are not used) or inline ``x``.
        batch_size: predict()'s ``batch_size``. Defaults to null (Keras: 32).
        name: A label for the run. Optional.
    """

    data: InputRef
    batch_size: PositiveInt | None = None
    name: str | None = Field(default=None, max_length=200)


class EvaluateSpec(EvaluateRequest):
    """An evaluate run as its job stores it."""

    kind: Literal["evaluate"] = "evaluate"
    queue: str = Field(max_length=64)


class PredictSpec(PredictRequest):
    """A predict run as its job stores it."""

    kind: Literal["predict"] = "predict"
    queue: str = Field(max_length=64)


RunSpec = Annotated[EvaluateSpec | PredictSpec, Field(discriminator="kind")]
RUN_SPEC: TypeAdapter[EvaluateSpec | PredictSpec] = TypeAdapter(RunSpec)
