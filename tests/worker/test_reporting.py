"""The reporting callback on a tiny real model: epochs, checkpoints, progress, cancel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

keras = pytest.importorskip("keras")
np = pytest.importorskip("numpy")

from checks.monitor import Direction  # noqa: E402
from worker.training.reporting import JobCancelled, ReportingCallback  # noqa: E402

LOSS_ONLY: dict[str, Direction] = {"loss": "min"}  # metric_directions() of a model with no metrics


class ListSink:
    def __init__(self, cancel_after_progress: int | None = None) -> None:
        self.progress_calls: list[tuple[int, int | None, int | None]] = []
        self.epochs: list[tuple[int, dict[str, Any], float | None]] = []
        self.checkpoints: list[tuple[int, str, bool, int]] = []
        self.cancel_after = cancel_after_progress
        self.backups: list[Any] = []
        # Each epoch's callback state, as the database keeps it for a resume.
        self.states: dict[int, dict[str, Any]] = {}

    def progress(self, epoch: int, step: int | None, steps: int | None) -> bool:
        self.progress_calls.append((epoch, step, steps))
        return self.cancel_after is not None and len(self.progress_calls) > self.cancel_after

    def record_epoch(
        self,
        epoch: int,
        metrics: dict[str, float | None],
        lr: float | None,
        duration_s: float,
        best: dict[str, Any] | None,
        callback_state: dict[str, Any] | None = None,
    ) -> bool:
        self.epochs.append((epoch, metrics, lr))
        self.states[epoch] = callback_state or {}
        return False

    def flush(self) -> None:
        pass

    def record_class_weight(self, weights: dict[int, float]) -> None:
        self.class_weight = weights

    def save_backup(self, write: Any) -> None:
        self.backups.append(write())

    def record_checkpoint(
        self,
        epoch: int,
        path: str,
        monitor: str | None,
        value: float | None,
        is_best: bool,
        size_bytes: int,
    ) -> None:
        self.checkpoints.append((epoch, path, is_best, size_bytes))


def tiny() -> tuple[Any, Any, Any]:
    keras.utils.set_random_seed(1)
    x = np.random.rand(64, 4).astype("float32")
    y = (x.sum(axis=1) > 2).astype("int64")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model, x, y


def test_one_row_per_epoch_and_only_written_checkpoints(tmp_path: Path) -> None:
    model, x, y = tiny()
    ckpt = keras.callbacks.ModelCheckpoint(
        str(tmp_path / "ckpt" / "e{epoch:02d}.keras"), monitor="val_loss", save_best_only=True
    )
    sink = ListSink()
    reporter = ReportingCallback(
        sink, tmp_path, [ckpt], ("val_loss", "auto"), LOSS_ONLY, interval=60
    )
    history = model.fit(
        x, y, epochs=4, batch_size=16, validation_split=0.25, verbose=0, callbacks=[ckpt, reporter]
    )
    assert [e for e, _, _ in sink.epochs] == [1, 2, 3, 4]
    assert [m["val_loss"] for _, m, _ in sink.epochs] == pytest.approx(history.history["val_loss"])
    assert all(lr == pytest.approx(0.01) for _, _, lr in sink.epochs)
    written = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert sorted(Path(p).name for _, p, _, _ in sink.checkpoints) == written
    assert all(best for _, _, best, _ in sink.checkpoints)  # save_best_only writes only bests
    # Progress writes are rate-limited across epochs too: one in a 60 s interval.
    assert sink.progress_calls == [(1, 0, 3)]


def test_progress_is_throttled_by_the_clock_and_cancel_raises(tmp_path: Path) -> None:
    model, x, y = tiny()
    ticks = iter(range(10_000))
    sink = ListSink(cancel_after_progress=3)
    reporter = ReportingCallback(
        sink,
        tmp_path,
        [],
        ("loss", "auto"),
        LOSS_ONLY,
        interval=2.0,
        clock=lambda: float(next(ticks)),
    )
    with pytest.raises(JobCancelled):
        model.fit(x, y, epochs=5, batch_size=4, verbose=0, callbacks=[reporter])
    steps = [s for _, s, _ in sink.progress_calls]
    assert steps[0] == 0 and steps[1:] == [2, 4, 6][: len(steps) - 1]
    assert sink.epochs == []  # cancelled inside the first epoch: no row for it
