"""Finds what ``model.uploaded`` and ``model.from_job`` name, for one owner.

An uploaded model is one of the owner's rows in ``models``; a warm start's parent is
one of the owner's finished jobs, with the architecture its worker recorded and the
checkpoint the spec names (``best``, ``last`` or an id) still on disk.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.tokens import Principal
from checks.model_source import SourceProblem, StoredArchitecture
from core.settings import Settings
from models.file_names import ARCHITECTURE_FILE
from models.spec import ModelSpec
from models.states import FINISHED
from models.tables import Checkpoint, Job, UploadedModel
from storage.artifacts import artifact_store, job_key
from storage.models import stored_config


@dataclass
class ModelSources:
    """The lookup ``checks.validation.check_spec`` calls; keeps what it found."""

    session: Session
    settings: Settings
    principal: Principal
    found: StoredArchitecture | None = field(default=None, init=False)

    def __call__(self, model: ModelSpec) -> StoredArchitecture | SourceProblem:
        result = self._uploaded(model.uploaded) if model.uploaded else self._parent(model)
        if isinstance(result, StoredArchitecture):
            self.found = result
        return result

    def _uploaded(self, model_id: str) -> StoredArchitecture | SourceProblem:
        row = self.session.get(UploadedModel, model_id)
        if row is None or not self.principal.sees(row.owner):
            return SourceProblem(
                "uploaded",
                f"no uploaded model {model_id!r}; expected the id of a model from "
                "POST /v1/models (GET /v1/models lists them)",
            )
        try:
            return StoredArchitecture(stored_config(self.settings, model_id))
        except (OSError, ValueError):
            return SourceProblem("uploaded", f"the files of model {model_id} are gone")

    def _parent(self, model: ModelSpec) -> StoredArchitecture | SourceProblem:
        job_id = model.from_job or ""
        parent = self.session.get(Job, job_id)
        if parent is None or not self.principal.sees(parent.owner):
            return SourceProblem(
                "from_job", f"no job {job_id!r}; expected the id of one of your jobs"
            )
        if parent.status not in FINISHED:
            return SourceProblem(
                "from_job",
                f"job {job_id} is {parent.status}; expected a finished job (its checkpoints "
                "may still change)",
            )
        checkpoint = self._checkpoint(job_id, model.checkpoint or "best")
        if isinstance(checkpoint, SourceProblem):
            return checkpoint
        stored = artifact_store(self.settings)
        try:
            config = json.loads(stored.read_bytes(job_key(job_id, ARCHITECTURE_FILE)))
        except (OSError, ValueError):
            return SourceProblem(
                "from_job",
                f"job {job_id} recorded no architecture (jobs record theirs as they start "
                "training); expected a job that trained",
            )
        if not stored.exists(job_key(job_id, checkpoint.path)):
            return SourceProblem("checkpoint", f"the file of checkpoint {checkpoint.id} is gone")
        return StoredArchitecture(config, checkpoint.id)

    def _checkpoint(self, job_id: str, which: str | int) -> Checkpoint | SourceProblem:
        query = select(Checkpoint).where(Checkpoint.job_id == job_id)
        if which == "best":
            query = query.where(Checkpoint.is_best.is_(True))
        elif which == "last":  # the newest one still there
            query = query.where(Checkpoint.removed_at.is_(None))
        else:
            query = query.where(Checkpoint.id == which)
        row = self.session.scalars(
            query.order_by(Checkpoint.epoch.desc(), Checkpoint.id.desc()).limit(1)
        ).first()
        if row is None:
            listed = f"GET /v1/jobs/{job_id}/checkpoints lists them"
            return SourceProblem(
                "checkpoint",
                f"job {job_id} has no checkpoint {which!r}; expected 'best', 'last' or the id "
                f"of one of its checkpoints ({listed}); a job has checkpoints when its spec "
                "has a ModelCheckpoint callback",
            )
        if row.removed_at is not None:
            why = "its output.retention" if row.removed_reason == "retention" else "a deletion"
            return SourceProblem(
                "checkpoint",
                f"checkpoint {row.id} of job {job_id} (epoch {row.epoch}) was removed by "
                f"{why}; expected one still there (GET /v1/jobs/{job_id}/checkpoints lists "
                "each with its removed_at)",
            )
        return row
