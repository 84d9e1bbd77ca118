"""What fitq knows of a spec's data sets before loading them, and the checks that needs.

Built-in datasets are described by ``checks.datasets``, uploaded ones by the
metadata stored with them, inline arrays by reading them (bounded by
``FITQ_MAX_INLINE_VALUES``). No Keras is needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from checks.datasets import BUILTIN_DATASETS, BUILTIN_PREFIX, split_indices
from checks.labels import label_stats
from checks.problems import Loc, Problems
from core.settings import Settings
from models.spec import DataRef, JobSpec, RandomCropSpec

MAX_INLINE_DEPTH = 5

# Looks up an uploaded dataset's per-split metadata by id; None when there is none.
DatasetLookup = Callable[[str], dict[str, Any] | None]


@dataclass(frozen=True)
class DataInfo:
    """What fitq knows of a data set before loading it."""

    n_samples: int
    feature_shape: tuple[int, ...]
    # Labels as class indices, when they are 1-D integers 0..n-1 (whether they are
    # classes is the loss's to say: catalog.labels_are_classes); None otherwise.
    n_classes: int | None
    class_counts: tuple[int, ...] | None
    target_dim: int = 1  # numbers in one sample's target


@dataclass(frozen=True)
class SpecData:
    """The data sets of a spec that passed its checks."""

    train: DataInfo
    validation: DataInfo | None
    test: DataInfo | None


def uploaded_split(split: str) -> str:
    """The part of an uploaded dataset a ``split`` names (``all`` is its training arrays)."""
    return "train" if split == "all" else split


def data_info(
    ref: DataRef, loc: Loc, settings: Settings, problems: Problems, lookup: DatasetLookup
) -> DataInfo | None:
    """What ``ref`` holds, or None after adding why it cannot be used to ``problems``."""
    if ref.dataset is not None:
        info = _dataset_info(ref, loc, problems, lookup)
    else:
        info = _inline_info(ref, loc, settings, problems)
    if info and ref.take is not None:
        if ref.take > info.n_samples:
            problems.add(
                loc + ("take",),
                f"received take={ref.take}, but the data has only {info.n_samples} samples",
            )
            return None
        return DataInfo(ref.take, info.feature_shape, info.n_classes, None, info.target_dim)
    return info


def _dataset_info(
    ref: DataRef, loc: Loc, problems: Problems, lookup: DatasetLookup
) -> DataInfo | None:
    name = ref.dataset or ""
    uploaded = None if name.startswith(BUILTIN_PREFIX) else lookup(name)
    if uploaded is not None:
        return _uploaded_info(uploaded, ref, loc, problems)
    if not name.startswith(BUILTIN_PREFIX) or name[len(BUILTIN_PREFIX) :] not in BUILTIN_DATASETS:
        known = ", ".join(BUILTIN_PREFIX + n for n in BUILTIN_DATASETS)
        problems.add(
            loc + ("dataset",),
            f"unknown dataset {name!r}, expected one of {known} or the id of an uploaded dataset",
        )
        return None
    ds = BUILTIN_DATASETS[name[len(BUILTIN_PREFIX) :]]
    n = len(split_indices(ds.n_samples, ref.split))
    return DataInfo(
        n, ds.feature_shape, ds.n_classes, ds.class_counts if ref.split == "all" else None
    )


def _uploaded_info(
    uploaded: dict[str, Any], ref: DataRef, loc: Loc, problems: Problems
) -> DataInfo | None:
    part = uploaded.get(uploaded_split(ref.split))
    if part is None:
        problems.add(
            loc + ("split",),
            f"dataset {ref.dataset} has no {ref.split} arrays; it has {sorted(uploaded)}",
        )
        return None
    counts = part.get("class_counts")
    return DataInfo(
        int(part["n_samples"]),
        tuple(part["x_shape"]) or (1,),
        part.get("n_classes"),
        tuple(counts) if counts else None,
        math.prod(part.get("y_shape") or [1]),
    )


def _count_values(node: Any, budget: int, depth: int = 0) -> int:
    """Counts the leaves of a nested list, stopping early past ``budget``."""
    if depth > MAX_INLINE_DEPTH:
        raise ValueError(f"nested deeper than {MAX_INLINE_DEPTH} levels")
    if not isinstance(node, list):
        return 1
    total = 0
    for item in node:
        total += _count_values(item, budget - total, depth + 1)
        if total > budget:
            break
    return total


def _as_array(values: list[Any], loc: Loc, budget: int, problems: Problems) -> np.ndarray | None:
    # Counted before numpy reads them: the cap is what bounds the work.
    try:
        count = _count_values(values, budget)
    except ValueError as exc:
        problems.add(loc, str(exc))
        return None
    if count > budget:
        problems.add(
            loc,
            f"inline data holds more than {budget} numbers (FITQ_MAX_INLINE_VALUES); "
            "upload it as a dataset instead",
            "too_large",
        )
        return None
    try:
        array = np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        problems.add(
            loc,
            "expected a rectangular nested list of numbers (every sample the same "
            "shape, no strings or nulls)",
        )
        return None
    if array.ndim == 0 or array.shape[0] == 0:
        problems.add(loc, "expected at least one sample")
        return None
    if not np.isfinite(array).all():
        problems.add(loc, "expected finite numbers (no NaN or infinity)")
        return None
    return array


def _inline_info(ref: DataRef, loc: Loc, settings: Settings, problems: Problems) -> DataInfo | None:
    assert ref.x is not None and ref.y is not None
    x = _as_array(ref.x, loc + ("x",), settings.max_inline_values, problems)
    y = _as_array(ref.y, loc + ("y",), settings.max_inline_values, problems)
    if x is None or y is None:
        return None
    if x.shape[0] != y.shape[0]:
        problems.add(
            loc + ("y",),
            f"received {y.shape[0]} labels for {x.shape[0]} samples in x, "
            "expected one label per sample",
        )
        return None
    feature_shape = tuple(int(d) for d in x.shape[1:]) or (1,)
    # Labels are class ids only when they are small non-negative integers; their
    # description never grows with a label's value (see checks.labels).
    labels = label_stats(y, settings.max_label_classes)
    return DataInfo(
        len(y), feature_shape, labels.n_classes, labels.class_counts, math.prod(y.shape[1:])
    )


def augmented(spec: JobSpec, train: DataInfo | None, problems: Problems) -> DataInfo | None:
    """The training data as the model sees it after augmentation (RandomCrop resizes)."""
    if train is None or not spec.data.augmentation:
        return train
    shape = train.feature_shape
    for i, aug in enumerate(spec.data.augmentation):
        loc: Loc = ("data", "augmentation", i)
        if aug.layer != "GaussianNoise" and len(shape) != 3:
            problems.add(
                loc,
                f"{aug.layer} needs image samples of shape (height, width, "
                f"channels); the training samples have shape {list(shape)}",
            )
            return None
        if isinstance(aug, RandomCropSpec):
            if aug.height > shape[0] or aug.width > shape[1]:
                problems.add(
                    loc,
                    f"received a {aug.height}x{aug.width} crop of "
                    f"{shape[0]}x{shape[1]} images; expected at most the image size",
                )
                return None
            shape = (aug.height, aug.width, shape[2])
    return replace(train, feature_shape=shape)


def read_data(
    spec: JobSpec, settings: Settings, problems: Problems, lookup: DatasetLookup
) -> tuple[DataInfo | None, DataInfo | None, DataInfo | None]:
    """The training, validation and test data of ``spec``; their samples' shapes agree."""
    data = spec.data
    train = data_info(data.train, ("data", "train"), settings, problems, lookup)
    others = []
    for name, ref in (("validation", data.validation), ("test", data.test)):
        loc: Loc = ("data", name)
        info = data_info(ref, loc, settings, problems, lookup) if ref else None
        if info and train and info.feature_shape != train.feature_shape:
            problems.add(
                loc,
                f"samples have shape {list(info.feature_shape)}, expected the "
                f"training data's shape {list(train.feature_shape)}",
            )
        others.append(info)
    return train, others[0], others[1]
