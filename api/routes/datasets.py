"""Datasets: upload a ``.npz`` or an image folder archive, list, read, delete."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Response, UploadFile
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import PrincipalDep, SessionDep, SettingsDep
from api.owned import checked, delete_unused, kept, newest, visible, wrong_file
from api.schemas import ERRORS, FROM_ROWS, ErrorOut
from api.tokens import Principal
from models.states import JobStatus
from models.tables import Dataset, Job, JobDataset
from storage.images import store_images
from storage.uploads import delete_dataset as delete_dataset_files
from storage.uploads import store_npz

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], responses=ERRORS)


class DatasetOut(BaseModel):
    model_config = FROM_ROWS
    id: str = Field(description="Use it in a job spec as {dataset: <id>}.")
    name: str | None
    kind: str = Field(description="npz, or images (a zip of one folder per class)")
    created_at: dt.datetime
    size_bytes: int = Field(description="Size of the uploaded file.")
    sha256: str
    splits: dict[str, Any] = Field(
        validation_alias="info",
        description="Per split (train, validation, test): n_samples, x_shape, x_dtype, "
        "y_shape, y_dtype, bytes, y_min and y_max (the labels' range), and n_classes and "
        "class_counts: a histogram when every label is an integer in 0 .. "
        'FITQ_MAX_LABEL_CLASSES - 1, null otherwise; sample_weight: null, "all" or the '
        "outputs weighed. Arrays by model input or output name (x/<input>, y/<output>) are "
        "described under inputs and outputs, by name. Image archives: class_names too.",
    )


class DatasetList(BaseModel):
    items: list[DatasetOut]


@router.post(
    "",
    status_code=201,
    response_model=DatasetOut,
    responses={
        400: {"model": ErrorOut, "description": "The multipart body cannot be parsed."},
        413: {"description": "The file is over FITQ_MAX_UPLOAD_BYTES or decompresses too large."},
        422: {"description": "The file is not a valid dataset; `detail` says why."},
    },
)
async def upload_dataset(
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    response: Response,
    file: Annotated[
        UploadFile,
        File(
            description="A .npz with arrays x and y, and optionally x_val/y_val and "
            "x_test/y_test, of finite numbers (no NaN or infinity); or a .zip with one "
            "folder of images (png, jpg, bmp, gif) per class."
        ),
    ],
    name: Annotated[str | None, Form(max_length=200)] = None,
) -> DatasetOut:
    """Upload a dataset; it is checked completely before it is accepted."""
    filename = file.filename or ""
    if not filename.endswith((".npz", ".zip")):
        raise wrong_file(
            f"received a file named {filename!r}; expected a .npz (np.savez(f, x=..., "
            "y=...)) or a .zip with one folder of images per class"
        )
    kind = "images" if filename.endswith(".zip") else "npz"
    store = store_images if kind == "images" else store_npz
    dataset_id, size, sha, info = await checked(store, file, settings)
    row = Dataset(
        id=dataset_id,
        owner=principal.owner,
        name=name or filename,
        kind=kind,
        size_bytes=size,
        sha256=sha,
        info=info,
    )
    return DatasetOut.model_validate(kept(session, row, response, f"/v1/datasets/{dataset_id}"))


@router.get("", response_model=DatasetList)
def list_datasets(
    session: SessionDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DatasetList:
    """Datasets, newest first."""
    rows = newest(session, Dataset, principal, limit)
    return DatasetList(items=[DatasetOut.model_validate(r) for r in rows])


def _visible(session: Session, dataset_id: str, principal: Principal) -> Dataset:
    return visible(session, Dataset, dataset_id, principal, "dataset")


@router.get("/{dataset_id}", response_model=DatasetOut)
def get_dataset(dataset_id: str, session: SessionDep, principal: PrincipalDep) -> DatasetOut:
    """One dataset's metadata."""
    row = _visible(session, dataset_id, principal)
    return DatasetOut.model_validate(row)


@router.delete(
    "/{dataset_id}",
    status_code=204,
    responses={409: {"description": "A queued or running job uses the dataset."}},
)
def delete_dataset(
    dataset_id: str, session: SessionDep, settings: SettingsDep, principal: PrincipalDep
) -> Response:
    """Delete a dataset that no queued or running job uses."""
    row = _visible(session, dataset_id, principal)
    users = session.scalars(
        select(Job.id)
        .join(JobDataset, JobDataset.job_id == Job.id)
        .where(
            JobDataset.dataset_id == dataset_id,
            Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING)),
        )
    ).all()
    delete_unused(session, row, users, "dataset")
    delete_dataset_files(settings, dataset_id)
    return Response(status_code=204)
