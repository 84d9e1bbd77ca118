"""Runs: evaluate or predict with a finished job's trained model, as jobs of their own."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from api import jobs as store
from api import runs
from api.deps import CeleryDep, PrincipalDep, SessionDep, SettingsDep
from api.files import GONE, not_deleted, send_artifact
from api.job_view import job_out
from api.routes.jobs import answer_queued, jobs_page
from api.schemas import ERRORS, JobList, JobOut
from core.errors import NotFound
from models.runs import PREDICTIONS_FILE, RUN_KINDS, EvaluateRequest, JobKind, PredictRequest
from models.states import JobStatus

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=ERRORS)

RUN_ERRORS: dict[int | str, dict[str, object]] = {
    200: {
        "model": JobOut,
        "description": "The run an earlier request with this Idempotency-Key created.",
    },
    201: {"description": "The run, queued; `Location` is its job."},
    404: {"description": "No such job, or it belongs to another owner."},
    409: {
        "description": "The job has no trained model (it has not succeeded, or is a run), "
        "or the Idempotency-Key was used for another request."
    },
    410: {"description": "The job's artifacts, its trained model with them, were deleted."},
    422: {
        "description": "The data cannot be read, or does not fit the model (samples' shape, "
        "labels); `detail` names each field and what was expected."
    },
    429: {"description": "The owner has FITQ_MAX_JOBS_IN_FLIGHT jobs queued or running."},
}


@router.post("/{job_id}/evaluate", status_code=201, response_model=JobOut, responses=RUN_ERRORS)
def evaluate_job(
    job_id: str,
    request: EvaluateRequest,
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    celery: CeleryDep,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JobOut:
    """Queue `model.evaluate()` of the job's trained model on the data given.

    The run is a job of kind `evaluate` whose `parent_job_id` is this job; its
    `test_metrics` hold what evaluate() returned (`return_dict=True`).
    """
    job, created = runs.create_run(session, job_id, request, settings, principal, idempotency_key)
    answer_queued(job, created, celery, response)
    return job_out(session, job)


@router.post("/{job_id}/predict", status_code=201, response_model=JobOut, responses=RUN_ERRORS)
def predict_job(
    job_id: str,
    request: PredictRequest,
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    celery: CeleryDep,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JobOut:
    """Queue `model.predict()` of the job's trained model on the inputs given.

    The run is a job of kind `predict` whose `parent_job_id` is this job; once it has
    succeeded, `GET /v1/jobs/{run_id}/predictions` downloads the predictions.
    """
    job, created = runs.create_run(session, job_id, request, settings, principal, idempotency_key)
    answer_queued(job, created, celery, response)
    return job_out(session, job)


@router.get("/{job_id}/runs", response_model=JobList)
def list_runs(
    job_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> JobList:
    """The evaluate and predict runs that used this job's model, newest first."""
    store.get_job(session, job_id, principal)
    return jobs_page(session, principal, cursor, limit, kinds=RUN_KINDS, parent=job_id)


@router.get(
    "/{job_id}/predictions",
    response_model=None,
    responses={
        **GONE,
        200: {
            "description": "predict()'s array, as `numpy.save` writes it (`.npy`).",
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        },
        404: {
            "description": "No such job, not a predict run, or its predictions are not "
            "written yet (it has not succeeded)."
        },
    },
)
def download_predictions(
    job_id: str, session: SessionDep, settings: SettingsDep, principal: PrincipalDep
) -> Response:
    """Download a predict run's predictions (`numpy.load` reads them)."""
    job = store.get_job(session, job_id, principal)
    if job.kind != JobKind.PREDICT:
        raise NotFound("predictions of job", job_id, f"it is a {job.kind} job, not a predict run")
    if job.status != JobStatus.SUCCEEDED:
        raise NotFound(
            "predictions of job",
            job_id,
            f"the run is {job.status}; they are written once it succeeds",
        )
    not_deleted(job, "predictions")
    return send_artifact(
        settings, job_id, PREDICTIONS_FILE, f"predictions-{job_id}.npy", "predictions file"
    )
