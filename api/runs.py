"""The API's writes of runs: a finished job's model evaluated or used to predict."""

from __future__ import annotations

import hashlib
import json

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.jobs import (
    check_in_flight,
    dataset_info,
    get_job,
    keyed_job,
    queued_row,
    same_spec,
)
from api.tokens import Principal
from checks.datasets import BUILTIN_PREFIX
from checks.layer_args import SizeError
from checks.model_size import model_io
from checks.runs import check_run
from core.errors import Conflict, Gone
from core.settings import Settings
from models.runs import (
    EvaluateRequest,
    EvaluateSpec,
    JobKind,
    PredictRequest,
    PredictSpec,
)
from models.spec import JobSpec
from models.states import JobStatus
from models.tables import Job, JobDataset, JobEvent


def trained_job(session: Session, job_id: str, principal: Principal) -> Job:
    """The training job ``job_id``, which must have kept its trained model.

    Raises ``NotFound`` for a job ``principal`` cannot see, ``Conflict`` for a run or for
    a job without a model (not succeeded).
    """
    job = get_job(session, job_id, principal)
    if job.kind != JobKind.FIT:
        raise Conflict(
            f"job {job_id} is a {job.kind} run, which has no model of its own; "
            f"use the training job it ran on ({job.parent_job_id})"
        )
    if job.status != JobStatus.SUCCEEDED:
        raise Conflict(
            f"job {job_id} has no trained model: it is {job.status}, and only a succeeded "
            "job keeps one"
            + ("; wait until it succeeds" if not JobStatus(job.status).finished else "")
        )
    if job.model_sha256 is None:
        raise Conflict(
            f"job {job_id} has no trained model: it finished before fitq kept trained models"
        )
    if job.artifacts_removed_at is not None:
        raise Gone(
            f"job {job_id} has no trained model any more: its artifacts were deleted at "
            f"{job.artifacts_removed_at.isoformat()}"
        )
    inputs, outputs = _model_io(job)
    if len(inputs) > 1 or len(outputs) > 1:
        raise Conflict(
            f"job {job_id}'s model has inputs {inputs} and outputs {outputs}; evaluate and "
            "predict runs take a model of one input and one output"
        )
    return job


def _model_io(job: Job) -> tuple[list[str], list[str]]:
    """The names of a job's model's inputs and outputs, where its spec gives the config
    (one of each for a built-in or a stored model)."""
    config = (job.spec.get("model") or {}).get("keras_config")
    if not isinstance(config, dict):
        return [""], [""]
    try:
        return model_io(config)
    except SizeError:
        return [""], [""]


def create_run(
    session: Session,
    parent_id: str,
    request: EvaluateRequest | PredictRequest,
    settings: Settings,
    principal: Principal,
    idempotency_key: str | None = None,
) -> tuple[Job, bool]:
    """Checks the run against the model of job ``parent_id`` and stores it ``queued``;
    returns it and whether it is new.

    With an ``idempotency_key`` the owner already used for the same run of the same
    job, returns that run (for anything else, raises ``Conflict``), as a submission does.
    """
    parent = trained_job(session, parent_id, principal)
    stored = (
        EvaluateSpec(**request.model_dump(), queue=parent.queue)
        if isinstance(request, EvaluateRequest)
        else PredictSpec(**request.model_dump(), queue=parent.queue)
    )
    spec = stored.model_dump(mode="json")
    canonical = json.dumps({"parent": parent.id, **spec}, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    if idempotency_key is not None:
        existing = keyed_job(session, principal.owner or "", idempotency_key)
        if existing is not None:
            return same_spec(existing, digest, idempotency_key), False
    check_run(
        JobSpec.model_validate(parent.spec),
        request,
        settings,
        lambda ds_id: dataset_info(session, ds_id, principal),
    )
    check_in_flight(session, settings, principal)
    job = _new_run(parent, stored, digest, principal, idempotency_key)
    try:
        _store(session, job, request.data.dataset)
    except IntegrityError:
        session.rollback()
        if idempotency_key is None:
            raise
        existing = keyed_job(session, principal.owner or "", idempotency_key)
        if existing is None:
            raise
        return same_spec(existing, digest, idempotency_key), False
    return job, True


def _new_run(
    parent: Job,
    stored: EvaluateSpec | PredictSpec,
    digest: str,
    principal: Principal,
    idempotency_key: str | None,
) -> Job:
    """The queued job row of a run of ``parent``'s model."""
    return queued_row(
        principal,
        idempotency_key,
        digest,
        name=stored.name,
        queue=parent.queue,
        kind=stored.kind,
        parent_job_id=parent.id,
        spec=stored.model_dump(mode="json"),
        warnings=[],
    )


def _store(session: Session, job: Job, dataset: str | None) -> None:
    """Commits the run, its "created" event and the uploaded dataset it reads."""
    session.add(job)
    message = f"queued on {job.queue!r} to {job.kind} with the model of job {job.parent_job_id}"
    session.add(JobEvent(job_id=job.id, kind="created", message=message, at=job.created_at))
    session.flush()
    if dataset is not None and not dataset.startswith(BUILTIN_PREFIX):
        session.add(JobDataset(job_id=job.id, dataset_id=dataset))
    session.commit()
