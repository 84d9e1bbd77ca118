"""Backups on a tiny real model: a resumed fit equals an uninterrupted one; a corrupt
backup falls back to the previous good one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

keras = pytest.importorskip("keras")
np = pytest.importorskip("numpy")

from worker.training.resume import (  # noqa: E402
    BACKUP_DIR,
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
    newest = folder / "epoch-000003.npz"
    newest.write_bytes(newest.read_bytes()[:100])  # half-written
    snap = load_backup(tmp_path, model, max_epoch=3)
    assert snap is not None and snap.epoch == 2
    assert load_backup(tmp_path, model, max_epoch=1).epoch == 1  # never newer than recorded
    assert sorted(p.name for p in folder.iterdir()) == [
        "epoch-000001.npz",
        "epoch-000002.npz",
        "epoch-000003.npz",
    ]
    write_backup(tmp_path, snapshot(model, 4, []))
    assert not (folder / "epoch-000001.npz").exists()  # only the last three are kept
