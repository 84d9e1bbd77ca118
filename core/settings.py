"""The one settings object of fitq (environment variables with the ``FITQ_`` prefix)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """fitq's configuration, read from ``FITQ_*`` environment variables.

    Attributes:
        data_dir: Folder for the embedded database, the embedded broker and job
            artifacts. Defaults to ``./fitq-data``.
        database_url: SQLAlchemy URL. Defaults to SQLite in ``data_dir``.
        broker_url: Celery broker URL. Defaults to kombu's filesystem transport in
            ``data_dir/broker``.
        artifacts_dir: Where jobs write checkpoints, logs and TensorBoard files, and
            where uploads are kept. Without ``artifacts_url`` it is the artifact
            store, a volume that every worker and the API share; with it, each
            process's local working folder and cache. Defaults to
            ``data_dir/artifacts``.
        artifacts_url: ``s3://bucket/prefix``: keep artifacts (checkpoints, trained
            models, TensorBoard logs, uploaded datasets and models, predictions,
            resume backups) in an S3-compatible store, so that workers on different
            hosts need no shared volume. boto3 reads the endpoint, region and
            credentials from its usual environment (``AWS_ENDPOINT_URL``,
            ``AWS_REGION``, ``AWS_ACCESS_KEY_ID``, ...). Unset: the filesystem.
        lease_seconds: How long a worker's claim on a job lasts without a heartbeat.
        max_epochs: Largest ``fit.epochs`` a job may ask for.
        max_runtime_seconds: Largest ``max_runtime_seconds`` a job may ask for.
        max_inline_values: Largest number of numbers inline ``x``/``y`` data may hold.
        max_body_bytes: Largest JSON request body the API accepts.
        broker_polling_interval: Seconds between polls of the embedded broker.
        progress_interval: Least seconds between in-epoch progress writes (and cancel checks).
        events_max_seconds: A `/v1/jobs/{id}/events` stream of an unfinished job closes
            after this long; clients reconnect and continue (`Last-Event-ID`).
        dispatcher_interval: Seconds between two passes of the dispatcher (expired
            leases, lost messages).
        requeue_seconds: A queued job whose message is nowhere in the broker after
            this long is published again.
        broker_visibility_timeout: Redis redelivers an unacknowledged message after
            this long; the database, not the broker, keeps a job from running twice.
        db_retry_seconds: Seconds between retries of a training process's writes
            while the database does not answer.
        live_sync_seconds: With ``artifacts_url`` set: least seconds between two
            uploads of a running job's log, TensorBoard and CSV files, so that an API
            on another host serves them while the job trains; 0: only once it ends.
        max_upload_bytes: Largest dataset file ``POST /v1/datasets`` accepts (413 beyond).
        max_dataset_bytes: Largest total size of a dataset's arrays or images once
            decompressed.
        max_compression_ratio: Largest ratio of a member's decompressed to compressed
            size in an uploaded archive (a zip bomb's is in the thousands).
        worker_memory_budget: Datasets larger than this train from disk, a window
            of blocks at a time (all in flight a quarter of it, at most 64 MiB),
            instead of being loaded whole; an image folder whose decoded images fit
            it is decoded once, else again every epoch.
        auth: ``on`` requires a bearer token (``fitq token create``) on every API
            call; ``off`` runs open. Unset: on whenever the API listens beyond
            loopback.
        max_jobs_in_flight: Queued and running jobs one token owner may have (429
            beyond).
        max_params: Largest number of weights a job's model may have.
        max_gpus_per_worker: The most devices any worker of the deployment has
            (``fitq worker --gpus-per-worker``); a job whose ``resources.gpus`` is
            larger could never run and is refused (422). Defaults to 1.
        logical_cpus: On a worker without GPUs, split the CPU into this many
            TensorFlow logical devices, so that jobs with ``resources.gpus`` up to
            this number run there with MirroredStrategy (for trying multi-device
            specs, and how the tests run them). Defaults to 1.
        worker_warm_up: Each pool process runs a two-step fit of a tiny model before
            it takes a job, so that the job does not pay the first ``fit()``'s one-time
            costs. Defaults to True.
        max_label_classes: Labels count as class ids only when they are integers in
            ``0 .. max_label_classes - 1``; only then does a dataset's metadata hold a
            class histogram (``n_classes``, ``class_counts``), so that its size never
            follows a label's value. Image archives may hold at most this many class
            folders. Defaults to 8192 (a histogram of at most about 50 kB).
        events_max_streams_per_owner: Event streams (``/v1/jobs/{id}/events``) one
            token owner may hold open at once in one API process (429 beyond); with
            auth off, all callers count as one owner. Defaults to 100.
        db_pool_size: Database connections the API keeps open. Defaults to 10.
        db_max_overflow: Connections the API may open beyond ``db_pool_size`` under
            load; their sum is the most the API ever holds. The API runs no more
            synchronous requests at once (40 at most) than this sum leaves connections
            for after the 5 the event streams' change feed uses. Defaults to 40.
        max_activation_bytes: Largest estimate of the activations one training step
            holds on one device (every layer's output for the batch, at 4 bytes a
            number); a model over it is refused (422). Defaults to 4 GiB.
        max_steps: Largest ``fit.steps_per_epoch`` and ``fit.validation_steps``.
            Defaults to 1,000,000.
        max_fit_workers: Largest ``fit.workers`` (data-loading threads or processes
            of one job). Defaults to 32.
        keep_best_checkpoints: The server's default ``output.retention.keep_best``
            for jobs whose spec gives no ``output.retention``: once such a job ends,
            fitq keeps this many of its best checkpoints (and
            ``keep_last_checkpoints`` newest) and removes the rest. Unset (with
            ``keep_last_checkpoints`` unset too): every checkpoint is kept.
        keep_last_checkpoints: The server's default ``output.retention.keep_last``
            (see ``keep_best_checkpoints``; one left unset counts as 0 when the
            other is set).
    """

    model_config = SettingsConfigDict(env_prefix="FITQ_", extra="ignore")

    data_dir: Path = Path("fitq-data")
    database_url: str | None = None
    broker_url: str | None = None
    artifacts_dir: Path | None = None
    artifacts_url: str | None = Field(default=None, pattern=r"^(s3://[^/]+(/.*)?)?$")
    lease_seconds: float = Field(default=60.0, gt=0)
    max_epochs: int = Field(default=10_000, gt=0)
    max_runtime_seconds: int = Field(default=7 * 24 * 3600, gt=0)
    max_inline_values: int = Field(default=200_000, gt=0)
    max_body_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    broker_polling_interval: float = Field(default=0.05, gt=0)
    progress_interval: float = Field(default=1.0, gt=0)
    dispatcher_interval: float = Field(default=2.0, gt=0)
    events_max_seconds: float = Field(default=300.0, gt=0)
    requeue_seconds: float = Field(default=60.0, gt=0)
    broker_visibility_timeout: float = Field(default=12 * 3600, gt=0)
    db_retry_seconds: float = Field(default=1.0, gt=0)
    live_sync_seconds: float = Field(default=5.0, ge=0)
    max_upload_bytes: int = Field(default=2 * 1024**3, gt=0)
    max_dataset_bytes: int = Field(default=8 * 1024**3, gt=0)
    max_compression_ratio: float = Field(default=200.0, gt=1)
    worker_memory_budget: int = Field(default=2 * 1024**3, gt=0)
    auth: Literal["on", "off"] | None = None
    max_jobs_in_flight: int = Field(default=100, gt=0)
    max_params: int = Field(default=50_000_000, gt=0)
    max_gpus_per_worker: int = Field(default=1, gt=0)
    logical_cpus: int = Field(default=1, gt=0)
    worker_warm_up: bool = True
    # Labels and dataset metadata.
    max_label_classes: int = Field(default=8192, gt=0)
    # Event streams, and the API's database connections.
    events_max_streams_per_owner: int = Field(default=100, gt=0)
    db_pool_size: int = Field(default=10, gt=0)
    db_max_overflow: int = Field(default=40, ge=0)
    # Request bodies: bounds on what a JSON or YAML body may unfold into.
    max_body_depth: int = Field(
        default=64,
        gt=0,
        description="Deepest nesting of lists and maps a JSON or YAML body may have (422).",
    )
    max_body_nodes: int = Field(
        default=100_000,
        gt=0,
        description="Most values, keys, lists and maps a JSON or YAML body may hold, a "
        "YAML alias counted as often as it is used (413).",
    )
    # Limits on what a job spec may ask of a worker (checks.validation).
    max_activation_bytes: int = Field(default=4 * 1024**3, gt=0)
    max_steps: int = Field(default=1_000_000, gt=0, le=2**31 - 1)
    max_fit_workers: int = Field(default=32, gt=0)
    # Checkpoint retention: the default of a spec without output.retention.
    keep_best_checkpoints: int | None = Field(default=None, ge=0, le=10_000)
    keep_last_checkpoints: int | None = Field(default=None, ge=0, le=10_000)

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_data_dir / 'fitq.db'}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_is_embedded(self) -> bool:
        return self.resolved_broker_url.startswith("filesystem://")

    @property
    def broker_folder(self) -> Path:
        return self.resolved_data_dir / "broker"

    @property
    def resolved_artifacts_dir(self) -> Path:
        if self.artifacts_dir is not None:
            return self.artifacts_dir.expanduser().resolve()
        return self.resolved_data_dir / "artifacts"

    def folder_names(self) -> list[tuple[str, str]]:
        """The server's folders, longest first, and the names users see them by."""
        named = [
            (str(self.resolved_artifacts_dir), "$FITQ_ARTIFACTS_DIR"),
            (str(self.resolved_data_dir), "$FITQ_DATA_DIR"),
        ]
        return sorted(named, key=lambda pair: -len(pair[0]))

    def hide_paths(self, text: str) -> str:
        """``text`` with the server's folders written as their settings' names."""
        for path, name in self.folder_names():
            text = text.replace(path, name)
        return text

    def auth_enabled(self, host: str) -> bool:
        """Whether the API at ``host`` requires tokens (on beyond loopback by default)."""
        if self.auth is not None:
            return self.auth == "on"
        return host not in ("127.0.0.1", "localhost", "::1")

    def job_dir(self, job_id: str) -> Path:
        """The artifact folder that belongs to one job."""
        return self.resolved_artifacts_dir / "jobs" / job_id


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
