"""SQLAlchemy 2.0 tables: jobs, their epoch metrics, checkpoints and events.

The schema changes only through Alembic (``migrations/``); a test proves that these
tables and the migrations agree.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from typing_extensions import override

from models.states import JobStatus

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC datetime on every database (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    @override
    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC) if value is not None else None

    @override
    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # The token owner who submitted the job; None while auth is off.
    owner: Mapped[str | None] = mapped_column(String(100), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    queue: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED.value)
    stop_reason: Mapped[str | None] = mapped_column(String(32))
    # What the job does: "fit" trains; "evaluate" and "predict" use the model of the
    # job ``parent_job_id`` (models.runs), and their spec is a run spec.
    kind: Mapped[str] = mapped_column(String(16), server_default="fit")
    # Lineage: a run's job, or the job a warm start (model.from_job) took its weights
    # from.
    parent_job_id: Mapped[str | None] = mapped_column(String(32), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    warnings: Mapped[list[str]] = mapped_column(JSON, default=list)
    # The Idempotency-Key header as sent, and whose key it is: the owner, or "" while
    # auth is off (a token name is never empty). A key is unique per owner only.
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    idempotency_owner: Mapped[str | None] = mapped_column(String(100))
    spec_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Attempts that ended without an outcome (a lost lease, a killed process); the
    # job fails when they reach the spec's max_attempts.
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    dispatched_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    worker: Mapped[str | None] = mapped_column(String(200))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    progress_epoch: Mapped[int | None] = mapped_column(Integer)
    progress_step: Mapped[int | None] = mapped_column(Integer)
    progress_steps: Mapped[int | None] = mapped_column(Integer)
    latest_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    best: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    test_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The class weights fit() used (computed by the worker for "balanced").
    class_weight: Mapped[dict[str, float] | None] = mapped_column(JSON)
    # The trained model a succeeded job saved (model.keras): its size and SHA-256.
    model_size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    model_sha256: Mapped[str | None] = mapped_column(String(64))
    error_type: Mapped[str | None] = mapped_column(String(200))
    error_message: Mapped[str | None] = mapped_column(Text)
    error_traceback: Mapped[str | None] = mapped_column(Text)
    # The uploaded model (model.uploaded) a job trains.
    model_id: Mapped[str | None] = mapped_column(String(32), index=True)
    # When DELETE /v1/jobs/{id}/artifacts removed the job's files (checkpoints, model,
    # TensorBoard logs, predictions); its rows stay, and downloads answer 410.
    artifacts_removed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_jobs_created_at_id", "created_at", "id"),
        Index("ix_jobs_status", "status"),
        # The jobs list: newest first, by status and by owner (keyset pagination).
        Index("ix_jobs_status_created_at_id", "status", "created_at", "id"),
        Index("ix_jobs_owner_created_at_id", "owner", "created_at", "id"),
        Index("ix_jobs_owner_status_created_at_id", "owner", "status", "created_at", "id"),
        # /metrics: the oldest queued job of each queue.
        Index("ix_jobs_status_queue_created_at", "status", "queue", "created_at"),
        Index("ix_jobs_status_lease_expires_at", "status", "lease_expires_at"),
        UniqueConstraint(
            "idempotency_owner",
            "idempotency_key",
            name="uq_jobs_idempotency_owner_idempotency_key",
        ),
    )


class EpochMetric(Base):
    __tablename__ = "epoch_metrics"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    epoch: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    lr: Mapped[float | None] = mapped_column(Float)
    duration_s: Mapped[float] = mapped_column(Float)
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    attempt: Mapped[int | None] = mapped_column(Integer)
    # The state of EarlyStopping / ModelCheckpoint / ReduceLROnPlateau after this
    # epoch, so that a resumed attempt continues them.
    callback_state: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    __table_args__ = (
        UniqueConstraint("job_id", "epoch", name="uq_epoch_metrics_job_id_epoch"),
        # /metrics counts the epochs of the last minute.
        Index("ix_epoch_metrics_recorded_at", "recorded_at"),
    )


class MetricRollup(Base):
    """Figures ``GET /metrics`` reports, kept by database triggers on every write.

    One row per metric, queue, status, bucket and shard (migration 0011 says which
    metrics, 0013 why shards); the triggers on ``jobs`` and ``epoch_metrics`` add to
    ``n`` and ``total`` in the writing transaction, so that a scrape reads these few
    rows, never the history. A figure is the sum over its shards.
    """

    __tablename__ = "metric_rollups"

    metric: Mapped[str] = mapped_column(String(32), primary_key=True)
    queue: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    bucket: Mapped[int] = mapped_column(Integer, primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True, server_default="0")
    n: Mapped[int] = mapped_column(BigInteger)
    total: Mapped[float] = mapped_column(Float)


class Checkpoint(Base):
    __tablename__ = "checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    epoch: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(300))
    monitor: Mapped[str | None] = mapped_column(String(100))
    value: Mapped[float | None] = mapped_column(Float)
    is_best: Mapped[bool] = mapped_column(Boolean, default=False)
    size_bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # A checkpoint whose file fitq removed keeps its row: when, and why ("retention":
    # the job's output.retention or the server's default after the job ended;
    # "deleted": DELETE /v1/jobs/{id}/artifacts).
    removed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    removed_reason: Mapped[str | None] = mapped_column(String(16))

    __table_args__ = (UniqueConstraint("job_id", "path", name="uq_checkpoints_job_id_path"),)


class JobEvent(Base):
    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text, default="")
    attempt: Mapped[int | None] = mapped_column(Integer)

    job: Mapped[Job] = relationship(lazy="raise")


class Dataset(Base):
    """An uploaded dataset: arrays (``.npz``) or an image folder archive."""

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(100), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    # Per split ("train", "validation", "test"): samples, shapes, dtypes, classes.
    info: Mapped[dict[str, Any]] = mapped_column(JSON)


class UploadedModel(Base):
    """An uploaded ``.keras`` model: its checked config, metadata and weights files."""

    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(100), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    # What the checked config declares: class_name, input_shape, output_shape,
    # params, layers (their names), compiled, keras_version, weights_bytes.
    info: Mapped[dict[str, Any]] = mapped_column(JSON)


class JobDataset(Base):
    """Which datasets a job uses, so that a dataset in use cannot be deleted."""

    __tablename__ = "job_datasets"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(String(32), primary_key=True, index=True)


class ApiToken(Base):
    """A bearer token: shown once at creation, stored as its SHA-256.

    ``name`` is the owner the token stands for. A name has at most one token that is
    not revoked; revoked rows stay, and the name can be given a new token.
    """

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index(
            "uq_api_tokens_active_name",
            "name",
            unique=True,
            sqlite_where=text("revoked_at IS NULL"),
            postgresql_where=text("revoked_at IS NULL"),
        ),
    )


class Worker(Base):
    """A worker process, as it last reported itself: its queues, devices and job.

    The worker writes its row when it is ready and renews ``heartbeat_at`` every
    third of ``FITQ_LEASE_SECONDS``. What it trains is the ``running`` job whose
    ``worker`` is its name. Rows not heard from for a day are removed by the next
    worker that starts.
    """

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    queues: Mapped[list[str]] = mapped_column(JSON)
    device_kind: Mapped[str] = mapped_column(String(8))
    devices: Mapped[int] = mapped_column(Integer)
    # CUDA_VISIBLE_DEVICES of a worker pinned to GPUs.
    gpus: Mapped[str | None] = mapped_column(String(200))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    heartbeat_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    stopped_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
