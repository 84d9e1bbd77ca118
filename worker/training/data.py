"""Loads the data a job trains, validates and tests on, each part as the kind it is
(``worker.training.inputs``: in memory, on disk, or an image folder)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from checks.datasets import BUILTIN_DATASETS, BUILTIN_PREFIX, split_indices
from models.spec import DataRef, DataSpec
from worker.training.inputs import ArrayOrNamed, Arrays, Data, DiskArrays, ImageFolder, first_array
from worker.training.streaming import NpyRows, stream_bytes


@dataclass
class JobData:
    """A job's training, validation and test data, and its number of classes."""

    train: Data
    validation: Data | None
    test: Data | None
    n_classes: int | None  # None for real-valued targets


@lru_cache(maxsize=4)
def load_builtin(name: str) -> Arrays:
    """A built-in dataset, scaled as ``checks.datasets`` documents (loaded once; callers
    index into it, which copies)."""
    from sklearn import datasets as skd

    meta = BUILTIN_DATASETS[name]
    loader = {
        "digits": skd.load_digits,
        "iris": skd.load_iris,
        "wine": skd.load_wine,
        "breast_cancer": skd.load_breast_cancer,
    }[name]
    bunch = loader()
    x = np.asarray(bunch.data, dtype=np.float64)
    if meta.scaling == "divide16":
        x = x / 16.0
    else:
        std = x.std(axis=0)
        x = (x - x.mean(axis=0)) / np.where(std == 0, 1.0, std)
    features = x.astype(np.float32).reshape((len(x), *meta.feature_shape))
    return Arrays(features, np.asarray(bunch.target, dtype=np.int64))


def _labels(y: np.ndarray) -> np.ndarray:
    if y.dtype.kind in "biu":
        return y.astype(np.int64)
    return y.astype(np.float32)


def _inputs(x: np.ndarray) -> np.ndarray:
    return x.reshape(-1, 1) if x.ndim == 1 else x


def _one(arrays: ArrayOrNamed) -> ArrayOrNamed:
    """Arrays by name for a model with one input (output) are that input's array."""
    return first_array(arrays) if isinstance(arrays, dict) and len(arrays) == 1 else arrays


def _arrays(
    x: ArrayOrNamed,
    y: ArrayOrNamed,
    weights: ArrayOrNamed | None,
    stop: int | None,
    outputs: tuple[str, ...],
) -> Arrays:
    """Arrays as fit() takes them: inputs 2-D at least, labels as ``_labels`` says, the
    first ``stop`` rows (``take``); a named input, output or weight of one is plain.
    ``outputs`` are the model's output names, in its order."""
    x = {k: _inputs(a) for k, a in x.items()} if isinstance(x, dict) else _inputs(x)
    y = {k: _labels(a) for k, a in y.items()} if isinstance(y, dict) else _labels(y)
    arrays = Arrays(_one(x), _one(y), None if weights is None else _one(weights), outputs)
    return arrays.rows(None, stop)


def load_uploaded(
    ref: DataRef, root: Path, memory_budget: int, outputs: tuple[str, ...] = ()
) -> Data:
    from checks.validation import uploaded_split
    from storage.uploads import split_arrays, stored_stems

    folder = root / str(ref.dataset)
    if (folder / "images").is_dir():
        meta = json.loads((folder / "meta.json").read_text())
        height, width, _ = meta["x_shape"]
        return ImageFolder(
            folder / "images",
            height,
            width,
            meta["class_names"],
            meta["class_counts"],
            memory_budget,
        )
    found = split_arrays(stored_stems(folder), uploaded_split(ref.split))
    if found is None:
        # The checks refuse a split the dataset does not have: its files went missing.
        raise FileNotFoundError(f"no arrays of split {ref.split!r} in {folder}")

    def array(stem: str) -> np.ndarray:
        loaded: np.ndarray = np.load(folder / f"{stem}.npy", allow_pickle=False)
        return loaded

    def load(names: str | dict[str, str]) -> ArrayOrNamed:
        return array(names) if isinstance(names, str) else {n: array(s) for n, s in names.items()}

    xn, yn, stop = found.x, found.y, ref.take
    if isinstance(xn, str) and isinstance(yn, str) and found.sample_weight is None:
        y = _labels(np.load(folder / f"{yn}.npy", allow_pickle=False)[:stop])
        rows = NpyRows(folder / f"{xn}.npy")
        stop = min(stop or len(rows), len(rows))
        if rows.row_bytes * stop + y.nbytes > memory_budget:
            return DiskArrays(rows, y, stop, stream_bytes(memory_budget))
    # Named arrays and sample weights are read into memory, as a plain script reads them.
    weights = None if found.sample_weight is None else load(found.sample_weight)
    return _arrays(load(xn), load(yn), weights, stop, outputs)


