"""The three kinds of data a job trains on, and how each becomes fit()'s and evaluate()'s data.

- ``Arrays``, in memory: fit() gets the arrays themselves, as a plain script passes
  them, so that Keras shuffles, batches and holds out ``validation_split`` exactly as
  it does there. With augmentation, a ``tf.data`` pipeline over the training rows.
- ``DiskArrays``, an uploaded dataset larger than the memory budget: ``RowsDataset``s
  read each batch from disk.
- ``ImageFolder``, an uploaded image folder: ``image_dataset_from_directory`` reads it.

Each has ``fit_inputs`` (the training data and the validation data) and
``eval_inputs`` (the data as a validation or test set). Validation and test data are
never augmented; after a RandomCrop they are center-cropped to the same size.
``validation_split`` holds out the last fraction of the rows before any shuffling, as
Keras does; for an image folder, ``image_dataset_from_directory``'s own split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import keras
import numpy as np
import tensorflow as tf

from models.spec import FitSpec, JobSpec
from worker.training.augmentation import Augmenter, augmented_dataset, crop_for_eval, eval_cropper
from worker.training.streaming import Augment, NpyRows, RowsDataset

DEFAULT_BATCH_SIZE = 32  # Keras' default, for data that fitq batches itself


@dataclass(frozen=True)
class EvalInputs:
    """Data to evaluate on: ``evaluate()``'s data arguments, or fit()'s ``validation_data``.

    Args:
        x: The inputs as arrays, or a dataset that yields ``(x, y)`` batches.
        y: The labels, with inputs that are arrays (Keras batches them); else None.
        batch_size: The batch size Keras batches arrays with (None: Keras' default).
    """

    x: Any
    y: np.ndarray | None = None
    batch_size: int | None = None

    @property
    def batched_by_keras(self) -> bool:
        return self.y is not None

    def evaluate_kwargs(self) -> dict[str, Any]:
        if self.y is None:
            return {"x": self.x}
        return {"x": self.x, "y": self.y, "batch_size": self.batch_size}

    def validation_data(self) -> Any:
        return self.x if self.y is None else (self.x, self.y)


class Data(Protocol):
    """A kind of data: its labels and sample shape, and how it feeds fit() and evaluate()."""

    @property
    def y(self) -> np.ndarray:
        """The labels (for class counts and weights)."""
        ...

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """One sample's shape, before any augmentation."""
        ...

    def fit_inputs(self, spec: JobSpec, validation: Data | None) -> dict[str, Any]:
        """fit()'s data arguments, training on this data and validating on
        ``validation`` (or on the rows ``fit.validation_split`` holds out)."""
        ...

    def eval_inputs(self, spec: JobSpec, batch_size: int | None) -> EvalInputs:
        """This data as a validation or test set, in batches of ``batch_size``."""
        ...


def job_seed(spec: JobSpec) -> int:
    assert spec.seed is not None, "the API records a seed in every stored spec"
    return spec.seed


def training_rows(fit: FitSpec, n: int) -> int:
    """How many of ``n`` rows train: Keras' ``validation_split`` holds out the last fraction."""
    return int(n * (1 - fit.validation_split)) if fit.validation_split else n


def validation_batch_size(fit: FitSpec) -> int | None:
    return fit.validation_batch_size or fit.batch_size


def _evaluated(validation: Data | None, spec: JobSpec, batch_size: int | None) -> EvalInputs | None:
    return None if validation is None else validation.eval_inputs(spec, batch_size)


def _validation_data(validation: Data | None, spec: JobSpec, batch_size: int | None) -> Any:
    evaluated = _evaluated(validation, spec, batch_size)
    return None if evaluated is None else evaluated.validation_data()


def _self_batched(x: Any, validation: EvalInputs | None, fit: FitSpec) -> dict[str, Any]:
    """fit()'s data arguments for training data that batches and orders itself."""
    # fit() must not reorder the batches of a RowsDataset, which shuffles its own rows.
    inputs: dict[str, Any] = {"x": x, "shuffle": False, "validation_data": None}
    if validation is not None:
        inputs["validation_data"] = validation.validation_data()
        if validation.batched_by_keras:
            inputs["validation_batch_size"] = validation_batch_size(fit)
    return inputs


@dataclass
class Arrays:
    """Inputs and labels in memory."""

    x: np.ndarray
    y: np.ndarray

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def fit_inputs(self, spec: JobSpec, validation: Data | None) -> dict[str, Any]:
        fit, specs = spec.fit, spec.data.augmentation
        if not specs:
            return {
                "x": self.x,
                "y": self.y,
                "batch_size": fit.batch_size,
                "shuffle": fit.shuffle,
                "validation_split": fit.validation_split,
                "validation_batch_size": fit.validation_batch_size,
                "validation_data": _validation_data(validation, spec, validation_batch_size(fit)),
            }
        n_fit = training_rows(fit, len(self.x))
        x = augmented_dataset(
            self.x[:n_fit],
            self.y[:n_fit],
            specs,
            job_seed(spec),
            fit.batch_size or DEFAULT_BATCH_SIZE,
            fit.shuffle,
            repeat=fit.steps_per_epoch is not None,
        )
        if fit.validation_split:
            held_out = Arrays(self.x[n_fit:], self.y[n_fit:]).eval_inputs(spec, None)
            return _self_batched(x, held_out, fit)
        val_batch = validation_batch_size(fit) or DEFAULT_BATCH_SIZE
        return _self_batched(x, _evaluated(validation, spec, val_batch), fit)

    def eval_inputs(self, spec: JobSpec, batch_size: int | None) -> EvalInputs:
        return EvalInputs(crop_for_eval(spec.data.augmentation, self.x), self.y, batch_size)


@dataclass
class DiskArrays:
    """An uploaded dataset too large for memory: inputs stay on disk, labels load."""

    x: NpyRows
    y: np.ndarray
    stop: int  # rows [0, stop) of the file (``take``)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def fit_inputs(self, spec: JobSpec, validation: Data | None) -> dict[str, Any]:
        fit = spec.fit
        n_fit = training_rows(fit, self.stop)
        x = self._rows(spec, 0, n_fit, fit.batch_size or DEFAULT_BATCH_SIZE, training=True)
        val_batch = validation_batch_size(fit) or DEFAULT_BATCH_SIZE
        if fit.validation_split:
            held_out = EvalInputs(self._rows(spec, n_fit, self.stop, val_batch))
            return _self_batched(x, held_out, fit)
        return _self_batched(x, _evaluated(validation, spec, val_batch), fit)

    def eval_inputs(self, spec: JobSpec, batch_size: int | None) -> EvalInputs:
        return EvalInputs(self._rows(spec, 0, self.stop, batch_size or DEFAULT_BATCH_SIZE))

    def _rows(
        self, spec: JobSpec, start: int, stop: int, batch_size: int, training: bool = False
    ) -> RowsDataset:
        """Rows ``[start, stop)``: to train on, shuffled and augmented as the spec says;
        else in order, center-cropped where training batches are cropped."""
        fit, specs = spec.fit, spec.data.augmentation
        augment: Augment | None = None
        if specs and training:
            augment = Augmenter(specs, job_seed(spec)).numpy
        elif specs:
            augment = lambda x, _n: crop_for_eval(specs, x)  # noqa: E731
        return RowsDataset(
            self.x,
            self.y,
            start=start,
            stop=stop,
            batch_size=batch_size,
            shuffle=training and fit.shuffle,
            seed=job_seed(spec) if training else 0,
            workers=fit.workers,
            use_multiprocessing=fit.use_multiprocessing,
            augment=augment,
        )


@dataclass
class ImageFolder:
    """An uploaded image folder archive, read by image_dataset_from_directory."""

    path: Path
    height: int
    width: int
    class_names: list[str]
    class_counts: list[int]

    @property
    def y(self) -> np.ndarray:
        """The labels, in class order (for class counts and weights)."""
        return np.repeat(np.arange(len(self.class_counts)), self.class_counts)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (self.height, self.width, 3)

    def fit_inputs(self, spec: JobSpec, validation: Data | None) -> dict[str, Any]:
        fit, specs = spec.fit, spec.data.augmentation
        batch = fit.batch_size or DEFAULT_BATCH_SIZE
        val_batch = validation_batch_size(fit) or DEFAULT_BATCH_SIZE
        subset = "training" if fit.validation_split else None
        ds = self._images(spec, batch, fit.shuffle, subset)
        if specs:
            ds = Augmenter(specs, job_seed(spec)).map(ds)
        inputs: dict[str, Any] = {"x": ds.prefetch(tf.data.AUTOTUNE)}
        if fit.validation_split:
            inputs["validation_data"] = self._eval_images(spec, val_batch, "validation")
        else:
            inputs["validation_data"] = _validation_data(validation, spec, val_batch)
        return inputs

    def eval_inputs(self, spec: JobSpec, batch_size: int | None) -> EvalInputs:
        return EvalInputs(self._eval_images(spec, batch_size or DEFAULT_BATCH_SIZE))

    def _eval_images(self, spec: JobSpec, batch_size: int, subset: str | None = None) -> Any:
        ds = self._images(spec, batch_size, shuffle=False, subset=subset)
        crop = eval_cropper(spec.data.augmentation)
        if crop is not None:
            ds = ds.map(lambda x, y: (crop(x), y))
        return ds.prefetch(tf.data.AUTOTUNE)

    def _images(self, spec: JobSpec, batch_size: int, shuffle: bool, subset: str | None) -> Any:
        """The folder as image_dataset_from_directory reads it, pixels scaled to [0, 1]:
        all of it, or the ``subset`` of it that ``fit.validation_split`` names."""
        ds = keras.utils.image_dataset_from_directory(
            self.path,
            labels="inferred",
            label_mode="int",
            class_names=self.class_names,
            image_size=(self.height, self.width),
            batch_size=batch_size,
            shuffle=shuffle or subset is not None,
            seed=job_seed(spec),
            validation_split=(spec.fit.validation_split or None) if subset else None,
            subset=subset,
            verbose=False,
        )
        return ds.map(lambda x, y: (x / 255.0, y), num_parallel_calls=tf.data.AUTOTUNE)
