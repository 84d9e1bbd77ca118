"""Celery tasks: thin wrappers that hand a job id to the execution module."""

from __future__ import annotations

from celery import Task

from queueing.names import TASK_RUN_JOB
from worker.celery_app import app
from worker.execution import execute_job


@app.task(name=TASK_RUN_JOB, bind=True)  # type: ignore[untyped-decorator]
def run_job(self: Task, job_id: str) -> str:
    """Trains the job ``job_id`` (the database row holds everything else)."""
    return execute_job(job_id, worker=str(self.request.hostname))