def _inline(values: list[Any] | dict[str, list[Any]], dtype: type) -> ArrayOrNamed:
    if isinstance(values, dict):
        return {name: np.asarray(v, dtype=dtype) for name, v in values.items()}
    return np.asarray(values, dtype=dtype)


def _inline_labels(y: np.ndarray) -> np.ndarray:
    """Whole non-negative numbers as int64 class ids, else float32."""
    integral = y.ndim == 1 and bool(np.all(y == np.round(y))) and y.min() >= 0
    return y.astype(np.int64) if integral else y.astype(np.float32)


def load_ref(
    ref: DataRef,
    root: Path | None = None,
    memory_budget: int = 2**62,
    outputs: tuple[str, ...] = (),
) -> Data:
    """One data set; ``outputs`` are the model's output names, in its order."""
    if ref.dataset is not None and not ref.dataset.startswith(BUILTIN_PREFIX):
        assert root is not None, "uploaded datasets need the datasets folder"
        return load_uploaded(ref, root, memory_budget, outputs)
    if ref.dataset is not None:
        name = ref.dataset.removeprefix(BUILTIN_PREFIX)
        whole = load_builtin(name)
        idx = split_indices(len(whole.x), ref.split)
        return Arrays(first_array(whole.x)[idx], first_array(whole.y)[idx]).rows(None, ref.take)
    assert ref.x is not None and ref.y is not None
    y = _inline(ref.y, np.float64)
    y = {k: _inline_labels(a) for k, a in y.items()} if isinstance(y, dict) else _inline_labels(y)
    weights = None if ref.sample_weight is None else _inline(ref.sample_weight, np.float32)
    return _arrays(_inline(ref.x, np.float32), y, weights, ref.take, outputs)


def load_job_data(
    spec: DataSpec,
    root: Path | None = None,
    memory_budget: int = 2**62,
    outputs: tuple[str, ...] = (),
) -> JobData:
    """The job's data; ``outputs`` are the model's output names, in its order (labels
    and sample weights by output name go to Keras in that order)."""
    train = load_ref(spec.train, root, memory_budget, outputs)
    validation = (
        load_ref(spec.validation, root, memory_budget, outputs) if spec.validation else None
    )
    test = load_ref(spec.test, root, memory_budget, outputs) if spec.test else None
    n_classes: int | None = None
    if isinstance(train.y, np.ndarray) and train.y.dtype.kind == "i":
        builtin = spec.train.dataset
        if builtin is not None and builtin.startswith(BUILTIN_PREFIX):
            n_classes = BUILTIN_DATASETS[builtin.removeprefix(BUILTIN_PREFIX)].n_classes
        else:
            n_classes = 1 + max(
                int(a.y.max())
                for a in (train, validation, test)
                if a is not None
                and isinstance(a.y, np.ndarray)
                and a.y.dtype.kind == "i"
                and len(a.y)
            )
    return JobData(train, validation, test, n_classes)


def balanced_class_weight(y: np.ndarray, n_classes: int) -> dict[int, float]:
    """``n_samples / (n_classes_present * count)`` per class, as scikit-learn's "balanced"."""
    counts = np.bincount(y.astype(np.int64), minlength=n_classes)
    present = int((counts > 0).sum())
    return {int(c): float(len(y) / (present * counts[c])) for c in range(n_classes) if counts[c]}
