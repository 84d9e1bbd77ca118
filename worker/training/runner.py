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
from checks.compile_args import loss_name, output_names
from checks.monitor import metric_directions
from models.file_names import LOG_FILE
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
from worker.training.final_model import save_final_model
from worker.training.inputs import Data, job_seed, training_rows, validation_batch_size
from worker.training.model_files import (
    ModelFiles,
    freeze,
    load_stored_model,
    save_architecture,
)
from worker.training.outcome import Outcome, cancelled, fit_outcome, past_deadline
from worker.training.reporting import (
    JobCancelled,
    MaxRuntimeExceeded,
    ReportingCallback,
    Sink,
)
from worker.training.resume import Snapshot, StateRestorer, load_backup, restore
from worker.training.schedules import build_optimizer


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
    model_files: ModelFiles | None = None,
) -> Outcome:
    """Runs the job described by ``spec``, writing artifacts under ``job_dir``.

    With ``resume``, continues after the newest good backup of an epoch that the
    database recorded, with the model, optimizer and callback state of that epoch.
    ``fitting`` is called once ``fit()`` has run its first batch: from then on the
    reporting callback sees a cancel (the caller watches for one until then). The
    outcome is logged only once ``sink`` has written everything reported.
    ``model_files`` are where the model of ``model.uploaded`` or ``model.from_job`` is.
    """
    job_dir.mkdir(parents=True, exist_ok=True)
    deadline = _deadline(spec)
    seed_everything(job_seed(spec))
    data = load_job_data(spec.data, datasets_root, memory_budget, _output_order(spec))
    strategy = strategy_for(spec.resources.gpus)
    model = _compiled_model(spec, data, strategy, job_dir, model_files)
    class_weight = _class_weight(spec.fit, data)
    if class_weight is not None:
        sink.record_class_weight(class_weight)
    callbacks = [build_callback(cb, job_dir) for cb in spec.callbacks]
    reporter = _reporter(spec, data, callbacks, sink, job_dir, progress_interval, deadline)
    start = _start(model, job_dir, callbacks, reporter, spec.fit.initial_epoch, resume)
    inputs = data.train.fit_inputs(spec, data.validation, start.initial_epoch)
    # Data that streams from disk says how many batches an epoch is (its own stream).
    arguments = _fit_arguments(spec.fit, class_weight, start.initial_epoch) | inputs
    with _job_log(job_dir):
        _announce(spec, data.train.n_samples, strategy, start.note)
        try:
            history = model.fit(
                **arguments,
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
        if outcome.status is JobStatus.SUCCEEDED:
            _keep_model(outcome, model, data, spec, job_dir)
        _written(sink)
        print(f"fitq: {outcome.status} ({outcome.stop_reason})", flush=True)
    return outcome


def _output_order(spec: JobSpec) -> tuple[str, ...]:
    """The order labels and sample weights by output name go to Keras in, as a list;
    () to pass them as a dict, for a model whose outputs are a dict (Keras 3 takes
    sample weights only in the structure of the model's outputs)."""
    config = spec.model.keras_config or {}
    if isinstance((config.get("config") or {}).get("output_layers"), dict):
        return ()
    return tuple(output_names(spec.model.keras_config))


def _deadline(spec: JobSpec) -> float | None:
    """The ``time.monotonic()`` past which the job stops, from ``max_runtime_seconds``."""
    limit = spec.max_runtime_seconds
    return time.monotonic() + limit if limit else None


def _compiled_model(
    spec: JobSpec,
    data: JobData,
    strategy: tf.distribute.Strategy | None,
    job_dir: Path,
    model_files: ModelFiles | None,
) -> keras.Model:
    """The spec's model, built for the data's samples and targets (or loaded from
    ``model_files``), recorded in ``job_dir`` for warm starts, and compiled with the
    spec's losses, loss weights, metrics and weighted metrics as Keras reads them.

    With several devices its variables are mirrored on each, and fit() splits every
    global batch of ``fit.batch_size`` across them.
    """
    y = data.train.y
    target_dim = 1 if not isinstance(y, np.ndarray) or y.ndim == 1 else int(np.prod(y.shape[1:]))
    head = output_head(loss_name(spec), data.n_classes, target_dim)
    c = spec.compile
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        if spec.model.layer_source:
            if model_files is None:
                raise ValueError("the job's model is stored, but its files were not given")
            model = load_stored_model(model_files)
        else:
            model = build_model(
                spec.model.builtin,
                spec.model.params,
                spec.model.keras_config,
                _input_shape(data.train.sample_shape, spec),
                head,
            )
        save_architecture(model, job_dir)
        freeze(model, spec.model.freeze or [])
        model.compile(
            optimizer=build_optimizer(c.optimizer),
            loss=_structure(c.loss, keras.losses),
            loss_weights=c.loss_weights,
            metrics=_structure(c.metrics, keras.metrics),
            weighted_metrics=_structure(c.weighted_metrics, keras.metrics),
        )
    return model


def _structure(value: Any, module: Any) -> Any:
    """Losses or metrics as the spec nests them (a dict by output, lists), each resolved."""
    if isinstance(value, dict):
        return {name: _structure(item, module) for name, item in value.items()}
    if isinstance(value, list):
        return [_structure(item, module) for item in value]
    return None if value is None else _object(value, module)


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
        assert isinstance(y, np.ndarray), "class_weight takes a model with one output"
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
        metric_directions(spec.compile, output_names(spec.model.keras_config)),
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


def _keep_model(
    outcome: Outcome, model: keras.Model, data: JobData, spec: JobSpec, job_dir: Path
) -> None:
    """Saves the model fit() finished with, then evaluates those same weights on the
    test set (if any)."""
    outcome.model_file = save_final_model(model, job_dir, spec.output.export)
    if data.test is not None:
        outcome.test_metrics = _test_metrics(model, data.test, spec)


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
