"""Trains from disk, a batch at a time, when a dataset is larger than the memory budget.

An uploaded dataset's arrays are ``.npy`` files. ``NpyRows`` reads the rows a batch
needs with ``os.pread``, so nothing but the batch stays resident.
``RowsDataset`` is a ``keras.utils.PyDataset`` over a range of rows: ``shuffle``
draws a new seeded permutation of the rows every epoch (fit() itself is told not to
reorder the batches: the dataset owns ordering), and ``workers`` and
``use_multiprocessing`` set how many batches load in parallel (with more than one
worker, Keras keeps a queue of batches ahead of training).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np


class NpyRows:
    """Random access to the rows of a ``.npy`` file without loading it.

    Rows are read with ``os.pread`` (one call per run of consecutive rows) into a
    fresh array: only the batch is ever resident in this process (a memory map would
    leave the pages it faulted in, and their read-ahead, counted against it).
    """

    def __init__(self, path: Path) -> None:
        header = np.load(path, mmap_mode="r", allow_pickle=False)
        self.path = path
        self.shape = tuple(header.shape)
        self.dtype = header.dtype
        self.offset = int(header.offset)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self.nbytes = int(header.nbytes)
        del header

    def __len__(self) -> int:
        return int(self.shape[0])

    def rows(self, indices: np.ndarray) -> np.ndarray:
        order = np.argsort(indices, kind="stable")
        ascending = indices[order]
        raw = np.empty((len(indices), self.row_bytes), dtype=np.uint8)
        # One read per run of consecutive rows.
        starts = [0, *(np.flatnonzero(np.diff(ascending) != 1) + 1).tolist(), len(ascending)]
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for a, b in zip(starts[:-1], starts[1:], strict=False):
                first, count = int(ascending[a]), b - a
                data = os.pread(fd, count * self.row_bytes, self.offset + first * self.row_bytes)
                raw[a:b] = np.frombuffer(data, dtype=np.uint8).reshape(count, self.row_bytes)
        finally:
            os.close(fd)
        out = np.empty_like(raw)
        out[order] = raw
        batch: np.ndarray = out.view(self.dtype).reshape(len(indices), *self.shape[1:])
        return batch


# Called as ``augment(x, n)`` on a batch's inputs, ``n`` being the batch's number.
Augment = Callable[[np.ndarray, int], np.ndarray]


class RowsDataset(keras.utils.PyDataset):  # type: ignore[misc]
    """Batches of rows ``[start, stop)`` of ``x`` and ``y``, read from disk.

    Args:
        x: The inputs, on disk.
        y: The labels, in memory.
        batch_size: Rows per batch.
        start: First row. Defaults to 0.
        stop: One past the last row. Defaults to all of ``x``.
        shuffle: A new seeded permutation of the rows every epoch. Defaults to False.
        seed: Seeds the permutations. Defaults to 0.
        workers: Batches loaded in parallel. Defaults to 1.
        use_multiprocessing: Load in processes rather than threads. Defaults to False.
        augment: Called as ``augment(x, n)`` on each batch as it loads, ``n`` being the
            batch's number counted across epochs (it seeds the batch's augmentation).
            Defaults to none.
    """

    def __init__(
        self,
        x: NpyRows,
        y: np.ndarray,
        *,
        batch_size: int,
        start: int = 0,
        stop: int | None = None,
        shuffle: bool = False,
        seed: int = 0,
        workers: int = 1,
        use_multiprocessing: bool = False,
        augment: Augment | None = None,
    ) -> None:
        super().__init__(
            workers=workers,
            use_multiprocessing=use_multiprocessing,
            max_queue_size=max(2, 2 * workers),
        )
        self.x, self.y = x, y
        self.indices = np.arange(start, len(x) if stop is None else stop)
        self.batch_size = batch_size
        self.augment = augment
        self.shuffle = shuffle
        self.rng = np.random.default_rng(seed)
        self.epoch = 0
        if shuffle:
            self.rng.shuffle(self.indices)

    def __len__(self) -> int:
        return math.ceil(len(self.indices) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self.indices[index * self.batch_size : (index + 1) * self.batch_size]
        x = self.x.rows(rows)
        if self.augment is not None:
            x = np.asarray(self.augment(x, self.epoch * len(self) + index))
        return x, self.y[rows]

    def on_epoch_end(self) -> None:
        self.epoch += 1
        if self.shuffle:
            self.rng.shuffle(self.indices)
