"""Training: the runner, Keras builders, data pipelines and callbacks. Knows nothing of Celery."""
