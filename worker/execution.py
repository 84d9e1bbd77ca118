"""Runs one job end to end in the current process: claim, train, record the outcome."""

from __future__ import annotations

import functools
import logging
import traceback
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from core.db import make_engine, make_session_factory
from core.settings import Settings, get_settings
from models.file_names import ARCHITECTURE_FILE, BACKUP_DIR, FINAL_MODEL_FILE, LOG_FILE
from models.runs import RUN_SPEC, JobKind
from models.spec import DEFAULT_QUEUE, JobSpec
from models.states import FINISHED, JobStatus, StopReason
from queueing.broker import job_devices, make_celery, publish_job
from queueing.devices import routed_queue
from storage.artifacts import JobFiles, artifact_store
from storage.models import CONFIG, WEIGHTS, model_key
from storage.retention import after_end
from storage.uploads import dataset_key, datasets_dir
from worker.cancel_watch import CancelWatch
from worker.fresh_stack import on_fresh_stack
from worker.jobstore import Claim, JobStore, LostOwnership
from worker.writer import JobWriter

if TYPE_CHECKING:
    from worker.training.model_files import ModelFiles

log = logging.getLogger("fitq.worker")
TRACEBACK_TAIL_FRAMES = 8
# How an attempt ended when the job ended with it (retention applies then).
ENDED = frozenset(s.value for s in FINISHED)


# A pool process trains one job. Its training thread, its writer and, until fit() runs,
# its cancel watch each use a connection now and then; while the job trains only the
# writer does. The pool keeps one open, so a fleet of N workers holds about N
# connections, not the 3N that SQLAlchemy's default pool of 5 would keep once the job's
# start had opened three (docs/deploy.md: workers per database).
WORKER_POOL_SIZE = 1
WORKER_MAX_OVERFLOW = 3


@lru_cache(maxsize=1)
def session_factory(url: str) -> sessionmaker[Session]:
    return make_session_factory(
        make_engine(url, pool_size=WORKER_POOL_SIZE, max_overflow=WORKER_MAX_OVERFLOW)
    )


def clip(text: str, head: int = 1000, tail: int = 3000) -> str:
    """Long messages keep both ends: TensorFlow puts the cause at the end."""
    if len(text) <= head + tail:
        return text
    return f"{text[:head]}\n[... {len(text) - head - tail} characters ...]\n{text[-tail:]}"


def traceback_tail(exc: BaseException) -> str:
    """The last frames of ``exc``'s traceback and its first message line."""
    frames = traceback.format_tb(exc.__traceback__)[-TRACEBACK_TAIL_FRAMES:]
    first_line = (str(exc).splitlines() or [""])[0]
    return (
        "Traceback (most recent call last):\n"
        + "".join(frames)
        + (f"{type(exc).__name__}: {first_line}")
    )


def execute_job(job_id: str, worker: str, settings: Settings | None = None) -> str:
    """Claims ``job_id`` and trains it; returns what happened, for the worker's log.

    A job that is not ``queued`` (a duplicate delivery, a cancelled job) is left alone.
    A training error, or a report that could not be written for any reason but the
    database being away, ends the job ``failed`` with its type, message and traceback.
    A cancel asked before ``fit()`` has run a batch ends the job ``cancelled`` and
    this process with it (``worker.cancel_watch``). A lost claim stops the attempt
    without writing. A stopping worker (SIGTERM) puts the job back in the queue, to
    resume after its last recorded epoch.
    """
    settings = settings or get_settings()
    store = JobStore(
        session_factory(settings.resolved_database_url), job_id, settings.lease_seconds
    )
    waiting = store.waiting_spec()
    if waiting is not None and _forward_if_too_small(store, waiting, worker, settings):
        return "forwarded"
    claim = store.claim(worker)
    if claim is None:
        log.info("job %s is not queued; nothing to do", job_id)
        return "skipped"
    files = JobFiles(artifact_store(settings), job_id)
    writer = JobWriter(
        store,
        settings.lease_seconds / 3,
        settings.db_retry_seconds,
        files,
        live_seconds=settings.live_sync_seconds,
    )
    try:
        result = _attempt(claim, store, writer, settings, files)
    finally:
        writer.close()
    if result in ENDED:
        retire(store, settings)
    return result


