"""The training runner: one job spec in, one ``model.fit()`` call, one outcome out.

It knows nothing of Celery. It does what a careful plain script does (seed, enable
op determinism, build, compile, fit with numpy arrays) and adds only the reporting
callback, so the recorded history equals the script's.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from checks.catalog import output_head
from models.spec import (
    EarlyStoppingSpec,
    JobSpec,
    ModelCheckpointSpec,
    ObjectSpec,
    RandomCropSpec,
    ReduceLROnPlateauSpec,
    TerminateOnNaNSpec,
)
from worker.devices import device_names, strategy_for
from worker.jobstore import LostOwnership
from worker.training.architectures import build_model
from worker.training.callbacks import build_callback
from worker.training.data import balanced_class_weight, load_job_data
from worker.training.inputs import validation_batch_size
from worker.training.reporting import (
    JobCancelled,
    MaxRuntimeExceeded,
    ReportingCallback,
    Sink,
)
from worker.training.resume import Snapshot, StateRestorer, load_backup, restore

LOG_FILE = "train.log"
TRACEBACK_TAIL_FRAMES = 8


@dataclass
class Outcome:
    """How a run ended: ``status`` and ``stop_reason`` as the job records them."""

    status: str
    stop_reason: str
    test_metrics: dict[str, float | None] | None = None
    error: tuple[str, str, str] | None = None
    history: dict[str, list[Any]] = field(default_factory=dict)
    class_weight: dict[int, float] | None = None


def _object(value: str | ObjectSpec, module: Any) -> Any:
    if isinstance(value, str):
        return value
    return module.deserialize({"class_name": value.class_name, "config": dict(value.config)})


def traceback_tail(exc: BaseException) -> str:
    """The last frames of ``exc``'s traceback and its first message line."""
    frames = traceback.format_tb(exc.__traceback__)[-TRACEBACK_TAIL_FRAMES:]
    first_line = (str(exc).splitlines() or [""])[0]
    return (
        "Traceback (most recent call last):\n"
        + "".join(frames)
        + (f"{type(exc).__name__}: {first_line}")
    )


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
    started = time.monotonic()
    deadline = started + spec.max_runtime_seconds if spec.max_runtime_seconds else None
    assert spec.seed is not None, "the API records a seed in every stored spec"
    seed_everything(spec.seed)

    data = load_job_data(spec.data, datasets_root, memory_budget)
    y = data.train.y
    target_dim = 1 if y.ndim == 1 else int(np.prod(y.shape[1:]))
    loss = spec.compile.loss if isinstance(spec.compile.loss, str) else spec.compile.loss.class_name
    head = output_head(loss, data.n_classes, target_dim)
    # Several devices: variables are mirrored on each, and fit() splits every global
    # batch of fit.batch_size across them.
    strategy = strategy_for(spec.resources.gpus)
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

    fit = spec.fit
    class_weight: dict[int, float] | None = None
    if fit.class_weight == "balanced":
        assert data.n_classes is not None
        # Keras' validation_split holds out the last fraction, before any shuffling.
        n_fit = int(len(y) * (1 - fit.validation_split)) if fit.validation_split else len(y)
        class_weight = balanced_class_weight(y[:n_fit], data.n_classes)
    elif isinstance(fit.class_weight, dict):
        class_weight = {int(k): float(v) for k, v in fit.class_weight.items()}
    if class_weight is not None:
        sink.record_class_weight(class_weight)

    keras_callbacks = [build_callback(cb, job_dir) for cb in spec.callbacks]
    checkpoints = [cb for cb in keras_callbacks if isinstance(cb, keras.callbacks.ModelCheckpoint)]
    has_validation = data.validation is not None or fit.validation_split > 0
    initial_epoch = fit.initial_epoch
    restorer: list[keras.callbacks.Callback] = []
    resumed, resume_note = _resume_point(model, job_dir, fit.initial_epoch, resume)
    reporter = ReportingCallback(
        sink,
        job_dir,
        checkpoints,
        monitored(spec, has_validation),
        backup_callbacks=keras_callbacks,
        interval=progress_interval,
        deadline=deadline,
    )
    if resumed is not None:
        restore(model, resumed)
        initial_epoch = resumed.epoch
        state = (resume.callback_states if resume else {}).get(resumed.epoch, {})
        restorer.append(StateRestorer(keras_callbacks, state, resumed))
        reporter.restore_state(state.get("reporter", {}))
        for cb in keras_callbacks:
            if isinstance(cb, keras.callbacks.CSVLogger):
                cb.append = True
    inputs = data.train.fit_inputs(spec, data.validation)

    outcome: Outcome
    with (
        open(job_dir / LOG_FILE, "a", buffering=1, encoding="utf-8") as log,
        contextlib.redirect_stdout(log),
    ):
        print(f"fitq: training with seed {spec.seed} on {len(y)} samples", flush=True)
        if strategy is not None:
            devices = ", ".join(strategy.extended.worker_devices)
            print(
                f"fitq: MirroredStrategy with {strategy.num_replicas_in_sync} replicas "
                f"({devices}); global batch {fit.batch_size or 32} (pid {os.getpid()})",
                flush=True,
            )
        else:
            print(f"fitq: training on {device_names()[0]} (pid {os.getpid()})", flush=True)
        if resume_note:
            print(f"fitq: {resume_note}", flush=True)
        try:
            history = model.fit(
                **inputs,
                epochs=fit.epochs,
                verbose=fit.verbose,
                callbacks=[*keras_callbacks, *restorer, reporter, *_first_batch(fitting)],
                class_weight=class_weight,
                initial_epoch=initial_epoch,
                steps_per_epoch=fit.steps_per_epoch,
                validation_steps=fit.validation_steps,
                validation_freq=fit.validation_freq,
            )
            if reporter.stopped_by is not None:
                raise reporter.stopped_by
        except JobCancelled:
            _written(sink)
            print("fitq: cancelled", flush=True)
            return Outcome("cancelled", "cancelled", class_weight=class_weight)
        except MaxRuntimeExceeded:
            _written(sink)
            print(f"fitq: stopped after max_runtime_seconds={spec.max_runtime_seconds}", flush=True)
            return Outcome(
                "failed",
                "max_runtime",
                class_weight=class_weight,
                error=(
                    "MaxRuntimeExceeded",
                    f"the job ran past max_runtime_seconds={spec.max_runtime_seconds}",
                    "",
                ),
            )
        outcome = _outcome(spec, model, keras_callbacks, history.history)
        outcome.class_weight = class_weight
        if outcome.status == "succeeded" and data.test is not None:
            result = model.evaluate(
                **data.test.eval_inputs(spec, validation_batch_size(fit)).evaluate_kwargs(),
                verbose=0,
                return_dict=True,
            )
            outcome.test_metrics = {k: _finite(v) for k, v in result.items()}
            print(f"fitq: test {outcome.test_metrics}", flush=True)
        _written(sink)
        print(f"fitq: {outcome.status} ({outcome.stop_reason})", flush=True)
    return outcome


