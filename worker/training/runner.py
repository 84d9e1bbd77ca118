"""The training runner: one job spec in, one ``model.fit()`` call, one outcome out.

It knows nothing of Celery. It does what a careful plain script does (seed, enable
op determinism, build, compile, fit with numpy arrays) and adds only the reporting
callback, so the recorded history equals the script's.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from typing_extensions import override

from checks.catalog import output_head
from checks.monitor import metric_directions
from models.spec import (
    EarlyStoppingSpec,
    FitSpec,
    JobSpec,
    ModelCheckpointSpec,
    ObjectSpec,
    RandomCropSpec,
    ReduceLROnPlateauSpec,
)
from models.states import JobStatus
from worker.devices import device_names, strategy_for
from worker.jobstore import LostOwnership
from worker.training.architectures import build_model
from worker.training.callbacks import build_callback
from worker.training.data import JobData, balanced_class_weight, load_job_data
from worker.training.inputs import Data, job_seed, training_rows, validation_batch_size
from worker.training.outcome import Outcome, cancelled, fit_outcome, past_deadline
from worker.training.reporting import (
    JobCancelled,
    MaxRuntimeExceeded,
    ReportingCallback,
    Sink,
)
from worker.training.resume import Snapshot, StateRestorer, load_backup, restore

LOG_FILE = "train.log"


def _object(value: str | ObjectSpec, module: Any) -> Any:
    if isinstance(value, str):
        return value
    return module.deserialize({"class_name": value.class_name, "config": dict(value.config)})


def monitored(spec: JobSpec, has_validation: bool) -> tuple[str, str]:
    """The metric the job's ``best`` follows: the first monitoring callback's, else a loss."""
    for cb in spec.callbacks:
        if isinstance(cb, (EarlyStoppingSpec, ModelCheckpointSpec, ReduceLROnPlateauSpec)):
            return cb.monitor, cb.mode
    return ("val_loss" if has_validation else "loss"), "min"


def warm_up() -> None:
    """Pays a process's first-fit() costs before a job arrives.

    The first ``fit()`` in a process loads parts of TensorFlow lazily and sets up its
    tracing machinery: about a third of a second on a small CPU, once. A two-step fit
    of a one-unit model on zeros pays it; ``clear_session()`` then resets Keras'
    global state (layer-name counters among it), and every job seeds everything
    itself, so the job trains exactly as it would in a fresh process.
    """
    x, y = np.zeros((4, 2), np.float32), np.zeros((4, 1), np.float32)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    model.fit(x, y, batch_size=2, epochs=1, verbose=0, validation_data=(x, y))
    del model
    keras.backend.clear_session()


def seed_everything(seed: int) -> None:
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


@dataclass
class Resume:
    """What earlier attempts left: the last epoch recorded, and each epoch's callback state."""

    last_epoch: int | None = None
    callback_states: dict[int, dict[str, Any]] = field(default_factory=dict)


def train(
    spec: JobSpec,
    job_dir: Path,
    sink: Sink,
    progress_interval: float = 1.0,
    resume: Resume | None = None,
    datasets_root: Path | None = None,
    memory_budget: int = 2**62,
    fitting: Callable[[], None] | None = None,
) -> Outcome:
    """Runs the job described by ``spec``, writing artifacts under ``job_dir``.

    With ``resume``, continues after the newest good backup of an epoch that the
    database recorded, with the model, optimizer and callback state of that epoch.
    ``fitting`` is called once ``fit()`` has run its first batch: from then on the
    reporting callback sees a cancel (the caller watches for one until then). The
    outcome is logged only once ``sink`` has written everything reported.
    """
    job_dir.mkdir(parents=True, exist_ok=True)
    deadline = _deadline(spec)
    seed_everything(job_seed(spec))
    data = load_job_data(spec.data, datasets_root, memory_budget)
    strategy = strategy_for(spec.resources.gpus)
    model = _compiled_model(spec, data, strategy)
    class_weight = _class_weight(spec.fit, data)
    if class_weight is not None:
        sink.record_class_weight(class_weight)
    callbacks = [build_callback(cb, job_dir) for cb in spec.callbacks]
    reporter = _reporter(spec, data, callbacks, sink, job_dir, progress_interval, deadline)
    start = _start(model, job_dir, callbacks, reporter, spec.fit.initial_epoch, resume)
    inputs = data.train.fit_inputs(spec, data.validation)
    with _job_log(job_dir):
        _announce(spec, len(data.train.y), strategy, start.note)
        try:
            history = model.fit(
                **inputs,
                **_fit_arguments(spec.fit, class_weight, start.initial_epoch),
                callbacks=[*callbacks, *start.callbacks, reporter, *_first_batch(fitting)],
            )
            if reporter.stopped_by is not None:
                raise reporter.stopped_by
        except JobCancelled:
            return _stopped(sink, "fitq: cancelled", cancelled(class_weight))
        except MaxRuntimeExceeded:
            line = f"fitq: stopped after max_runtime_seconds={spec.max_runtime_seconds}"
            return _stopped(sink, line, past_deadline(spec, class_weight))
        outcome = fit_outcome(spec, callbacks, history.history)
        outcome.class_weight = class_weight
        if outcome.status is JobStatus.SUCCEEDED and data.test is not None:
            outcome.test_metrics = _test_metrics(model, data.test, spec)
        _written(sink)
        print(f"fitq: {outcome.status} ({outcome.stop_reason})", flush=True)
    return outcome