def _attempt(
    claim: Claim, store: JobStore, writer: JobWriter, settings: Settings, files: JobFiles
) -> str:
    """Runs the claimed job; returns how the attempt ended (a status, or what else)."""
    from worker.training.reporting import Preempted

    job_id = store.job_id
    try:
        if claim.kind != JobKind.FIT:
            return _use_model(claim, store, writer, settings, files).value
        spec = JobSpec.model_validate(claim.spec)
        return _train(spec, claim, store, writer, settings, files).value
    except LostOwnership:
        log.warning("job %s attempt %s lost its claim; stopping", job_id, claim.attempt)
        return "lost"
    except Preempted:
        log.warning("job %s: worker stopping; putting it back in the queue", job_id)
        if writer.call(lambda: store.requeue("the worker stopped (SIGTERM); resumes elsewhere")):
            queue = str(claim.spec.get("queue") or DEFAULT_QUEUE)
            publish_job(make_celery(settings), job_id, queue, job_devices(claim.spec))
        return "requeued"
    except Exception as exc:  # noqa: BLE001 - every training error fails the job, recorded
        log.exception("job %s failed", job_id)
        return _failed(store, writer, exc, settings)


def retire(store: JobStore, settings: Settings) -> None:
    """Once the job has ended: removes its backups and the checkpoints its retention
    does not keep (``storage.retention.after_end``). A failure is logged: the job's
    outcome is recorded already, and the files stay listed."""
    try:
        with store.factory() as session:
            after_end(session, settings, store.job_id)
    except Exception:  # noqa: BLE001 - the outcome stands; the files stay, their rows too
        log.exception("job %s: could not apply retention", store.job_id)


def _train(
    spec: JobSpec,
    claim: Claim,
    store: JobStore,
    writer: JobWriter,
    settings: Settings,
    files: JobFiles,
) -> JobStatus:
    """Trains the claimed job, watching for a cancel until fit() runs, and records how
    it ended. Its files go to the artifact store before the outcome is recorded."""
    from worker.training.runner import Resume, train

    job_dir = files.folder
    model_files = _model_files(spec, store, settings)
    fetch_datasets(settings, [spec.data.train, spec.data.validation, spec.data.test])
    if claim.last_epoch:
        files.fetch_folder(BACKUP_DIR)  # an earlier attempt's, maybe from another host
    ended = functools.partial(retire, store, settings)
    with CancelWatch(store, settings.progress_interval, job_dir / LOG_FILE, ended) as watch:
        outcome = on_fresh_stack(  # fit() as few frames deep as in a script: faster ops
            train,
            spec,
            job_dir,
            writer,
            settings.progress_interval,
            Resume(claim.last_epoch, claim.callback_states),
            datasets_dir(settings),
            settings.worker_memory_budget,
            fitting=watch.stop,
            model_files=model_files,
        )
    writer.call(files.put_all)
    writer.call(
        lambda: store.finish(
            outcome.status,
            outcome.stop_reason,
            test_metrics=outcome.test_metrics,
            error=_shown(outcome.error, settings),
            model_file=(
                (outcome.model_file.size_bytes, outcome.model_file.sha256)
                if outcome.model_file
                else None
            ),
        )
    )
    return outcome.status


