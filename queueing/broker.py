"""The Celery app both sides share: the API publishes with it, the worker consumes.

Only configuration lives here; the worker registers its tasks on top of it. Messages
carry a job id and nothing else: the database is the truth about a job.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu.entity import Queue

from core.settings import Settings
from models.spec import DEFAULT_QUEUE
from queueing.devices import routed_queue
from queueing.names import TASK_RUN_JOB


def broker_options(settings: Settings) -> dict[str, Any]:
    if not settings.broker_is_embedded:
        # Long jobs: the database (not the broker) decides whether a job runs, so a
        # redelivery after the visibility timeout is harmless; keep it long anyway.
        timeout = settings.broker_visibility_timeout
        # kombu sweeps for messages past their visibility timeout every interval x
        # throttle seconds (100 s by default); sweep at least twice per timeout.
        sweep = max(1.0, min(10.0, timeout / 2))
        return {
            "visibility_timeout": timeout,
            "unacked_restore_interval": sweep,
            "unacked_restore_throttle": 1 if timeout < 200 else 10,
        }
    folder = settings.broker_folder
    for sub in ("queue", "processed", "control"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "processed_folder": str(folder / "processed"),
        "control_folder": str(folder / "control"),
        "store_processed": False,
        "polling_interval": settings.broker_polling_interval,
    }


def make_celery(settings: Settings, name: str = "fitq") -> Celery:
    """A Celery app configured for long training jobs from ``settings``."""
    app = Celery(name, broker=settings.resolved_broker_url)
    if settings.broker_is_embedded:
        app.conf.broker_transport = "queueing.fstransport:Transport"
    app.conf.update(
        broker_transport_options=broker_options(settings),
        broker_connection_retry_on_startup=True,
        task_default_queue=DEFAULT_QUEUE,
        task_queues=[Queue(DEFAULT_QUEUE)],  # type: ignore[no-untyped-call]
        task_create_missing_queues=True,
        task_acks_late=True,
        task_reject_on_worker_lost=False,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        worker_max_tasks_per_child=1,
        # Importing tensorflow in a fresh pool process takes seconds.
        worker_proc_alive_timeout=120,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_heartbeat=0,
    )
    return app


def publish_job(app: Celery, job_id: str, queue: str, devices: int = 1) -> None:
    """Wakes a worker on ``queue`` for ``job_id``; the job row is already committed.

    A job that needs ``devices`` > 1 goes to the queue only workers with that many
    devices consume; published without them, the first worker forwards it there.
    """
    app.send_task(
        TASK_RUN_JOB, args=[job_id], queue=routed_queue(queue, devices), ignore_result=True
    )


def job_devices(spec: dict[str, Any]) -> int:
    """The devices a stored spec asks for (specs stored before ``resources`` ask for one)."""
    resources = spec.get("resources") or {}
    return int(resources.get("gpus", 1))
