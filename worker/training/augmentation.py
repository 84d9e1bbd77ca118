"""Data augmentation: Keras preprocessing layers on training batches only.

The layers run in the input pipeline: a ``tf.data`` map with parallel calls for
in-memory data, the loading workers of a ``RowsDataset`` for data on disk. Each
layer is seeded from the job's seed, so a job is reproducible. Validation and test
data are never augmented; after a RandomCrop they are center-cropped to the same
size, as Keras' own RandomCrop does outside training.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from models.spec import AugmentationSpec, RandomCropSpec


def augmenter(specs: list[AugmentationSpec], seed: int) -> keras.Sequential:
    layers = []
    for i, spec in enumerate(specs):
        args = spec.model_dump(exclude={"layer"})
        cls = getattr(keras.layers, spec.layer)
        layers.append(cls(**args, seed=seed + i))
    return keras.Sequential(layers, name="augmentation")


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
    aug = augmenter(specs, seed)
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if repeat:
        ds = ds.repeat()

    def apply(a: Any, b: Any) -> tuple[Any, Any]:
        return aug(a, training=True), b

    return ds.map(apply, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