def _model_files(spec: JobSpec, store: JobStore, settings: Settings) -> ModelFiles | None:
    """Where the model of ``model.uploaded`` or ``model.from_job`` is stored."""
    from worker.training.model_files import ModelFiles

    model = spec.model
    stored = artifact_store(settings)
    if model.uploaded is not None:
        folder = stored.fetch_tree(model_key(model.uploaded))
        if folder is None:
            raise ValueError(f"the files of uploaded model {model.uploaded} are gone")
        weights = folder / WEIGHTS if model.weights is not False else None
        return ModelFiles(folder / CONFIG, weights, untrusted_weights=True)
    if model.from_job is None:
        return None
    if not isinstance(model.checkpoint, int):
        raise ValueError(
            f"checkpoint {model.checkpoint!r} was not resolved when the job was queued"
        )
    path = store.checkpoint_path(model.from_job, model.checkpoint)
    if path is None:
        raise ValueError(f"job {model.from_job} has no checkpoint {model.checkpoint}")
    parent = JobFiles(stored, model.from_job)
    architecture, checkpoint = parent.fetch(ARCHITECTURE_FILE), parent.fetch(path)
    if architecture is None or checkpoint is None:
        raise ValueError(f"the files of checkpoint {model.checkpoint} of {model.from_job} are gone")
    return ModelFiles(architecture, checkpoint)


def fetch_datasets(settings: Settings, refs: list[Any]) -> None:
    """Brings the uploaded datasets ``refs`` name into this host's folder (a no-op
    where the artifact store is that folder)."""
    stored = artifact_store(settings)
    for ref in refs:
        name = getattr(ref, "dataset", None)
        if name is not None and not name.startswith("builtin:"):
            stored.fetch_tree(dataset_key(name))


def _use_model(
    claim: Claim, store: JobStore, writer: JobWriter, settings: Settings, files: JobFiles
) -> JobStatus:
    """Evaluates or predicts with the parent job's model (a cancel ends the process at
    any point, as while a training job prepares), and records how it ended."""
    from worker.training.model_runs import use_model

    run = RUN_SPEC.validate_python(claim.spec)
    assert claim.parent_job_id is not None, "a run always names the job whose model it uses"
    parent = JobSpec.model_validate(store.spec_of(claim.parent_job_id))
    job_dir = files.folder
    model = JobFiles(files.store, claim.parent_job_id).fetch(FINAL_MODEL_FILE)
    fetch_datasets(settings, [run.data])
    ended = functools.partial(retire, store, settings)
    with CancelWatch(store, settings.progress_interval, job_dir / LOG_FILE, ended):
        outcome = on_fresh_stack(
            use_model,
            run,
            parent,
            model or settings.job_dir(claim.parent_job_id) / FINAL_MODEL_FILE,
            job_dir,
            datasets_dir(settings),
            settings.worker_memory_budget,
        )
    writer.call(files.put_all)
    writer.call(
        lambda: store.finish(outcome.status, outcome.stop_reason, test_metrics=outcome.test_metrics)
    )
    return outcome.status


def _shown(error: tuple[str, str, str] | None, settings: Settings) -> tuple[str, str, str] | None:
    """An error as the job shows it: the server's folders by name, not by path."""
    if error is None:
        return None
    kind, message, trace = error
    return kind, settings.hide_paths(message), settings.hide_paths(trace)


def _failed(store: JobStore, writer: JobWriter, exc: Exception, settings: Settings) -> str:
    """Records the job ``failed`` with ``exc``, after every report queued before it."""
    error = _shown((type(exc).__name__, clip(str(exc)), traceback_tail(exc)), settings)
    try:
        writer.call(
            lambda: store.finish(JobStatus.FAILED, StopReason.ERROR, error=error), final=True
        )
    except LostOwnership:
        return "lost"
    return JobStatus.FAILED.value


def _forward_if_too_small(
    store: JobStore, spec: dict[str, Any], worker: str, settings: Settings
) -> bool:
    """Sends a job that needs more devices than this worker has to the queue of workers
    with enough, where it waits for one; returns whether it did."""
    from worker.devices import device_names

    needed, have = job_devices(spec), len(device_names())
    if needed <= have:
        return False
    queue = str(spec.get("queue") or DEFAULT_QUEUE)
    target = routed_queue(queue, needed)
    message = (
        f"{worker} has {have} device(s) and the job asks for resources.gpus={needed}: "
        f"waiting on queue {target!r} for a worker with at least {needed}"
    )
    if store.forwarded(message):
        publish_job(make_celery(settings), store.job_id, queue, needed)
        log.info("job %s: %s", store.job_id, message)
    return True