class _FirstBatch(keras.callbacks.Callback):  # type: ignore[misc]
    """Calls ``then`` once, when the first training batch has ended."""

    # Like the reporting callback's, its batch hook may run on Keras' callback threads.
    async_safe = True

    def __init__(self, then: Callable[[], None]) -> None:
        super().__init__()
        self.then: Callable[[], None] | None = then

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        then, self.then = self.then, None
        if then is not None:
            then()


def _first_batch(then: Callable[[], None] | None) -> list[keras.callbacks.Callback]:
    return [] if then is None else [_FirstBatch(then)]


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


def _input_shape(shape: tuple[int, ...], spec: JobSpec) -> tuple[int, ...]:
    """The samples' shape as the model sees them, after any RandomCrop."""
    for aug in spec.data.augmentation:
        if isinstance(aug, RandomCropSpec):
            shape = (aug.height, aug.width, *shape[2:])
    return shape


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


def _finite(value: Any) -> float | None:
    out = float(np.asarray(value))
    return out if np.isfinite(out) else None


def _outcome(
    spec: JobSpec, model: keras.Model, callbacks: list[Any], history: dict[str, list[Any]]
) -> Outcome:
    losses = history.get("loss") or []
    terminate_on_nan = any(isinstance(cb, TerminateOnNaNSpec) for cb in spec.callbacks)
    if terminate_on_nan and losses and not np.isfinite(losses[-1]):
        return Outcome(
            "failed",
            "nan_loss",
            history=history,
            error=(
                "NaNLoss",
                f"the loss became {losses[-1]} in epoch "
                f"{spec.fit.initial_epoch + len(losses)}; TerminateOnNaN stopped training",
                "",
            ),
        )
    for cb in callbacks:
        if isinstance(cb, keras.callbacks.EarlyStopping) and cb.stopped_epoch > 0:
            return Outcome("succeeded", "early_stopping", history=history)
    return Outcome("succeeded", "completed", history=history)
