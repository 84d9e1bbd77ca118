"""fitq's Celery worker: thin tasks over the training runner in ``worker.training``."""
