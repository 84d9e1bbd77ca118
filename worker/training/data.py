"""Loads the data a job trains, validates and tests on, each part as the kind it is
(``worker.training.inputs``: in memory, on disk, or an image folder)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from checks.datasets import BUILTIN_DATASETS, BUILTIN_PREFIX, split_indices
from models.spec import DataRef, DataSpec
from worker.training.inputs import Arrays, Data, DiskArrays, ImageFolder
from worker.training.streaming import NpyRows


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


def load_uploaded(ref: DataRef, root: Path, memory_budget: int) -> Data:
    from checks.validation import uploaded_split
    from storage.uploads import SPLIT_ARRAYS

    folder = root / str(ref.dataset)
    if (folder / "images").is_dir():
        meta = json.loads((folder / "meta.json").read_text())
        height, width, _ = meta["x_shape"]
        return ImageFolder(
            folder / "images", height, width, meta["class_names"], meta["class_counts"]
        )
    xn, yn = SPLIT_ARRAYS[uploaded_split(ref.split)]
    stop = ref.take
    y = _labels(np.load(folder / f"{yn}.npy", allow_pickle=False)[:stop])
    rows = NpyRows(folder / f"{xn}.npy")
    stop = min(stop or len(rows), len(rows))
    if rows.row_bytes * stop + y.nbytes > memory_budget:
        return DiskArrays(rows, y, stop)
    x = np.load(folder / f"{xn}.npy", allow_pickle=False)[:stop]
    if x.ndim == 1:
        x = x.reshape(-1, 1)
    return Arrays(x, y)


def load_ref(ref: DataRef, root: Path | None = None, memory_budget: int = 2**62) -> Data:
    if ref.dataset is not None and not ref.dataset.startswith(BUILTIN_PREFIX):
        assert root is not None, "uploaded datasets need the datasets folder"
        return load_uploaded(ref, root, memory_budget)
    if ref.dataset is not None:
        name = ref.dataset.removeprefix(BUILTIN_PREFIX)
        whole = load_builtin(name)
        idx = split_indices(len(whole.x), ref.split)
        arrays = Arrays(whole.x[idx], whole.y[idx])
    else:
        x = np.asarray(ref.x, dtype=np.float32)
        if x.ndim == 1:
            x = x.reshape(-1, 1)
        y_raw = np.asarray(ref.y, dtype=np.float64)
        integral = y_raw.ndim == 1 and bool(np.all(y_raw == np.round(y_raw))) and y_raw.min() >= 0
        arrays = Arrays(x, y_raw.astype(np.int64) if integral else y_raw.astype(np.float32))
    if ref.take is not None:
        arrays = Arrays(arrays.x[: ref.take], arrays.y[: ref.take])
    return arrays


def load_job_data(spec: DataSpec, root: Path | None = None, memory_budget: int = 2**62) -> JobData:
    train = load_ref(spec.train, root, memory_budget)
    validation = load_ref(spec.validation, root, memory_budget) if spec.validation else None
    test = load_ref(spec.test, root, memory_budget) if spec.test else None
    n_classes: int | None = None
    if train.y.dtype.kind == "i":
        builtin = spec.train.dataset
        if builtin is not None and builtin.startswith(BUILTIN_PREFIX):
            n_classes = BUILTIN_DATASETS[builtin.removeprefix(BUILTIN_PREFIX)].n_classes
        else:
            n_classes = 1 + max(
                int(a.y.max())
                for a in (train, validation, test)
                if a is not None and a.y.dtype.kind == "i" and len(a.y)
            )
    return JobData(train, validation, test, n_classes)


def balanced_class_weight(y: np.ndarray, n_classes: int) -> dict[int, float]:
    """``n_samples / (n_classes_present * count)`` per class, as scikit-learn's "balanced"."""
    counts = np.bincount(y.astype(np.int64), minlength=n_classes)
    present = int((counts > 0).sum())
    return {int(c): float(len(y) / (present * counts[c])) for c in range(n_classes) if counts[c]}