def _deadline(spec: JobSpec) -> float | None:
    """The ``time.monotonic()`` past which the job stops, from ``max_runtime_seconds``."""
    limit = spec.max_runtime_seconds
    return time.monotonic() + limit if limit else None


def _compiled_model(
    spec: JobSpec, data: JobData, strategy: tf.distribute.Strategy | None
) -> keras.Model:
    """The spec's model, built for the data's samples and targets, and compiled.

    With several devices its variables are mirrored on each, and fit() splits every
    global batch of ``fit.batch_size`` across them.
    """
    y = data.train.y
    target_dim = 1 if y.ndim == 1 else int(np.prod(y.shape[1:]))
    loss = spec.compile.loss if isinstance(spec.compile.loss, str) else spec.compile.loss.class_name
    head = output_head(loss, data.n_classes, target_dim)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = build_model(
            spec.model.builtin,
            spec.model.params,
            spec.model.keras_config,
            _input_shape(data.train.sample_shape, spec),
            head,
        )
        model.compile(
            optimizer=_object(spec.compile.optimizer, keras.optimizers),
            loss=_object(spec.compile.loss, keras.losses),
            metrics=[_object(m, keras.metrics) for m in spec.compile.metrics],
        )
    return model


def _input_shape(shape: tuple[int, ...], spec: JobSpec) -> tuple[int, ...]:
    """The samples' shape as the model sees them, after any RandomCrop."""
    for aug in spec.data.augmentation:
        if isinstance(aug, RandomCropSpec):
            shape = (aug.height, aug.width, *shape[2:])
    return shape


def _class_weight(fit: FitSpec, data: JobData) -> dict[int, float] | None:
    """fit()'s ``class_weight``: the spec's own, or "balanced" over the training rows."""
    if fit.class_weight == "balanced":
        assert data.n_classes is not None
        y = data.train.y
        return balanced_class_weight(y[: training_rows(fit, len(y))], data.n_classes)
    if isinstance(fit.class_weight, dict):
        return {int(k): float(v) for k, v in fit.class_weight.items()}
    return None


def _reporter(
    spec: JobSpec,
    data: JobData,
    callbacks: list[keras.callbacks.Callback],
    sink: Sink,
    job_dir: Path,
    progress_interval: float,
    deadline: float | None,
) -> ReportingCallback:
    """The callback that reports the job's epochs, checkpoints and progress to ``sink``."""
    checkpoints = [cb for cb in callbacks if isinstance(cb, keras.callbacks.ModelCheckpoint)]
    has_validation = data.validation is not None or spec.fit.validation_split > 0
    return ReportingCallback(
        sink,
        job_dir,
        checkpoints,
        monitored(spec, has_validation),
        metric_directions(spec.compile),
        backup_callbacks=callbacks,
        interval=progress_interval,
        deadline=deadline,
    )


@dataclass(frozen=True)
class _Start:
    """Where fit() starts: its first epoch, the callbacks that restore a resumed
    attempt's state, and a line for the log."""

    initial_epoch: int
    callbacks: list[keras.callbacks.Callback]
    note: str


