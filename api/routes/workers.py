"""Workers: who consumes which queues, on which devices, training what."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, HTTPException
from pydantic import AliasPath, BaseModel, Field
from sqlalchemy import select

from api.deps import PrincipalDep, SessionDep, SettingsDep
from api.schemas import ERRORS, FROM_ROWS, ErrorOut, With
from models.states import JobStatus
from models.tables import Job, Worker, utcnow

router = APIRouter(prefix="/v1/workers", tags=["workers"], responses=ERRORS)


class WorkerJob(BaseModel):
    """The job a worker trains now."""

    model_config = FROM_ROWS  # read from the job's row
    id: str
    name: str | None
    queue: str
    started_at: dt.datetime | None
    epoch: int | None = Field(
        validation_alias="progress_epoch", description="The epoch in progress (1-based)."
    )
    epochs: int | None = Field(
        default=None,
        validation_alias=AliasPath("spec", "fit", "epochs"),
        description="The spec's fit.epochs (null for an evaluate or predict run).",
    )


class WorkerOut(BaseModel):
    """One worker process, as it last reported itself."""

    model_config = FROM_ROWS  # read from its row, with alive and job added
    name: str = Field(description="Celery node name, fitq-[gpuN-]PID@HOST.")
    host: str
    pid: int
    queues: list[str] = Field(
        description="Queues it consumes, with <queue>.gpusN for each N up to its devices."
    )
    device_kind: str = Field(description="gpu, or cpu for a worker without GPUs.")
    devices: int = Field(description="GPUs, or logical CPUs, a job may use there.")
    gpus: str | None = Field(description="CUDA_VISIBLE_DEVICES of a worker pinned to GPUs.")
    started_at: dt.datetime
    heartbeat_at: dt.datetime
    stopped_at: dt.datetime | None
    alive: bool = Field(description="Heard from within FITQ_LEASE_SECONDS and not stopped.")
    job: WorkerJob | None = Field(description="The running job it trains, if any.")


class WorkerList(BaseModel):
    items: list[WorkerOut]


@router.get(
    "",
    response_model=WorkerList,
    responses={403: {"model": ErrorOut, "description": "The token is not an admin's."}},
)
def list_workers(session: SessionDep, settings: SettingsDep, principal: PrincipalDep) -> WorkerList:
    """Workers heard from in the last day, live ones first, each with the job it trains."""
    if not principal.admin:
        raise HTTPException(403, "listing workers needs an admin token (fitq token create --admin)")
    alive_since = utcnow() - dt.timedelta(seconds=settings.lease_seconds)
    jobs = {
        job.worker: job
        for job in session.scalars(select(Job).where(Job.status == JobStatus.RUNNING))
        if job.worker
    }
    items = [
        WorkerOut.model_validate(
            With(
                w,
                alive=w.stopped_at is None and w.heartbeat_at >= alive_since,
                job=jobs.get(w.name),
            )
        )
        for w in session.scalars(select(Worker))
    ]
    items.sort(key=lambda w: (not w.alive, w.name))
    return WorkerList(items=items)
