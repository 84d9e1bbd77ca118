"""The worker's Celery app: fitq's shared configuration plus the task module.

TensorFlow is imported only in the pool's child processes (``worker_process_init``),
never in the Celery parent, so a crash while training takes down one child only.
"""

from __future__ import annotations

import os
from typing import Any

from celery.signals import worker_process_init

from models.queueing import make_celery
from models.settings import get_settings

app = make_celery(get_settings(), name="fitq-worker")
app.conf.include = ["worker.tasks"]


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _warm_up(**_: Any) -> None:
    # Pay tensorflow's import before a job arrives, so training starts at once.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras  # noqa: F401
    import tensorflow  # noqa: F401

    import worker.training.runner  # noqa: F401
