"""A job's trained model: the ``model.keras`` it saved, or its SavedModel as a .tar.gz."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response

from api import jobs as store
from api.deps import PrincipalDep, SessionDep, SettingsDep
from api.files import GONE, GZIP, OCTET_STREAM, not_deleted, send_artifact, send_artifact_folder
from api.schemas import ERRORS, ErrorOut
from core.errors import NotFound
from core.settings import Settings
from models.file_names import EXPORT_DIR, FINAL_MODEL_FILE
from models.states import JobStatus
from models.tables import Job

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=ERRORS)

BINARY: dict[str, Any] = {"schema": {"type": "string", "format": "binary"}}
ModelFormat = Literal["keras", "savedmodel"]


@router.get(
    "/{job_id}/model",
    response_model=None,
    responses={
        200: {
            "description": "`model.keras` (`ETag`: its SHA-256, quoted), or with "
            "`format=savedmodel` the SavedModel's folder as a gzip-compressed tar archive.",
            "content": {OCTET_STREAM: BINARY, GZIP: BINARY},
        },
        304: {"description": "Not modified: `If-None-Match` named this model's ETag."},
        404: {
            "model": ErrorOut,
            "description": "No such job; or no model in this format: the job has not "
            "succeeded, or (savedmodel) its spec did not ask for `output.export`.",
        },
        **GONE,
    },
)
def download_model(
    job_id: str,
    session: SessionDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    request: Request,
    model_format: Annotated[
        ModelFormat,
        Query(
            alias="format",
            description="`keras` (model.keras) or `savedmodel` (a .tar.gz of export/).",
        ),
    ] = "keras",
) -> Response:
    """Download the trained model a succeeded job saved: the weights fit() finished with."""
    job = store.get_job(session, job_id, principal)
    sha256 = _saved(job)
    not_deleted(job, "trained model")
    if model_format == "savedmodel":
        return _savedmodel(job, settings)
    if f'"{sha256}"' in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers={"ETag": f'"{sha256}"'})
    return send_artifact(
        settings, job.id, FINAL_MODEL_FILE, f"model-{job.id}.keras", "model file", etag=sha256
    )


def _saved(job: Job) -> str:
    """The SHA-256 of the job's model.keras; NotFound, saying why, when it has none."""
    if job.model_sha256 is not None:
        return job.model_sha256
    status = JobStatus(job.status)
    if status is JobStatus.SUCCEEDED:
        reason = "the job finished before fitq kept trained models"
    elif status in (JobStatus.QUEUED, JobStatus.RUNNING):
        reason = f"the job is {status.value}; its model is saved once it succeeds"
    else:
        ended = "was cancelled" if status is JobStatus.CANCELLED else f"failed ({job.stop_reason})"
        reason = (
            f"the job {ended}; only a succeeded job saves its model (its checkpoints, if "
            "any, are at /checkpoints)"
        )
    raise NotFound("model of job", job.id, reason)


def _savedmodel(job: Job, settings: Settings) -> Response:
    if not (job.spec.get("output") or {}).get("export"):
        raise NotFound(
            "SavedModel of job",
            job.id,
            "its spec did not ask for one (output: {export: true}); model.keras is "
            "at ?format=keras",
        )
    return send_artifact_folder(
        settings, job.id, EXPORT_DIR, f"savedmodel-{job.id}", "SavedModel folder"
    )
