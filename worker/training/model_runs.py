"""Evaluate and predict runs: a finished job's trained model, loaded and used once.

It knows nothing of Celery. The model is the parent job's ``model.keras``, loaded with
``keras.saving.load_model(path, safe_mode=True)`` (compiled as it was trained); the
data is read as the parent read its test data, center-cropped where its training
batches were cropped (``Data.eval_inputs`` with the parent's spec).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import keras
import numpy as np
from typing_extensions import override

from models.runs import PREDICTIONS_FILE, EvaluateSpec, InputRef, PredictSpec
from models.spec import DataRef, JobSpec
from models.states import JobStatus, StopReason
from worker.training.data import load_ref
from worker.training.inputs import Arrays, Data, EvalInputs
from worker.training.outcome import Outcome
from worker.training.runner import _finite, _job_log, seed_everything


def use_model(
    spec: EvaluateSpec | PredictSpec,
    parent: JobSpec,
    model_path: Path,
    job_dir: Path,
    datasets_root: Path | None = None,
    memory_budget: int = 2**62,
) -> Outcome:
    """Runs ``evaluate()`` or ``predict()`` of the model at ``model_path`` on the run's
    data, writing the run's log (and a predict run's ``predictions.npy``) in ``job_dir``.

    An evaluate run's outcome holds evaluate()'s ``return_dict`` as ``test_metrics``
    (None for a value that is not finite).
    """
    job_dir.mkdir(parents=True, exist_ok=True)
    with _job_log(job_dir):
        print(f"fitq: {spec.kind} with the model of a job trained with seed {parent.seed}")
        if parent.seed is not None:
            seed_everything(parent.seed)
        model = keras.saving.load_model(model_path, safe_mode=True)
        inputs = _data(spec.data, datasets_root, memory_budget).eval_inputs(parent, spec.batch_size)
        if isinstance(spec, EvaluateSpec):
            result = model.evaluate(
                **inputs.evaluate_kwargs(), verbose=0, return_dict=True, callbacks=[RunLog()]
            )
            metrics = {k: _finite(v) for k, v in result.items()}
            print(f"fitq: evaluate {metrics}", flush=True)
            return Outcome(JobStatus.SUCCEEDED, StopReason.COMPLETED, test_metrics=metrics)
        predictions = _predict(model, inputs)
        _save(job_dir / PREDICTIONS_FILE, predictions)
        print(f"fitq: predictions {list(predictions.shape)} in {PREDICTIONS_FILE}", flush=True)
    return Outcome(JobStatus.SUCCEEDED, StopReason.COMPLETED)


class RunLog(keras.callbacks.Callback):  # type: ignore[misc]
    """Writes to the run's log how many batches evaluate() or predict() ran, when it
    ends (Keras' ``on_test_end`` and ``on_predict_end`` hooks)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches = 0

    @override
    def on_test_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.batches = batch + 1

    @override
    def on_predict_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.batches = batch + 1

    @override
    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        print(f"fitq: evaluate ended after {self.batches} batches", flush=True)

    @override
    def on_predict_end(self, logs: dict[str, Any] | None = None) -> None:
        print(f"fitq: predict ended after {self.batches} batches", flush=True)


def _data(ref: DataRef | InputRef, root: Path | None, memory_budget: int) -> Data:
    """The run's data; inline inputs without labels get placeholder labels predict() ignores."""
    if isinstance(ref, DataRef):
        return load_ref(ref, root, memory_budget)
    as_data = ref.data_ref()
    if as_data is not None:
        return load_ref(as_data, root, memory_budget)
    x = np.asarray(ref.x, dtype=np.float32)
    if x.ndim == 1:
        x = x.reshape(-1, 1)
    x = x[: ref.take]
    return Arrays(x, np.zeros(len(x), dtype=np.int64))


def _predict(model: keras.Model, inputs: EvalInputs) -> np.ndarray:
    """predict()'s output as one array; a dataset's labels are not read."""
    batch = {"batch_size": inputs.batch_size} if inputs.batched_by_keras else {}
    out = model.predict(inputs.x, verbose=0, callbacks=[RunLog()], **batch)
    if not isinstance(out, np.ndarray):
        raise TypeError(
            f"predict() returned a {type(out).__name__}, not one array: models with several "
            "outputs cannot be written as one .npy file"
        )
    return out


def _save(path: Path, array: np.ndarray) -> None:
    """Writes the array whole or not at all: a reader never sees half a file."""
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as f:
        np.save(f, array, allow_pickle=False)
    os.replace(partial, path)
