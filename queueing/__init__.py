"""The Celery transport: the app the API, dispatcher and worker share, task names,
the embedded broker and which queues a worker's devices let it serve."""
