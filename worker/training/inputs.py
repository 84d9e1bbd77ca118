"""The three kinds of data a job trains on, and how each becomes fit()'s and evaluate()'s data.

- ``Arrays``, in memory: fit() gets the arrays themselves, as a plain script passes
  them, so that Keras shuffles, batches and holds out ``validation_split`` exactly as
  it does there. With augmentation, a ``tf.data`` pipeline over the training rows.
- ``DiskArrays``, an uploaded dataset larger than the memory budget: ``RowStream``s
  read it from disk a window of blocks at a time, shuffled by blocks and windows.
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
from worker.training.streaming import Augment, NpyRows, RowStream, stream_bytes

DEFAULT_BATCH_SIZE = 32  # Keras' default, for data that fitq batches itself


# One array, or arrays by model input or output name (a model with several).
ArrayOrNamed = np.ndarray | dict[str, np.ndarray]


@dataclass(frozen=True)
class EvalInputs:
    """Data to evaluate on: ``evaluate()``'s data arguments, or fit()'s ``validation_data``.

    Args:
        x: The inputs as arrays, or a dataset that yields ``(x, y)`` batches.
        y: The labels, with inputs that are arrays (Keras batches them): an array, or
            a list of them in the model's output order; else None.
        batch_size: The batch size Keras batches arrays with (None: Keras' default).
        sample_weight: The samples' weights, as the labels are; None for none.
    """

    x: Any
    y: Any = None
    batch_size: int | None = None
    sample_weight: Any = None

    @property
    def batched_by_keras(self) -> bool:
        return self.y is not None

    def evaluate_kwargs(self) -> dict[str, Any]:
        if self.y is None:
            return {"x": self.x}
        kwargs = {"x": self.x, "y": self.y, "batch_size": self.batch_size}
        if self.sample_weight is not None:
            kwargs["sample_weight"] = self.sample_weight
        return kwargs

    def validation_data(self) -> Any:
        if self.y is None:
            return self.x
        if self.sample_weight is None:
            return (self.x, self.y)
        return (self.x, self.y, self.sample_weight)


class Data(Protocol):
    """A kind of data: its labels and sample shape, and how it feeds fit() and evaluate()."""

    @property
    def y(self) -> ArrayOrNamed:
        """The labels (for class counts and weights); by output name with several."""
        ...

    @property
    def n_samples(self) -> int:
        """How many samples there are."""
        ...

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """One sample's shape, before any augmentation."""
        ...

    def fit_inputs(
        self, spec: JobSpec, validation: Data | None, initial_epoch: int = 0
    ) -> dict[str, Any]:
        """fit()'s data arguments, training on this data and validating on
        ``validation`` (or on the rows ``fit.validation_split`` holds out), for a fit()
        that starts at ``initial_epoch``."""
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
    # fit() must not reorder batches that were shuffled as they were made.
    inputs: dict[str, Any] = {"x": x, "shuffle": False, "validation_data": None}
    if validation is not None:
        inputs["validation_data"] = validation.validation_data()
        if validation.batched_by_keras:
            inputs["validation_batch_size"] = validation_batch_size(fit)
    return inputs


@dataclass
class Arrays:
    """Inputs, labels and sample weights in memory; for a model with several inputs
    (outputs), arrays by input (output) name, as fit() takes them."""

    x: ArrayOrNamed
    y: ArrayOrNamed
    sample_weight: ArrayOrNamed | None = None
    # The model's output names in its order: labels and sample weights by output name
    # go to Keras as lists in this order (Keras 3 takes sample weights by output only
    # in the structure of the model's outputs, a list); () for a model whose outputs
    # are a dict: they go as dicts. Inputs by name go as they are.
    outputs: tuple[str, ...] = ()

    def _keras(self, arrays: ArrayOrNamed | None) -> Any:
        if isinstance(arrays, dict) and self.outputs:
            return [arrays[name] for name in self.outputs]
        return arrays

    @property
    def n_samples(self) -> int:
        return len(first_array(self.x))

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(first_array(self.x).shape[1:])

    def rows(self, start: int | None, stop: int | None) -> Arrays:
        """Rows ``[start, stop)`` of every array."""
        weights = self.sample_weight
        return Arrays(
            _rows(self.x, start, stop),
            _rows(self.y, start, stop),
            None if weights is None else _rows(weights, start, stop),
            self.outputs,
        )

    def fit_inputs(
        self, spec: JobSpec, validation: Data | None, initial_epoch: int = 0
    ) -> dict[str, Any]:
        del initial_epoch  # Keras' shuffle and tf.data's draw from their own state
        fit, specs = spec.fit, spec.data.augmentation
        if not specs:
            # Keras holds out the last rows of x, y and the sample weights alike.
            return {
                "x": self.x,
                "y": self._keras(self.y),
                "sample_weight": self._keras(self.sample_weight),
                "batch_size": fit.batch_size,
                "shuffle": fit.shuffle,
                "validation_split": fit.validation_split,
                "validation_batch_size": fit.validation_batch_size,
                "validation_data": _validation_data(validation, spec, validation_batch_size(fit)),
            }
        # Augmentation takes one input and one output array, without weights (checked).
        assert isinstance(self.x, np.ndarray) and isinstance(self.y, np.ndarray)
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
        x = self.x
        if isinstance(x, np.ndarray):
            x = crop_for_eval(spec.data.augmentation, x)
        return EvalInputs(x, self._keras(self.y), batch_size, self._keras(self.sample_weight))


def first_array(arrays: ArrayOrNamed) -> np.ndarray:
    """The array, or the first of arrays by name."""
    return arrays if isinstance(arrays, np.ndarray) else next(iter(arrays.values()))


def _rows(arrays: ArrayOrNamed, start: int | None, stop: int | None) -> ArrayOrNamed:
    if isinstance(arrays, np.ndarray):
        return arrays[start:stop]
    return {name: a[start:stop] for name, a in arrays.items()}


@dataclass
class DiskArrays:
    """An uploaded dataset too large for memory: inputs stay on disk, labels load.

    ``buffer_bytes`` bounds what the rows read ahead hold together (``RowStream``)."""

    x: NpyRows
    y: np.ndarray
    stop: int  # rows [0, stop) of the file (``take``)
    buffer_bytes: int = stream_bytes(2 << 30)

    @property
    def n_samples(self) -> int:
        return self.stop

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def fit_inputs(
        self, spec: JobSpec, validation: Data | None, initial_epoch: int = 0
    ) -> dict[str, Any]:
        """The training rows as one stream of passes over them, without end, and fit()
        told how many batches an epoch is: epoch ``initial_epoch`` starts at the batch
        an uninterrupted run would have reached, so a resumed fit() sees the same batches."""
        fit = spec.fit
        n_fit = training_rows(fit, self.stop)
        stream = self._rows(spec, 0, n_fit, fit.batch_size or DEFAULT_BATCH_SIZE, training=True)
        steps = fit.steps_per_epoch or stream.n_batches
        x = stream.dataset(first_batch=initial_epoch * steps, repeat=True)
        val_batch = validation_batch_size(fit) or DEFAULT_BATCH_SIZE
        if fit.validation_split:
            held_out = EvalInputs(self._rows(spec, n_fit, self.stop, val_batch).dataset())
            inputs = _self_batched(x, held_out, fit)
        else:
            inputs = _self_batched(x, _evaluated(validation, spec, val_batch), fit)
        return {**inputs, "steps_per_epoch": steps}

    def eval_inputs(self, spec: JobSpec, batch_size: int | None) -> EvalInputs:
        return EvalInputs(
            self._rows(spec, 0, self.stop, batch_size or DEFAULT_BATCH_SIZE).dataset()
        )

    def _rows(
        self, spec: JobSpec, start: int, stop: int, batch_size: int, training: bool = False
    ) -> RowStream:
        """Rows ``[start, stop)``: to train on, shuffled and augmented as the spec says;
        else in order, center-cropped where training batches are cropped."""
        fit, specs = spec.fit, spec.data.augmentation
        augment: Augment | None = None
        if specs and training:
            augment = Augmenter(specs, job_seed(spec))
        elif specs:
            crop = eval_cropper(specs)
            if crop is not None:
                augment = lambda x, _n: crop(x)  # noqa: E731
        return RowStream(
            self.x,
            self.y,
            start=start,
            stop=stop,
            batch_size=batch_size,
            shuffle=training and fit.shuffle,
            seed=job_seed(spec) if training else 0,
            buffer_bytes=self.buffer_bytes,
            workers=fit.workers,
            augment=augment,
        )


@dataclass
class ImageFolder:
    """An uploaded image folder archive, read by image_dataset_from_directory.

    Training and validation images are decoded once, up front, and held for every epoch
    when the whole folder decoded fits ``memory_budget`` (``decoded_bytes``); else
    they are read and decoded again each epoch, as image_dataset_from_directory does."""

    path: Path
    height: int
    width: int
    class_names: list[str]
    class_counts: list[int]
    memory_budget: int = 2**62

    @property
    def y(self) -> np.ndarray:
        """The labels, in class order (for class counts and weights)."""
        return np.repeat(np.arange(len(self.class_counts)), self.class_counts)

    @property
    def n_samples(self) -> int:
        return sum(self.class_counts)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (self.height, self.width, 3)

    @property
    def decoded_bytes(self) -> int:
        """What the folder's images take decoded: float32 pixels, as resized."""
        return self.n_samples * self.height * self.width * 3 * 4

    @property
    def decodes_once(self) -> bool:
        """Whether training and validation images are decoded once, not each epoch."""
        return self.decoded_bytes <= self.memory_budget

    def fit_inputs(
        self, spec: JobSpec, validation: Data | None, initial_epoch: int = 0
    ) -> dict[str, Any]:
        del initial_epoch  # tf.data's shuffle draws from its own state
        fit, specs = spec.fit, spec.data.augmentation
        batch = fit.batch_size or DEFAULT_BATCH_SIZE
        val_batch = validation_batch_size(fit) or DEFAULT_BATCH_SIZE
        subset = "training" if fit.validation_split else None
        ds = self._images(spec, batch, fit.shuffle, subset, each_epoch=True)
        if specs:
            ds = Augmenter(specs, job_seed(spec)).map(ds)
        inputs: dict[str, Any] = {"x": ds.prefetch(tf.data.AUTOTUNE)}
        if fit.validation_split:
            inputs["validation_data"] = self._eval_images(spec, val_batch, "validation", True)
        elif isinstance(validation, ImageFolder):
            inputs["validation_data"] = validation._eval_images(spec, val_batch, None, True)
        else:
            inputs["validation_data"] = _validation_data(validation, spec, val_batch)
        return inputs

    def eval_inputs(self, spec: JobSpec, batch_size: int | None) -> EvalInputs:
        return EvalInputs(self._eval_images(spec, batch_size or DEFAULT_BATCH_SIZE))

    def _eval_images(
        self, spec: JobSpec, batch_size: int, subset: str | None = None, each_epoch: bool = False
    ) -> Any:
        ds = self._images(spec, batch_size, False, subset, each_epoch)
        crop = eval_cropper(spec.data.augmentation)
        if crop is not None:
            ds = ds.map(lambda x, y: (crop(x), y))
        return ds.prefetch(tf.data.AUTOTUNE)

    def _images(
        self,
        spec: JobSpec,
        batch_size: int,
        shuffle: bool,
        subset: str | None,
        each_epoch: bool = False,
    ) -> Any:
        """The folder as image_dataset_from_directory reads it, pixels scaled to [0, 1]:
        all of it, or the ``subset`` of it that ``fit.validation_split`` names. Read
        ``each_epoch`` (to train or validate on), its images are decoded once, now, when
        ``decodes_once``; its batches are the same, in the same order."""
        shuffled = shuffle or subset is not None
        ds = keras.utils.image_dataset_from_directory(
            self.path,
            labels="inferred",
            label_mode="int",
            class_names=self.class_names,
            image_size=(self.height, self.width),
            batch_size=batch_size,
            shuffle=shuffled,
            seed=job_seed(spec),
            validation_split=(spec.fit.validation_split or None) if subset else None,
            subset=subset,
            verbose=False,
        )
        if each_epoch and self.decodes_once:
            return self._decoded_once(ds.file_paths, batch_size, shuffled, job_seed(spec))
        return ds.map(lambda x, y: (x / 255.0, y), num_parallel_calls=tf.data.AUTOTUNE)

    def _decoded_once(self, paths: list[str], batch_size: int, shuffle: bool, seed: int) -> Any:
        """image_dataset_from_directory's dataset over ``paths`` (in the order it indexed
        them), pixels scaled to [0, 1], with the images decoded now, once, and held: it
        shuffles the paths with a buffer of eight batches each epoch, then decodes and
        resizes; the same shuffle, seeded alike, over the images' indices draws the same
        order, and each batch gathers its images from those held."""
        labels = [self.class_names.index(Path(p).relative_to(self.path).parts[0]) for p in paths]
        size = (self.height, self.width)

        def load(path: Any) -> Any:
            # image_dataset_utils' _load_image_tf for RGB, channels last, bilinear.
            img = tf.image.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
            img = tf.image.resize(img, size, method="bilinear")
            img.set_shape((*size, 3))
            return img / 255.0  # elementwise: as the batches' scaling in ``_images``

        decoding = tf.data.Dataset.from_tensor_slices(paths)
        decoding = decoding.map(load, num_parallel_calls=tf.data.AUTOTUNE)
        images = decoding.batch(len(paths)).get_single_element()
        ids = tf.constant(labels, dtype=tf.int32)
        order = tf.data.Dataset.range(len(paths))
        if shuffle:
            order = order.shuffle(buffer_size=batch_size * 8, seed=seed)
        return order.batch(batch_size).map(
            lambda i: (tf.gather(images, i), tf.gather(ids, i)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
