"""The ``fitq`` command: runs the service (up, api, worker, migrate)."""
