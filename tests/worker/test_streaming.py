"""Reading rows from disk: exactly the requested rows, in order; seeded shuffles."""

from __future__ import annotations

from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
pytest.importorskip("keras")

from worker.training.streaming import NpyRows, RowsDataset  # noqa: E402


def test_rows_returns_exactly_the_requested_rows(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((50, 3, 2), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    rows = NpyRows(tmp_path / "x.npy")
    assert len(rows) == 50 and rows.nbytes == x.nbytes
    idx = np.array([7, 3, 3, 49, 0, 8, 9])
    assert np.array_equal(rows.rows(idx), x[idx])


def test_rows_dataset_batches_in_order_or_seeded_shuffled(tmp_path: Path) -> None:
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    y = np.arange(20)
    np.save(tmp_path / "x.npy", x)
    rows = NpyRows(tmp_path / "x.npy")
    ordered = RowsDataset(rows, y, start=2, stop=18, batch_size=5, shuffle=False, seed=1)
    assert len(ordered) == 4
    assert [list(ordered[i][1]) for i in range(4)] == [
        list(range(2, 7)),
        list(range(7, 12)),
        list(range(12, 17)),
        [17],
    ]
    a = RowsDataset(rows, y, start=0, stop=20, batch_size=20, shuffle=True, seed=1)
    b = RowsDataset(rows, y, start=0, stop=20, batch_size=20, shuffle=True, seed=1)
    first = a[0][1]
    assert np.array_equal(first, b[0][1]) and sorted(first) == list(range(20))
    assert np.array_equal(a[0][0][:, 0], 2 * first)  # inputs stay paired with labels
    a.on_epoch_end()
    assert not np.array_equal(a[0][1], first)  # a new permutation every epoch
