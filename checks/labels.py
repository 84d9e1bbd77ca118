"""What an array of labels or values holds, in memory bounded by a chunk, never by a value.

A label's value says nothing about how much memory describing it may take: one label
of 20 000 000 must not become a histogram of 20 000 001 bins. Labels count as class
ids (with a class histogram) only when they are integers in ``0 .. max_classes - 1``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

CHUNK_VALUES = 1 << 20


@dataclass(frozen=True)
class LabelStats:
    """Class ids and the range of one split's labels.

    Attributes:
        n_classes: ``max + 1`` when every label is an integer in
            ``0 .. max_classes - 1``; None otherwise (real-valued, negative, too
            large, or not one label per sample).
        class_counts: Samples per class id ``0 .. n_classes - 1`` when
            ``n_classes`` is set; None otherwise.
        minimum: The smallest label; None when there are none.
        maximum: The largest label; None when there are none.
    """

    n_classes: int | None
    class_counts: tuple[int, ...] | None
    minimum: int | float | None
    maximum: int | float | None

    def as_info(self) -> dict[str, int | float | list[int] | None]:
        """The keys a dataset's split metadata holds."""
        return {
            "n_classes": self.n_classes,
            "class_counts": list(self.class_counts) if self.class_counts is not None else None,
            "y_min": self.minimum,
            "y_max": self.maximum,
        }


def _order(values: np.ndarray) -> Literal["C", "F"]:
    """The order the array's bytes lie in, so that flattening it copies nothing."""
    return "F" if values.flags.f_contiguous and not values.flags.c_contiguous else "C"


def _chunks(values: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """``(offset, chunk)`` over the flattened array, a bounded number of values at a time.

    A memory-mapped array is read a chunk at a time; no whole copy of it is made.
    """
    flat = values.reshape(-1, order=_order(values))
    for start in range(0, flat.shape[0], CHUNK_VALUES):
        yield start, np.asarray(flat[start : start + CHUNK_VALUES])


def _scalar(value: np.generic) -> int | float:
    return int(value) if value.dtype.kind in "biu" else float(value)


def label_stats(y: np.ndarray, max_classes: int) -> LabelStats:
    """Describes labels ``y``, which hold finite numbers (see ``first_non_finite``)."""
    if y.size == 0 or y.dtype.kind not in "biuf":
        return LabelStats(None, None, None, None)
    lows, highs, integral = [], [], True
    for _, chunk in _chunks(y):
        lows.append(chunk.min())
        highs.append(chunk.max())
        if y.dtype.kind == "f":
            integral = integral and bool(np.all(np.floor(chunk) == chunk))
    minimum, maximum = _scalar(min(lows)), _scalar(max(highs))
    if y.ndim != 1 or not integral or minimum < 0 or maximum >= max_classes:
        return LabelStats(None, None, minimum, maximum)
    n_classes = int(maximum) + 1
    counts = np.zeros(n_classes, dtype=np.int64)
    for _, chunk in _chunks(y):
        counts += np.bincount(chunk.astype(np.int64), minlength=n_classes)
    return LabelStats(n_classes, tuple(int(c) for c in counts), minimum, maximum)


def first_non_finite(values: np.ndarray) -> tuple[tuple[int, ...], float] | None:
    """The index and value of the first NaN or infinity found in ``values``, if any."""
    if values.dtype.kind != "f":
        return None
    for start, chunk in _chunks(values):
        bad = np.flatnonzero(~np.isfinite(chunk))
        if bad.size:
            index = np.unravel_index(start + int(bad[0]), values.shape, order=_order(values))
            return tuple(int(i) for i in index), float(chunk[bad[0]])
    return None
