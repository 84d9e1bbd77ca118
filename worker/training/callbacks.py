"""Builds the Keras callbacks a job spec declares, with paths inside the job's folder.

Each file name a spec chooses lives in a folder of its own (ModelCheckpoint's in
``checkpoints/``, CSVLogger's in ``csv/``; TensorBoard writes to ``tensorboard/``), so
that no name can land on fitq's own files beside them: ``train.log``, ``backup/``,
``model.keras``, ``export/``.
"""

from __future__ import annotations

from pathlib import Path

import keras

from models.file_names import CHECKPOINT_DIR, CSV_DIR, TENSORBOARD_DIR
from models.spec import (
    CSVLoggerSpec,
    EarlyStoppingSpec,
    LearningRateSchedulerSpec,
    ModelCheckpointSpec,
    ReduceLROnPlateauSpec,
    TensorBoardSpec,
    TerminateOnNaNSpec,
)
from worker.training.schedules import EpochSchedule, build_schedule

SpecCallback = (
    EarlyStoppingSpec
    | ModelCheckpointSpec
    | TensorBoardSpec
    | ReduceLROnPlateauSpec
    | LearningRateSchedulerSpec
    | CSVLoggerSpec
    | TerminateOnNaNSpec
)


def inside(job_dir: Path, name: str) -> Path:
    """``job_dir / name``, refusing anything that resolves outside ``job_dir``."""
    root = job_dir.resolve()
    path = (root / name).resolve()
    if root not in path.parents:
        raise ValueError(f"{name!r} resolves outside the job's folder")
    return path


def build_callback(spec: SpecCallback, job_dir: Path) -> keras.callbacks.Callback:
    args = spec.model_dump(exclude={"type"})
    if isinstance(spec, EarlyStoppingSpec):
        return keras.callbacks.EarlyStopping(**args)
    if isinstance(spec, ModelCheckpointSpec):
        (job_dir / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
        args["filepath"] = str(inside(job_dir / CHECKPOINT_DIR, spec.filepath))
        return keras.callbacks.ModelCheckpoint(**args)
    if isinstance(spec, TensorBoardSpec):
        return keras.callbacks.TensorBoard(log_dir=str(job_dir / TENSORBOARD_DIR), **args)
    if isinstance(spec, ReduceLROnPlateauSpec):
        return keras.callbacks.ReduceLROnPlateau(**args)
    if isinstance(spec, LearningRateSchedulerSpec):
        schedule = EpochSchedule(build_schedule(spec.schedule))
        return keras.callbacks.LearningRateScheduler(schedule, verbose=spec.verbose)
    if isinstance(spec, CSVLoggerSpec):
        (job_dir / CSV_DIR).mkdir(parents=True, exist_ok=True)
        args["filename"] = str(inside(job_dir / CSV_DIR, spec.filename))
        return keras.callbacks.CSVLogger(**args)
    return keras.callbacks.TerminateOnNaN()
