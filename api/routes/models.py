"""Models: upload a ``.keras`` file, list, read, delete."""

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
from models.tables import Job, UploadedModel
from storage.models import delete_model, store_keras

router = APIRouter(prefix="/v1/models", tags=["models"], responses=ERRORS)


class ModelOut(BaseModel):
    model_config = FROM_ROWS
    id: str = Field(description="Use it in a job spec as model: {uploaded: <id>}.")
    name: str | None
    created_at: dt.datetime
    size_bytes: int = Field(description="Size of the uploaded file.")
    sha256: str
    info: dict[str, Any] = Field(
        description="What the checked config declares: class_name (Sequential or "
        "Functional), input_shape and output_shape (per sample), params (weights, "
        "trainable or not), layers (their names, for model.freeze), compiled (whether "
        "it has a compile config, which jobs do not use), keras_version (from "
        "metadata.json) and weights_bytes."
    )


class ModelList(BaseModel):
    items: list[ModelOut]


@router.post(
    "",
    status_code=201,
    response_model=ModelOut,
    responses={
        400: {"model": ErrorOut, "description": "The multipart body cannot be parsed."},
        413: {"description": "The file is over FITQ_MAX_UPLOAD_BYTES or decompresses too large."},
        422: {"description": "The file is not a model fitq accepts; `detail` says why."},
    },
)
async def upload_model(
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    response: Response,
    file: Annotated[
        UploadFile,
        File(
            description="A .keras file as model.save('model.keras') writes it (config.json, "
            "metadata.json, model.weights.h5), compiled or not, of Keras' own layers on "
            "fitq's allowlist."
        ),
    ],
    name: Annotated[str | None, Form(max_length=200)] = None,
) -> ModelOut:
    """Upload a Keras model; it is checked completely before it is accepted."""
    filename = file.filename or ""
    if not filename.endswith(".keras"):
        raise wrong_file(
            f"received a file named {filename[:100]!r}; expected a .keras file "
            "(model.save('model.keras'))"
        )
    model_id, size, sha, info = await checked(store_keras, file, settings)
    row = UploadedModel(
        id=model_id,
        owner=principal.owner,
        name=name or filename,
        size_bytes=size,
        sha256=sha,
        info=info,
    )
    return ModelOut.model_validate(kept(session, row, response, f"/v1/models/{model_id}"))


@router.get("", response_model=ModelList)
def list_models(
    session: SessionDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> ModelList:
    """Uploaded models, newest first."""
    rows = newest(session, UploadedModel, principal, limit)
    return ModelList(items=[ModelOut.model_validate(r) for r in rows])


def _visible(session: Session, model_id: str, principal: Principal) -> UploadedModel:
    return visible(session, UploadedModel, model_id, principal, "model")


@router.get("/{model_id}", response_model=ModelOut)
def get_model(model_id: str, session: SessionDep, principal: PrincipalDep) -> ModelOut:
    """One uploaded model's metadata."""
    return ModelOut.model_validate(_visible(session, model_id, principal))


@router.delete(
    "/{model_id}",
    status_code=204,
    responses={409: {"description": "A queued or running job trains the model."}},
)
def delete_uploaded_model(
    model_id: str, session: SessionDep, settings: SettingsDep, principal: PrincipalDep
) -> Response:
    """Delete an uploaded model that no queued or running job trains."""
    row = _visible(session, model_id, principal)
    users = session.scalars(
        select(Job.id).where(
            Job.model_id == model_id, Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING))
        )
    ).all()
    delete_unused(session, row, users, "model")
    delete_model(settings, model_id)
    return Response(status_code=204)