def _start(
    model: keras.Model,
    job_dir: Path,
    callbacks: list[keras.callbacks.Callback],
    reporter: ReportingCallback,
    initial_epoch: int,
    resume: Resume | None,
) -> _Start:
    """The spec's ``initial_epoch``; or, resuming, the epoch after the newest good
    backup, with the model, optimizer and callback state of that epoch."""
    resumed, note = _resume_point(model, job_dir, initial_epoch, resume)
    if resumed is None:
        return _Start(initial_epoch, [], note)
    restore(model, resumed)
    state = (resume.callback_states if resume else {}).get(resumed.epoch, {})
    reporter.restore_state(state.get("reporter", {}))
    for cb in callbacks:
        if isinstance(cb, keras.callbacks.CSVLogger):
            cb.append = True
    return _Start(resumed.epoch, [StateRestorer(callbacks, state, resumed)], note)


def _resume_point(
    model: keras.Model, job_dir: Path, initial_epoch: int, resume: Resume | None
) -> tuple[Snapshot | None, str]:
    if resume is None or not resume.last_epoch or resume.last_epoch <= initial_epoch:
        return None, ""
    snap = load_backup(job_dir, model, resume.last_epoch)
    if snap is None or snap.epoch <= initial_epoch:
        return None, f"no usable backup up to epoch {resume.last_epoch}; starting over"
    return snap, (
        f"resuming after epoch {snap.epoch} (the last recorded epoch is {resume.last_epoch})"
    )


@contextlib.contextmanager
def _job_log(job_dir: Path) -> Iterator[None]:
    """Sends what is printed (fitq's lines and Keras' own) to the job's log."""
    with (
        open(job_dir / LOG_FILE, "a", buffering=1, encoding="utf-8") as log,
        contextlib.redirect_stdout(log),
    ):
        yield


def _announce(
    spec: JobSpec, n_samples: int, strategy: tf.distribute.Strategy | None, note: str
) -> None:
    """Logs what trains, where, and from which epoch."""
    print(f"fitq: training with seed {spec.seed} on {n_samples} samples", flush=True)
    if strategy is not None:
        devices = ", ".join(strategy.extended.worker_devices)
        print(
            f"fitq: MirroredStrategy with {strategy.num_replicas_in_sync} replicas "
            f"({devices}); global batch {spec.fit.batch_size or 32} (pid {os.getpid()})",
            flush=True,
        )
    else:
        print(f"fitq: training on {device_names()[0]} (pid {os.getpid()})", flush=True)
    if note:
        print(f"fitq: {note}", flush=True)


def _fit_arguments(
    fit: FitSpec, class_weight: dict[int, float] | None, initial_epoch: int
) -> dict[str, Any]:
    """fit()'s arguments besides its data and callbacks, as the spec gives them."""
    return {
        "epochs": fit.epochs,
        "verbose": fit.verbose,
        "class_weight": class_weight,
        "initial_epoch": initial_epoch,
        "steps_per_epoch": fit.steps_per_epoch,
        "validation_steps": fit.validation_steps,
        "validation_freq": fit.validation_freq,
    }


class _FirstBatch(keras.callbacks.Callback):  # type: ignore[misc]
    """Calls ``then`` once, when the first training batch has ended."""

    # Like the reporting callback's, its batch hook may run on Keras' callback threads.
    async_safe = True

    def __init__(self, then: Callable[[], None]) -> None:
        super().__init__()
        self.then: Callable[[], None] | None = then

    @override
    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        then, self.then = self.then, None
        if then is not None:
            then()


def _first_batch(then: Callable[[], None] | None) -> list[keras.callbacks.Callback]:
    return [] if then is None else [_FirstBatch(then)]


def _stopped(sink: Sink, line: str, outcome: Outcome) -> Outcome:
    """``outcome``, for a run stopped before its end, once everything reported is written."""
    _written(sink)
    print(line, flush=True)
    return outcome


def _written(sink: Sink) -> None:
    """Waits until ``sink`` has written all the job's reports; logs a write that failed."""
    try:
        sink.flush()
    except LostOwnership:
        raise  # another attempt has the job, and the log
    except Exception as exc:
        first_line = (str(exc).splitlines() or [""])[0]
        print(f"fitq: failed: {type(exc).__name__}: {first_line}", flush=True)
        raise


def _test_metrics(model: keras.Model, test: Data, spec: JobSpec) -> dict[str, float | None]:
    """The trained model evaluated once on the test set (None for a value not finite)."""
    inputs = test.eval_inputs(spec, validation_batch_size(spec.fit))
    result = model.evaluate(**inputs.evaluate_kwargs(), verbose=0, return_dict=True)
    metrics = {k: _finite(v) for k, v in result.items()}
    print(f"fitq: test {metrics}", flush=True)
    return metrics


def _finite(value: Any) -> float | None:
    out = float(np.asarray(value))
    return out if np.isfinite(out) else None
