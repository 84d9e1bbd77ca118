"""Reading rows from disk: exactly the requested rows; a seeded, reproducible shuffle by
blocks and windows that yields every row once per pass; a bounded buffer; a resumed fit
that sees the batches an uninterrupted one sees."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

np = pytest.importorskip("numpy")
keras = pytest.importorskip("keras")

from models.spec import JobSpec  # noqa: E402
from tests.factories import digits_spec  # noqa: E402
from worker.training.inputs import Arrays, DiskArrays  # noqa: E402
from worker.training.streaming import BlockOrder, NpyRows, RowStream  # noqa: E402


def saved(tmp_path: Path, n: int = 100, features: int = 4) -> NpyRows:
    """Rows whose first column is their row number."""
    x = np.random.default_rng(0).random((n, features), dtype=np.float32)
    x[:, 0] = np.arange(n)
    np.save(tmp_path / "x.npy", x)
    return NpyRows(tmp_path / "x.npy")


def labels(ds: Any) -> list[np.ndarray]:
    return [np.asarray(y) for _, y in ds]


def test_rows_returns_exactly_the_requested_rows(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((50, 3, 2), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    rows = NpyRows(tmp_path / "x.npy")
    assert len(rows) == 50 and rows.nbytes == x.nbytes
    idx = np.array([7, 3, 3, 49, 0, 8, 9])
    assert np.array_equal(rows.rows(idx), x[idx])
    assert rows.rows(np.array([], dtype=np.int64)).shape == (0, 3, 2)
    firsts, counts = np.array([40, 2]), np.array([10, 3])
    assert np.array_equal(rows.runs(firsts, counts), x[[*range(40, 50), 2, 3, 4]])


def test_block_order_is_seeded_and_yields_every_row_once_per_pass() -> None:
    order = BlockOrder(start=5, stop=103, block_rows=7, window_blocks=3, shuffle=True, seed=1)
    again = BlockOrder(start=5, stop=103, block_rows=7, window_blocks=3, shuffle=True, seed=1)
    other = BlockOrder(start=5, stop=103, block_rows=7, window_blocks=3, shuffle=True, seed=2)
    passes = [order.epoch(p) for p in range(3)]
    for rows in passes:
        assert sorted(rows.tolist()) == list(range(5, 103))
    assert all(np.array_equal(a, again.epoch(p)) for p, a in enumerate(passes))
    assert not np.array_equal(passes[0], passes[1])  # a new order every pass
    assert not np.array_equal(passes[0], other.epoch(0))
    # Each window holds whole blocks: rows of one block stay in one window.
    window = order.window(0, 0)
    assert len(window) == 21 and len({(r - 5) // 7 for r in window.tolist()}) == 3
    ordered = BlockOrder(start=5, stop=103, block_rows=7, window_blocks=3, shuffle=False, seed=1)
    assert ordered.epoch(4).tolist() == list(range(5, 103))


def test_stream_yields_the_order_in_batches_with_inputs_paired(tmp_path: Path) -> None:
    rows = saved(tmp_path)
    y = np.arange(100) * 10
    stream = RowStream(
        rows, y, batch_size=8, start=3, stop=90, shuffle=True, seed=4, block_bytes=5 * 16
    )
    assert stream.order.block_rows == 5 and stream.n_batches == 11
    batches = list(stream.dataset(repeat=True).take(2 * stream.n_batches))
    for p in range(2):
        epoch = batches[p * 11 : (p + 1) * 11]
        assert [len(b[1]) for b in epoch] == [8] * 10 + [7]  # a pass ends a batch
        got = np.concatenate([np.asarray(b[1]) for b in epoch])
        assert np.array_equal(got, 10 * stream.order.epoch(p))
        xs = np.concatenate([np.asarray(b[0]) for b in epoch])
        assert np.array_equal(10 * xs[:, 0], got)  # inputs stay paired with labels
    one_pass = labels(stream.dataset())
    assert np.array_equal(np.concatenate(one_pass), 10 * stream.order.epoch(0))
    assert not np.array_equal(one_pass[0], labels(
        RowStream(rows, y, batch_size=8, start=3, stop=90, shuffle=True, seed=5,
                  block_bytes=5 * 16).dataset()
    )[0])  # fmt: skip


def test_a_stream_started_later_yields_the_rest_of_the_same_stream(tmp_path: Path) -> None:
    rows = saved(tmp_path, n=98)  # the last block is not full: windows differ in size

    def stream(workers: int) -> RowStream:
        return RowStream(
            rows, np.arange(98), batch_size=6, shuffle=True, seed=9, workers=workers,
            buffer_bytes=6 * 4 * 16 * 3, block_bytes=4 * 16,
        )  # fmt: skip

    whole = labels(stream(1).dataset(repeat=True).take(60))
    # The order does not depend on how many workers augment.
    assert np.array_equal(np.concatenate(whole), np.concatenate(labels(
        stream(3).dataset(repeat=True).take(60))))  # fmt: skip
    starts = [stream(1).order.window_starts(p) for p in range(3)]
    assert any(np.any(s[1:-1] % 16) for s in starts)  # a short window before the last
    # Within a window, at a pass's start, within windows of later passes.
    for first in (5, 11, 17, 25, 40):
        later = labels(stream(2).dataset(first_batch=first, repeat=True).take(60 - first))
        assert all(np.array_equal(a, b) for a, b in zip(whole[first:], later, strict=True))


def test_the_buffer_never_holds_more_than_its_configured_size(tmp_path: Path) -> None:
    rows = saved(tmp_path, n=1000)  # 16 bytes a row
    read: list[int] = []
    runs = rows.runs

    def counted(firsts: np.ndarray, counts: np.ndarray) -> np.ndarray:
        out = runs(firsts, counts)
        read.append(out.nbytes)
        return out

    rows.runs = counted  # type: ignore[method-assign]
    stream = RowStream(
        rows, np.arange(1000), batch_size=32, shuffle=True, workers=3,
        buffer_bytes=4096, block_bytes=128,
    )  # fmt: skip
    assert len(np.concatenate(labels(stream.dataset()))) == 1000
    # Four windows in flight at most: one read, its shuffled copy, and one of each
    # being batched.
    assert sum(read) == 1000 * 16 and max(read) == stream.window_rows * 16 == 4096 // 4


def model_and_data(rows: NpyRows, y: np.ndarray, seed: int, epochs: int, **fit: Any) -> Any:
    spec = JobSpec.model_validate(
        digits_spec(**{"seed": seed, "fit.batch_size": 16, "fit.epochs": epochs})
    )
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    data = DiskArrays(rows, y, len(rows), buffer_bytes=1024)
    return model, data, spec


def test_training_from_disk_is_reproducible_and_resumes_exactly(tmp_path: Path) -> None:
    rows = saved(tmp_path)
    y = np.arange(100) % 3

    def run(seed: int, stops: tuple[int, ...]) -> list[float]:
        model, data, spec = model_and_data(rows, y, seed, stops[-1])
        losses: list[float] = []
        at = 0
        for stop in stops:  # fit() called again from where it stopped: a resume
            inputs = data.fit_inputs(spec, None, initial_epoch=at)
            history = model.fit(**inputs, epochs=stop, initial_epoch=at, verbose=0)
            losses += history.history["loss"]
            at = stop
        return losses

    first = run(3, (4,))
    assert run(3, (4,)) == first
    assert run(3, (1, 4)) == first  # exactly, epoch by epoch
    assert run(4, (4,)) != first


def test_unshuffled_training_from_disk_trains_as_the_arrays_in_memory(tmp_path: Path) -> None:
    rows = saved(tmp_path)
    y = np.arange(100) % 3
    x = np.load(tmp_path / "x.npy")

    def run(data: Any) -> list[float]:
        model, _, spec = model_and_data(rows, y, 5, 3)
        spec = spec.model_copy(update={"fit": spec.fit.model_copy(update={"shuffle": False})})
        history = model.fit(**data.fit_inputs(spec, None), epochs=3, verbose=0)
        return list(history.history["loss"])

    assert run(DiskArrays(rows, y, len(rows), buffer_bytes=1024)) == run(Arrays(x, y))


def test_augmented_training_from_disk_crops_its_held_out_rows(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((40, 8, 8, 1), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    augmentation = [
        {"layer": "RandomFlip", "mode": "horizontal"},
        {"layer": "RandomCrop", "height": 6, "width": 6},
    ]
    spec = JobSpec.model_validate(
        digits_spec(
            **{
                "data.augmentation": augmentation,
                "data.validation": None,
                "fit.validation_split": 0.25,
            }
        )
    )
    data = DiskArrays(NpyRows(tmp_path / "x.npy"), np.arange(40) % 3, 40, buffer_bytes=4096)
    inputs = data.fit_inputs(spec, None, initial_epoch=1)
    assert inputs["steps_per_epoch"] == 1  # 30 training rows in batches of 32
    train, held_out = next(iter(inputs["x"])), list(inputs["validation_data"])
    assert train[0].shape == (30, 6, 6, 1)
    assert [b[0].shape for b in held_out] == [(10, 6, 6, 1)]
    assert np.array_equal(held_out[0][1], np.arange(30, 40) % 3)  # the last rows, in order
    assert np.allclose(held_out[0][0], x[30:, 1:7, 1:7])  # center-cropped, not augmented
