"""Backups on a tiny real model: a resumed fit equals an uninterrupted one; a corrupt
backup falls back to the previous good one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

keras = pytest.importorskip("keras")
np = pytest.importorskip("numpy")

from models.file_names import BACKUP_DIR  # noqa: E402
from worker.training.resume import (  # noqa: E402
    StateRestorer,
    callback_state,
    load_backup,
    restore,
    snapshot,
    write_backup,
)


def model_and_data() -> tuple[Any, Any, Any]:
    keras.utils.set_random_seed(3)
    x = np.random.rand(96, 6).astype("float32")
    y = (x[:, 0] > 0.5).astype("int64")
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    return model, x, y


def test_resumed_fit_equals_uninterrupted_fit(tmp_path: Path) -> None:
    model, x, y = model_and_data()
    es = keras.callbacks.EarlyStopping(monitor="loss", patience=50, restore_best_weights=True)
    model.fit(x, y, epochs=6, batch_size=16, shuffle=False, verbose=0, callbacks=[es])
    straight, straight_es = model.get_weights(), (es.best, es.best_epoch, es.wait)

    model, x, y = model_and_data()
    es = keras.callbacks.EarlyStopping(monitor="loss", patience=50, restore_best_weights=True)
    model.fit(x, y, epochs=3, batch_size=16, shuffle=False, verbose=0, callbacks=[es])
    state = callback_state([es])
    write_backup(tmp_path, snapshot(model, 3, [es]))

    fresh, x, y = model_and_data()  # a new process would build the model again
    snap = load_backup(tmp_path, fresh, max_epoch=3)
    assert snap is not None and snap.epoch == 3
    restore(fresh, snap)
    es2 = keras.callbacks.EarlyStopping(monitor="loss", patience=50, restore_best_weights=True)
    fresh.fit(
        x,
        y,
        epochs=6,
        initial_epoch=3,
        batch_size=16,
        shuffle=False,
        verbose=0,
        callbacks=[es2, StateRestorer([es2], state, snap)],
    )
    for a, b in zip(fresh.get_weights(), straight, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert (es2.best, es2.best_epoch, es2.wait) == pytest.approx(straight_es)


def test_a_corrupt_backup_falls_back_to_the_previous_one(tmp_path: Path) -> None:
    model, x, y = model_and_data()
    model.fit(x, y, epochs=1, verbose=0)
    for epoch in (1, 2, 3):
        write_backup(tmp_path, snapshot(model, epoch, []))
    folder = tmp_path / BACKUP_DIR
    newest = folder / "epoch-000003.bin"
    newest.write_bytes(newest.read_bytes()[:100])  # half-written
    snap = load_backup(tmp_path, model, max_epoch=3)
    assert snap is not None and snap.epoch == 2
    assert load_backup(tmp_path, model, max_epoch=1).epoch == 1  # never newer than recorded
    assert sorted(p.name for p in folder.iterdir()) == [
        "epoch-000001.bin",
        "epoch-000002.bin",
        "epoch-000003.bin",
    ]
    write_backup(tmp_path, snapshot(model, 4, []))
    assert not (folder / "epoch-000001.bin").exists()  # only the last three are kept


def test_a_snapshot_keeps_its_epoch_when_training_goes_on_before_it_is_written(
    tmp_path: Path,
) -> None:
    # The writer thread writes a snapshot while the next epoch already trains.
    model, x, y = model_and_data()
    model.fit(x, y, epochs=1, verbose=0)
    at_snapshot = [np.array(v) for v in model.variables]
    optimizer_at_snapshot = [np.array(v) for v in model.optimizer.variables]
    snap = snapshot(model, 1, [])
    model.fit(x, y, epochs=2, verbose=0)
    assert not np.array_equal(np.array(model.variables[0]), at_snapshot[0])
    write_backup(tmp_path, snap)
    loaded = load_backup(tmp_path, model, max_epoch=1)
    assert loaded is not None
    for i, expected in enumerate(at_snapshot):
        np.testing.assert_array_equal(loaded.arrays[f"m{i}"], expected)
        assert loaded.arrays[f"m{i}"].dtype == expected.dtype
        assert loaded.arrays[f"m{i}"].shape == expected.shape
    for i, expected in enumerate(optimizer_at_snapshot):
        np.testing.assert_array_equal(loaded.arrays[f"o{i}"], expected)
        assert loaded.arrays[f"o{i}"].shape == expected.shape  # 0-d counters stay 0-d


def test_a_flipped_byte_is_caught_and_an_older_npz_backup_still_loads(tmp_path: Path) -> None:
    model, x, y = model_and_data()
    model.fit(x, y, epochs=1, verbose=0)
    folder = tmp_path / BACKUP_DIR
    folder.mkdir()
    # A backup as an earlier fitq wrote it (np.savez), then a newer one that rots.
    old = snapshot(model, 1, [])
    np.savez(folder / "epoch-000001.npz", **{k: np.asarray(v) for k, v in old.arrays.items()})
    path = write_backup(tmp_path, snapshot(model, 2, []))
    blob = bytearray(path.read_bytes())
    blob[-3] ^= 0xFF  # inside the last array's data: the header still parses
    path.write_bytes(bytes(blob))
    snap = load_backup(tmp_path, model, max_epoch=2)
    assert snap is not None and snap.epoch == 1
    restore(model, snap)
    for i, v in enumerate(model.variables):
        np.testing.assert_array_equal(np.array(v), np.asarray(old.arrays[f"m{i}"]))


def test_a_backup_that_does_not_fit_the_model_or_is_damaged_is_skipped(tmp_path: Path) -> None:
    model, x, y = model_and_data()
    model.fit(x, y, epochs=1, verbose=0)
    good = write_backup(tmp_path, snapshot(model, 1, []))
    blob = good.read_bytes()
    folder = good.parent
    # A byte of the header (inside a dtype string): the header's own CRC-32 catches it.
    at = blob.index(b'"<f4"') + 1
    (folder / "epoch-000002.bin").write_bytes(blob[:at] + b">" + blob[at + 1 :])
    # Data cut short after the header: the sizes no longer add up.
    (folder / "epoch-000003.bin").write_bytes(blob[:-8])
    # Another model's backup: a layer of another width, then another dtype.
    other = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(9), keras.layers.Dense(2, activation="softmax")]
    )
    other.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    other.fit(x, y, epochs=1, verbose=0)
    (folder / "epoch-000004.bin").write_bytes(
        write_backup(tmp_path / "o", snapshot(other, 4, [])).read_bytes()
    )
    wrong_dtype = snapshot(model, 5, [])
    wrong_dtype.arrays["m0"] = np.asarray(wrong_dtype.arrays["m0"]).astype("float64")
    write_backup(tmp_path, wrong_dtype)  # keeps the last three: 3, 4, 5
    (folder / "epoch-000001.bin").write_bytes(blob)
    (folder / "epoch-000002.bin").write_bytes(blob[:at] + b">" + blob[at + 1 :])
    snap = load_backup(tmp_path, model, max_epoch=5)
    assert snap is not None and snap.epoch == 1


def test_bfloat16_and_empty_arrays_round_trip(tmp_path: Path) -> None:
    import ml_dtypes

    from worker.training.resume import Snapshot, read_backup

    arrays = {
        "m0": np.arange(6, dtype=ml_dtypes.bfloat16).reshape(2, 3),
        "m1": np.zeros((0, 3), "float32"),
        "m2": np.array(7, "int64"),
        "m3": np.array([True, False]),
    }
    loaded = read_backup(write_backup(tmp_path, Snapshot(1, arrays)))
    for name, expected in arrays.items():
        assert loaded[name].dtype == expected.dtype and loaded[name].shape == expected.shape
        np.testing.assert_array_equal(loaded[name], expected)
