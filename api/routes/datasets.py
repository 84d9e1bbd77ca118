"""Datasets: upload a ``.npz`` or an image folder archive, list, read, delete."""

from __future__ import annotations

import datetime as dt
import shutil
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Query, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import PrincipalDep, SessionDep, SettingsDep
from api.schemas import ERRORS, FROM_ROWS, ErrorOut
from api.tokens import Principal
from core.errors import NotFound
from models.states import JobStatus
from models.tables import Dataset, Job, JobDataset
from storage.images import store_images
from storage.uploads import UploadError, dataset_dir, store_npz

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
        "FITQ_MAX_LABEL_CLASSES - 1, null otherwise. Image archives: class_names too.",
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
        raise HTTPException(
            422,
            [
                {
                    "loc": ["body", "file"],
                    "type": "value_error",
                    "msg": f"received a file named {filename!r}; expected a .npz (np.savez(f, "
                    "x=..., y=...)) or a .zip with one folder of images per class",
                }
            ],
        )
    kind = "images" if filename.endswith(".zip") else "npz"
    store = store_images if kind == "images" else store_npz
    try:
        dataset_id, size, sha, info = await run_in_threadpool(store, file.file, settings)
    except UploadError as exc:
        raise HTTPException(
            exc.status, [{"loc": ["body", "file"], "msg": str(exc), "type": "upload"}]
        ) from exc
    row = Dataset(
        id=dataset_id,
        owner=principal.owner,
        name=name or filename,
        kind=kind,
        size_bytes=size,
        sha256=sha,
        info=info,
    )
    session.add(row)
    session.commit()
    response.headers["Location"] = f"/v1/datasets/{dataset_id}"
    return DatasetOut.model_validate(row)


@router.get("", response_model=DatasetList)
def list_datasets(
    session: SessionDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DatasetList:
    """Datasets, newest first."""
    query = select(Dataset)
    if not principal.admin:
        query = query.where(Dataset.owner == principal.owner)
    rows = session.scalars(query.order_by(Dataset.created_at.desc()).limit(limit))
    return DatasetList(items=[DatasetOut.model_validate(r) for r in rows])


def _visible(session: Session, dataset_id: str, principal: Principal) -> Dataset:
    row = session.get(Dataset, dataset_id) if len(dataset_id) <= 32 else None
    if row is None or not principal.sees(row.owner):
        raise NotFound("dataset", dataset_id)
    return row


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
    if users:
        raise HTTPException(
            409,
            f"dataset {dataset_id} is used by queued or running jobs "
            f"{sorted(users)}; cancel them or wait for them to finish",
        )
    session.delete(row)
    session.commit()
    shutil.rmtree(dataset_dir(settings, dataset_id), ignore_errors=True)
    return Response(status_code=204)
