"""Task and queue names: the one place the API and the worker agree on them."""

TASK_RUN_JOB = "fitq.run_job"
DEFAULT_QUEUE = "default"
