"""Built-in datasets: what scikit-learn ships offline, described without loading it.

The API validates specs against this table (it never imports scikit-learn's loaders
or tensorflow); the worker loads the arrays. ``tests/checks/test_datasets.py`` checks
the table against the real data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Split = Literal["train", "validation", "test", "all"]
SPLITS: tuple[Split, ...] = ("train", "validation", "test", "all")
BUILTIN_PREFIX = "builtin:"
# Fixed fractions of each built-in dataset's fixed permutation.
TRAIN_FRACTION = 0.7
VALIDATION_FRACTION = 0.15
PERMUTATION_SEED = 0


@dataclass(frozen=True)
class BuiltinDataset:
    """A dataset shipped by scikit-learn.

    Attributes:
        name: Its name after ``builtin:``.
        n_samples: Number of samples in the whole set.
        feature_shape: Shape of one sample as the model sees it.
        n_classes: Number of classes (labels are 0 .. n_classes - 1).
        class_counts: Samples per class in the whole set.
        scaling: How fitq scales the features: ``divide16`` for digits' 0..16
            pixels, ``standardize`` for per-feature zero mean and unit variance.
    """

    name: str
    n_samples: int
    feature_shape: tuple[int, ...]
    n_classes: int
    class_counts: tuple[int, ...]
    scaling: Literal["divide16", "standardize"]
    description: str


BUILTIN_DATASETS: dict[str, BuiltinDataset] = {
    d.name: d
    for d in (
        BuiltinDataset(
            "digits",
            1797,
            (8, 8, 1),
            10,
            (178, 182, 177, 183, 181, 182, 181, 179, 174, 180),
            "divide16",
            "8x8 grayscale handwritten digits, 10 classes",
        ),
        BuiltinDataset(
            "iris", 150, (4,), 3, (50, 50, 50), "standardize", "iris flowers, 4 features, 3 classes"
        ),
        BuiltinDataset(
            "wine",
            178,
            (13,),
            3,
            (59, 71, 48),
            "standardize",
            "wine cultivars, 13 features, 3 classes",
        ),
        BuiltinDataset(
            "breast_cancer",
            569,
            (30,),
            2,
            (212, 357),
            "standardize",
            "breast cancer diagnosis, 30 features, 2 classes",
        ),
    )
}


def split_indices(n_samples: int, split: Split) -> np.ndarray:
    """Indices of one split of a built-in dataset: a fixed permutation, cut 70/15/15."""
    if split == "all":
        return np.arange(n_samples)
    order = np.random.default_rng(PERMUTATION_SEED).permutation(n_samples)
    n_train = int(n_samples * TRAIN_FRACTION)
    n_val = int(n_samples * VALIDATION_FRACTION)
    if split == "train":
        return np.sort(order[:n_train])
    if split == "validation":
        return np.sort(order[n_train : n_train + n_val])
    return np.sort(order[n_train + n_val :])


def split_size(n_samples: int, split: Split) -> int:
    return len(split_indices(n_samples, split))
