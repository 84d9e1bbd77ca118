"""Data augmentation: Keras preprocessing layers on training batches only.

The layers run in the input pipeline: a ``tf.data`` map with parallel calls for
in-memory data, image folders and data streamed from disk (``RowStream``). Every
batch draws its random numbers from a seed of its own, made from the job's seed,
the layer's place and the batch's own number, never from state that batches
augmented in parallel share; so a job is reproducible however many batches are in
flight. Validation and test data are never augmented; after a RandomCrop they
are center-cropped to the same size, as Keras' own RandomCrop does outside training.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf
from typing_extensions import override

from models.spec import AugmentationSpec, RandomCropSpec


class _BatchSeed(keras.random.SeedGenerator):  # type: ignore[misc]
    """The seeds of one layer's draws on one batch: ``[batch number, layer seed + k]``
    for the layer's k-th draw. Nothing is stored between batches, so parallel calls
    cannot race for it."""

    def __init__(self, batch_number: Any, layer_seed: int) -> None:  # noqa: D107
        # SeedGenerator.__init__ would make a state variable, which this never uses.
        self._base = tf.stack([tf.cast(batch_number, tf.int64), tf.constant(layer_seed, tf.int64)])
        self._draws = 0

    @override
    def next(self, ordered: bool = True) -> Any:
        self._draws += 1
        return self._base + tf.constant([0, 1_000_003 * self._draws], tf.int64)


class Augmenter:
    """The job's augmentation layers, applied to a batch with that batch's seed.

    Args:
        specs: The layers, as the job spec gives them.
        seed: The job's seed.
    """

    def __init__(self, specs: list[AugmentationSpec], seed: int) -> None:
        self.seed = seed
        self.layers = []
        for i, spec in enumerate(specs):
            args = spec.model_dump(exclude={"layer"})
            cls = getattr(keras.layers, spec.layer)
            self.layers.append(cls(**args, seed=seed + i))

    def __call__(self, x: Any, batch_number: Any) -> Any:
        """The batch ``x`` augmented; ``batch_number`` (an int or an int64 tensor) seeds it."""
        x = tf.convert_to_tensor(x)
        for i, layer in enumerate(self.layers):
            x = tf.cast(x, layer.compute_dtype)  # as Layer.__call__ casts its inputs
            seed = _BatchSeed(batch_number, self.seed + i)
            if isinstance(layer, keras.layers.GaussianNoise):
                noise = keras.random.normal(
                    tf.shape(x), stddev=layer.stddev, dtype=x.dtype, seed=seed
                )
                x = x + noise
            else:
                transform = layer.get_random_transformation(x, training=True, seed=seed)
                x = layer.transform_images(x, transform, training=True)
        return x

    def numpy(self, x: np.ndarray, batch_number: int) -> np.ndarray:
        """As ``__call__``, eagerly, for loaders that hand numpy to fit()."""
        return np.asarray(self(x, tf.constant(batch_number, tf.int64)))

    def map(self, ds: tf.data.Dataset) -> tf.data.Dataset:
        """``ds``'s batches augmented in parallel, each numbered by a random stream seeded
        with the job's seed, drawn in order and drawn anew (deterministically) every epoch."""
        numbers = tf.data.Dataset.random(seed=self.seed, rerandomize_each_iteration=True)

        def apply(batch: Any, n: Any) -> tuple[Any, Any]:
            x, y = batch
            return self(x, n), y

        return tf.data.Dataset.zip(ds, numbers).map(apply, num_parallel_calls=tf.data.AUTOTUNE)


def eval_cropper(specs: list[AugmentationSpec]) -> keras.Sequential | None:
    """The center crops that validation and test batches get, as layers (None: none)."""
    crops = [
        keras.layers.CenterCrop(s.height, s.width) for s in specs if isinstance(s, RandomCropSpec)
    ]
    return keras.Sequential(crops) if crops else None


def crop_for_eval(specs: list[AugmentationSpec], x: np.ndarray) -> np.ndarray:
    """Validation and test inputs, center-cropped where training batches are cropped."""
    for spec in specs:
        if isinstance(spec, RandomCropSpec):
            x = np.asarray(keras.layers.CenterCrop(spec.height, spec.width)(x))
    return x


def augmented_dataset(
    x: np.ndarray,
    y: np.ndarray,
    specs: list[AugmentationSpec],
    seed: int,
    batch_size: int,
    shuffle: bool,
    repeat: bool,
) -> tf.data.Dataset:
    """Shuffled (seeded, every epoch), batched, augmented in parallel, prefetched."""
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if repeat:
        ds = ds.repeat()
    return Augmenter(specs, seed).map(ds).prefetch(tf.data.AUTOTUNE)
