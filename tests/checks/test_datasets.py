"""The built-in dataset table matches what scikit-learn ships."""

from __future__ import annotations

import numpy as np
import pytest

from checks.datasets import BUILTIN_DATASETS, split_indices

sklearn_datasets = pytest.importorskip("sklearn.datasets")


@pytest.mark.parametrize("name", sorted(BUILTIN_DATASETS))
def test_table_matches_scikit_learn(name: str) -> None:
    meta = BUILTIN_DATASETS[name]
    bunch = getattr(sklearn_datasets, f"load_{name}")()
    assert bunch.data.shape[0] == meta.n_samples
    assert int(np.prod(meta.feature_shape)) == bunch.data.shape[1]
    assert tuple(np.bincount(bunch.target)) == meta.class_counts
    assert len(meta.class_counts) == meta.n_classes


@pytest.mark.parametrize("n", [150, 1797])
def test_splits_partition_the_data(n: int) -> None:
    parts = [split_indices(n, s) for s in ("train", "validation", "test")]
    joined = np.sort(np.concatenate(parts))
    assert np.array_equal(joined, np.arange(n))
    assert len(parts[0]) == int(n * 0.7) and len(parts[1]) == int(n * 0.15)
    assert np.array_equal(split_indices(n, "train"), parts[0])  # fixed, not random per call
