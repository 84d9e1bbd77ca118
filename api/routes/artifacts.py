"""A job's artifacts and an owner's storage: delete a finished job's files, see the
bytes an owner's datasets, models, checkpoints and trained models take."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, func, select, true
from sqlalchemy.orm import InstrumentedAttribute, Session

from api import jobs as store
from api.deps import PrincipalDep, SessionDep, SettingsDep
from api.schemas import ERRORS, ErrorOut
from api.tokens import Principal
from models.tables import Checkpoint, Dataset, Job, UploadedModel
from storage.retention import delete_artifacts

router = APIRouter(responses=ERRORS)


class ArtifactsDeleted(BaseModel):
    job_id: str
    checkpoints_removed: int = Field(
        description="Checkpoint rows marked removed now (removed_reason: deleted); rows "
        "retention had removed already are not counted."
    )
    bytes_freed: int = Field(description="Bytes of the files removed now.")


@router.delete(
    "/v1/jobs/{job_id}/artifacts",
    response_model=ArtifactsDeleted,
    tags=["jobs"],
    responses={
        409: {
            "model": ErrorOut,
            "description": "The job is queued or running, or queued or running jobs use "
            "its model or checkpoints (its runs, warm starts from it).",
        }
    },
)
def delete_job_artifacts(
    job_id: str, session: SessionDep, settings: SettingsDep, principal: PrincipalDep
) -> ArtifactsDeleted:
    """Delete a finished job's files: its checkpoints, trained model and SavedModel,
    TensorBoard and CSV logs, predictions and backups; the training log stays.

    Only the job's owner (or an admin) can; another owner's job is 404. The rows stay:
    the job shows `artifacts_removed_at`, its checkpoints `removed_at` and
    `removed_reason: deleted`, and their downloads answer 410. Deleting again frees
    what is left (nothing) and answers the same way.
    """
    job = store.get_job(session, job_id, principal)
    removed = delete_artifacts(session, settings, job)
    return ArtifactsDeleted(
        job_id=job_id, checkpoints_removed=removed.checkpoints, bytes_freed=removed.bytes
    )


class StorageItem(BaseModel):
    count: int
    bytes: int


class UsageOut(BaseModel):
    owner: str | None = Field(
        description="Whose storage this is; null for the whole server (an admin without "
        "?owner=, or any caller while auth is off)."
    )
    datasets: StorageItem = Field(description="Uploaded datasets, by the size of the upload.")
    models: StorageItem = Field(description="Uploaded models (.keras files).")
    checkpoints: StorageItem = Field(
        description="Checkpoint files still there (not removed by retention or deletion)."
    )
    final_models: StorageItem = Field(
        description="The model.keras files succeeded jobs saved, unless their artifacts "
        "were deleted."
    )
    total_bytes: int = Field(description="The sum of the four.")


@router.get(
    "/v1/usage",
    response_model=UsageOut,
    tags=["usage"],
    responses={403: {"model": ErrorOut, "description": "?owner= names another owner."}},
)
def get_usage(
    session: SessionDep,
    principal: PrincipalDep,
    owner: Annotated[
        str | None,
        Query(max_length=100, description="An admin's view of one owner's storage."),
    ] = None,
) -> UsageOut:
    """The storage an owner's files take: the bytes and count of their datasets,
    models, checkpoints and trained models, as recorded when each was written.

    A caller sees their own; an admin sees the whole server's, or one owner's with
    `?owner=`. TensorBoard and CSV logs, SavedModels and predictions are not counted.
    """
    return _usage(session, _whose(principal, owner))


def _whose(principal: Principal, owner: str | None) -> str | None:
    """The owner whose usage to sum; None for the whole server."""
    if owner is None:
        return None if principal.admin else principal.owner
    if not principal.admin and owner != principal.owner:
        raise HTTPException(403, "only an admin may see another owner's usage")
    return owner


def _usage(session: Session, owner: str | None) -> UsageOut:
    def of(column: InstrumentedAttribute[str | None]) -> ColumnElement[bool]:
        return true() if owner is None else column == owner

    datasets = _sum(session, Dataset.size_bytes, of(Dataset.owner))
    models = _sum(session, UploadedModel.size_bytes, of(UploadedModel.owner))
    checkpoints = _sum(
        session,
        Checkpoint.size_bytes,
        of(Job.owner) & Checkpoint.removed_at.is_(None),
        join=True,
    )
    final = _sum(
        session,
        Job.model_size_bytes,
        of(Job.owner) & Job.model_size_bytes.is_not(None) & Job.artifacts_removed_at.is_(None),
    )
    items = (datasets, models, checkpoints, final)
    return UsageOut(
        owner=owner,
        datasets=datasets,
        models=models,
        checkpoints=checkpoints,
        final_models=final,
        total_bytes=sum(i.bytes for i in items),
    )


def _sum(
    session: Session,
    column: InstrumentedAttribute[Any],
    where: ColumnElement[bool],
    join: bool = False,
) -> StorageItem:
    query = select(func.count(), func.coalesce(func.sum(column), 0))
    query = query.select_from(Checkpoint).join(Job, Checkpoint.job_id == Job.id) if join else query
    row = session.execute(query.where(where)).one()
    return StorageItem(count=int(row[0]), bytes=int(row[1]))
