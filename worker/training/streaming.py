"""Trains from disk, a buffer at a time, when a dataset is larger than the memory budget.

An uploaded dataset's arrays are ``.npy`` files. ``NpyRows`` reads whole contiguous
blocks of rows with ``os.preadv``, so nothing but the blocks in flight stays resident.
``BlockOrder`` is the order a file-backed dataset yields its rows in, a pure function
of the seed and the pass over the data: with ``shuffle``, the blocks (``block_rows``
consecutive rows each) in a seeded random order, and each window of ``window_blocks``
consecutive blocks of that order shuffled as one buffer, as tf.data's and WebDataset's
shuffle buffers do; without, the rows in file order.
``RowStream`` turns that into a ``tf.data`` pipeline that reads each window in a
``numpy_function`` (one window ahead of the one being batched), cuts it into batches
with ``rebatch``, augments them (``workers`` in parallel, in order) and prefetches
batches while the model trains, so that loading runs beside the training steps
rather than between them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

BLOCK_BYTES = 1 << 20  # rows read with one call
MAX_STREAM_BYTES = 64 << 20  # all the windows in flight together, at most
STREAM_SHARE = 4  # ... and at most the memory budget over this
WINDOWS_IN_FLIGHT = 4


class NpyRows:
    """Random access to the rows of a ``.npy`` file without loading it.

    Rows are read with ``os.preadv`` (one call per run of consecutive rows) into a
    fresh array: only what was read is ever resident in this process (a memory map
    would leave the pages it faulted in, and their read-ahead, counted against it).
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

    def runs(self, firsts: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Rows ``firsts[i] .. firsts[i] + counts[i] - 1`` for each ``i``, one after another."""
        total = int(counts.sum())
        raw = np.empty((total, self.row_bytes), dtype=np.uint8)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            at = 0
            for first, count in zip(firsts.tolist(), counts.tolist(), strict=True):
                _read_into(fd, raw[at : at + count], self.offset + first * self.row_bytes)
                at += count
        finally:
            os.close(fd)
        out: np.ndarray = raw.view(self.dtype).reshape(total, *self.shape[1:])
        return out

    def rows(self, indices: np.ndarray) -> np.ndarray:
        """The rows at ``indices``, in that order (one read per run of consecutive rows)."""
        if len(indices) == 0:
            return np.empty((0, *self.shape[1:]), dtype=self.dtype)
        order = np.argsort(indices, kind="stable")
        ascending = indices[order]
        breaks = np.flatnonzero(np.diff(ascending) != 1) + 1
        starts = np.concatenate([[0], breaks])
        counts = np.diff(np.concatenate([starts, [len(ascending)]]))
        found = self.runs(ascending[starts], counts)
        out = np.empty_like(found)
        out[order] = found
        return out


def _read_into(fd: int, buffer: np.ndarray, offset: int) -> None:
    view = memoryview(buffer.data).cast("B")
    while len(view):
        got = os.preadv(fd, [view], offset)
        if got <= 0:
            raise OSError(f"unexpected end of file at byte {offset}")
        view, offset = view[got:], offset + got


@functools.cache
def _release_large_buffers() -> None:
    """Makes glibc's malloc give every buffer of a block or more back to the system when
    it is freed (``M_MMAP_THRESHOLD``). By default glibc raises that threshold each time
    such a buffer is freed, after which the windows come from its heaps, which keep
    what was freed: the process then held several times the buffer it streams through.
    Elsewhere than glibc, nothing is changed."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(ctypes.c_int(-3), ctypes.c_int(BLOCK_BYTES))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError, TypeError):
        pass


def stream_bytes(memory_budget: int) -> int:
    """What all the windows a file-backed dataset has in flight may hold together."""
    return max(1, min(MAX_STREAM_BYTES, memory_budget // STREAM_SHARE))


@dataclass(frozen=True)
class BlockOrder:
    """The order rows ``[start, stop)`` are yielded in on each pass over them.

    Pass ``p`` (0 for the first epoch) draws from ``np.random.default_rng([seed, p, 0])``
    a permutation of the blocks, and from ``np.random.default_rng([seed, p, 1, w])`` a
    permutation of window ``w``'s rows. Every row comes once per pass.
    """

    start: int
    stop: int
    block_rows: int
    window_blocks: int
    shuffle: bool
    seed: int

    @property
    def n_rows(self) -> int:
        return self.stop - self.start

    @property
    def n_blocks(self) -> int:
        return math.ceil(self.n_rows / self.block_rows)

    @property
    def n_windows(self) -> int:
        return math.ceil(self.n_blocks / self.window_blocks)

    def blocks(self, p: int) -> np.ndarray:
        """The blocks of pass ``p``, in order."""
        if not self.shuffle:
            return np.arange(self.n_blocks)
        return np.random.default_rng([self.seed, p, 0]).permutation(self.n_blocks)

    def window_runs(self, p: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """Window ``w`` of pass ``p``: its blocks' first rows and row counts, in file order."""
        blocks = np.sort(self.blocks(p)[w * self.window_blocks : (w + 1) * self.window_blocks])
        firsts = self.start + blocks * self.block_rows
        return firsts, np.minimum(firsts + self.block_rows, self.stop) - firsts

    def window_starts(self, p: int) -> np.ndarray:
        """Where each window of pass ``p`` starts in the pass, in rows, and the pass's end
        (the one block that is not full, the last of the file's, may fall in any window)."""
        blocks = self.blocks(p)
        firsts = self.start + blocks * self.block_rows
        sizes = np.minimum(firsts + self.block_rows, self.stop) - firsts
        per_window = np.add.reduceat(sizes, np.arange(0, self.n_blocks, self.window_blocks))
        starts: np.ndarray = np.concatenate([[0], np.cumsum(per_window)])
        return starts

    def within(self, p: int, w: int, n: int) -> np.ndarray | None:
        """The order of the ``n`` rows window ``w`` of pass ``p`` reads (None: as read)."""
        if not self.shuffle:
            return None
        return np.random.default_rng([self.seed, p, 1, w]).permutation(n)

    def window(self, p: int, w: int) -> np.ndarray:
        """The rows of window ``w`` of pass ``p``, in the order they are yielded."""
        firsts, counts = self.window_runs(p, w)
        rows = _rows_of_runs(firsts, counts)
        order = self.within(p, w, len(rows))
        return rows if order is None else rows[order]

    def epoch(self, p: int) -> np.ndarray:
        """Every row, in the order pass ``p`` yields them."""
        return np.concatenate([self.window(p, w) for w in range(self.n_windows)])


def _rows_of_runs(firsts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The rows ``firsts[i] .. firsts[i] + counts[i] - 1`` for each ``i``, one after another."""
    ends = np.cumsum(counts)
    rows: np.ndarray = np.arange(int(ends[-1])) + np.repeat(firsts - (ends - counts), counts)
    return rows


# Called as ``augment(x, n)`` on a batch's inputs in the pipeline, ``n`` being the
# batch's number (an int64 tensor) counted across passes: it seeds the augmentation.
Augment = Callable[[Any, Any], Any]


class RowStream:
    """Batches of rows ``[start, stop)`` of ``x`` and their labels ``y``, read from disk.

    Args:
        x: The inputs, on disk.
        y: The labels, in memory (all of the file's rows).
        batch_size: Rows per batch; a pass ends with a smaller batch when it does not divide.
        start: First row. Defaults to 0.
        stop: One past the last row. Defaults to all of ``x``.
        shuffle: Shuffle by blocks and windows (``BlockOrder``). Defaults to False.
        seed: Seeds the shuffle. Defaults to 0.
        buffer_bytes: All windows in flight together hold at most this (but one row
            each at least); a window is a quarter of it. Defaults to ``stream_bytes``
            of a 2 GiB budget.
        workers: Batches augmented in parallel. Defaults to 1.
        augment: Applied to each batch's inputs. Defaults to none.
        block_bytes: Bytes per block, at least one row. Defaults to 1 MiB.
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
        buffer_bytes: int = stream_bytes(2 << 30),
        workers: int = 1,
        augment: Augment | None = None,
        block_bytes: int = BLOCK_BYTES,
    ) -> None:
        _release_large_buffers()
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.workers = max(1, workers)
        self.augment = augment
        # A window is read, and copied as it is shuffled, while the one before it is
        # cut into batches and that one's copy waits in the map's output: four at most.
        window_bytes = buffer_bytes // WINDOWS_IN_FLIGHT
        block_rows = max(1, min(block_bytes, window_bytes) // max(1, x.row_bytes))
        self.order = BlockOrder(
            start=start,
            stop=len(x) if stop is None else stop,
            block_rows=block_rows,
            window_blocks=max(1, window_bytes // (block_rows * max(1, x.row_bytes))),
            shuffle=shuffle,
            seed=seed,
        )

    @property
    def n_batches(self) -> int:
        return math.ceil(self.order.n_rows / self.batch_size)

    @property
    def window_rows(self) -> int:
        """The most rows one window holds."""
        return self.order.block_rows * self.order.window_blocks

    def read_window(self, p: int, w: int, skip: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Window ``w`` of pass ``p``, inputs and labels, shuffled; less its first ``skip`` rows."""
        firsts, counts = self.order.window_runs(p, w)
        x = self.x.runs(firsts, counts)
        rows = _rows_of_runs(firsts, counts)
        order = self.order.within(p, w, len(rows))
        if order is not None:
            x, rows = x[order], rows[order]
        return x[skip:], self.y[rows[skip:]]

    def dataset(self, first_batch: int = 0, repeat: bool = False) -> tf.data.Dataset:
        """The batches from batch ``first_batch`` on (counted across passes): one pass,
        or with ``repeat`` pass after pass without end."""
        first_pass, offset = divmod(first_batch, self.n_batches)
        offset *= self.batch_size  # rows of the first pass already trained on
        starts = self.order.window_starts(first_pass)
        first_window = int(np.searchsorted(starts, offset, side="right")) - 1
        passes = tf.data.Dataset.range(first_pass, first_pass + 1)
        if repeat:
            passes = tf.data.Dataset.range(first_pass, np.iinfo(np.int64).max)

        def window(p: Any, w: Any) -> tuple[Any, Any]:
            def read(p: np.int64, w: np.int64) -> tuple[np.ndarray, np.ndarray]:
                skip = max(0, offset - int(starts[w])) if int(p) == first_pass else 0
                return self.read_window(int(p), int(w), skip)

            x, y = tf.numpy_function(read, [p, w], [self.x.dtype, self.y.dtype], stateful=False)
            x.set_shape((None, *self.x.shape[1:]))
            y.set_shape((None, *self.y.shape[1:]))
            return x, y

        def batches(p: Any) -> tf.data.Dataset:
            w0 = tf.where(p == first_pass, tf.constant(first_window, tf.int64), 0)
            windows = tf.data.Dataset.range(w0, self.order.n_windows)
            # One window is read at a time, ahead of the one being batched.
            read = windows.map(lambda w: window(p, w), num_parallel_calls=1, deterministic=True)
            return read.rebatch(self.batch_size)

        ds = passes.flat_map(batches)
        if not repeat:
            ds = ds.apply(tf.data.experimental.assert_cardinality(self.n_batches - first_batch))
        if self.augment is not None:
            augment = self.augment
            numbers = tf.data.Dataset.range(first_batch, np.iinfo(np.int64).max)
            numbered = tf.data.Dataset.zip(ds, numbers)
            ds = numbered.map(
                lambda b, n: (augment(b[0], n), b[1]),
                num_parallel_calls=self.workers,
                deterministic=True,
            )
        return ds.prefetch(2)
