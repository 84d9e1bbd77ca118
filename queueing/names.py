"""Task names: the one place the API, the dispatcher and the worker agree on them."""

TASK_RUN_JOB = "fitq.run_job"
