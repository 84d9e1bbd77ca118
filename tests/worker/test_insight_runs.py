"""Insight on histories recorded from real Keras runs on digits."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

from api.insight import RISE_VALIDATIONS, Epoch, analyse
from checks.monitor import best_of


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    order = np.random.RandomState(0).permutation(len(x))
    return (x / 16).astype("float32"), y, order


def fit(
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    units: list[int],
    train: int,
    batch_size: int,
    epochs: int,
    dropout: float = 0.0,
    l2: float = 0.0,
    callbacks: list[Any] | None = None,
) -> tuple[keras.Model, list[Epoch], tuple[np.ndarray, np.ndarray]]:
    x, y, order = data
    keras.utils.set_random_seed(7)
    layers: list[Any] = [keras.Input((64,))]
    for n in units:
        reg = keras.regularizers.L2(l2) if l2 else None
        layers.append(keras.layers.Dense(n, activation="relu", kernel_regularizer=reg))
        if dropout:
            layers.append(keras.layers.Dropout(dropout))
    model = keras.Sequential([*layers, keras.layers.Dense(10, activation="softmax")])
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    tr, va = order[:train], order[1300:1550]
    history = model.fit(
        x[tr],
        y[tr],
        batch_size=batch_size,
        epochs=epochs,
        validation_data=(x[va], y[va]),
        callbacks=callbacks or [],
        verbose=0,
    ).history
    rows = [
        Epoch(i + 1, {k: float(v[i]) for k, v in history.items()})
        for i in range(len(history["loss"]))
    ]
    return model, rows, (x[va], y[va])


NO_CALLBACKS: dict[str, Any] = {
    "compile": {"loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]},
    "callbacks": [],
}


def test_a_large_model_on_a_small_slice_is_flagged_where_validation_loss_turns(
    digits: Any,
) -> None:
    _, rows, _ = fit(digits, units=[512, 512], train=60, batch_size=4, epochs=40)
    val = [r.metrics["val_loss"] for r in rows]
    turn = int(np.argmin(val)) + 1  # the epoch with the lowest validation loss
    assert turn < 20 and val[-1] > val[turn - 1] * 1.05, "the run must really overfit"
    assert rows[-1].metrics["loss"] < rows[turn - 1].metrics["loss"] / 5

    insight = analyse(NO_CALLBACKS, rows, "succeeded", "completed")
    kinds = [f.kind for f in insight.findings]
    assert kinds == ["overfitting"], insight.findings
    assert best_of([(r.epoch, v) for r, v in zip(rows, val, strict=True)], "min") == (
        turn,
        val[turn - 1],
    )
    assert insight.overfitting_epoch == turn + 1
    assert f"epoch {turn}" in insight.findings[0].message
    assert "EarlyStopping" in insight.findings[0].remedy

    # While the job trained: not flagged before the rise could be seen, flagged soon after.
    flagged_at = next(
        n
        for n in range(1, len(rows) + 1)
        if analyse(NO_CALLBACKS, rows[:n], "running", None).overfitting_epoch is not None
    )
    assert turn + RISE_VALIDATIONS <= flagged_at <= turn + 10, (turn, flagged_at)
    for n in range(1, flagged_at):
        assert analyse(NO_CALLBACKS, rows[:n], "running", None).findings == []


def test_a_well_regularised_run_is_not_flagged(digits: Any) -> None:
    _, rows, _ = fit(digits, units=[64], train=1000, batch_size=32, epochs=30, dropout=0.3, l2=1e-3)
    val = [r.metrics["val_loss"] for r in rows]
    assert val[-1] < val[0] / 4
    insight = analyse(NO_CALLBACKS, rows, "succeeded", "completed")
    assert insight.findings == []
    assert insight.overfitting_epoch is None


def test_a_diverging_run_is_flagged(digits: Any) -> None:
    x, y, order = digits
    keras.utils.set_random_seed(7)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse")
    raw = x * 16  # unscaled pixels: the step size is far too large for them
    history = model.fit(
        raw[order[:1000]], y[order[:1000]].astype("float32"), batch_size=32, epochs=4, verbose=0
    ).history
    rows = [Epoch(i + 1, {"loss": float(v)}) for i, v in enumerate(history["loss"])]
    assert not np.isfinite(history["loss"][-1])
    insight = analyse(NO_CALLBACKS, rows, "succeeded", "completed")
    assert [f.kind for f in insight.findings] == ["divergence"]
    first_bad = next(r.epoch for r in rows if not np.isfinite(r.metrics["loss"]))
    assert insight.findings[0].epoch == first_bad
    assert "learning_rate" in insight.findings[0].remedy


def test_final_weights_epoch_matches_what_keras_restored(digits: Any) -> None:
    """EarlyStopping(restore_best_weights=True): the model holds the named epoch's weights."""
    early = {
        "type": "EarlyStopping",
        "monitor": "val_loss",
        "patience": 4,
        "min_delta": 0.002,
        "restore_best_weights": True,
    }
    callback = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=4, min_delta=0.002, restore_best_weights=True
    )
    model, rows, (xv, yv) = fit(
        digits, units=[512, 512], train=60, batch_size=4, epochs=40, callbacks=[callback]
    )
    assert len(rows) < 40, "EarlyStopping must stop this run"
    spec = {**NO_CALLBACKS, "callbacks": [early]}
    insight = analyse(spec, rows, "succeeded", "early_stopping")
    assert insight.early_stopping_epoch == len(rows)
    assert insight.final_weights_epoch == callback.best_epoch + 1
    restored = model.evaluate(xv, yv, verbose=0)[0]
    recorded = rows[insight.final_weights_epoch - 1].metrics["val_loss"]
    assert restored == pytest.approx(recorded, rel=1e-5)


def test_a_job_with_early_stopping_is_not_told_to_add_it(digits: Any) -> None:
    """The run that overfits above, now with the EarlyStopping the finding recommends,
    and a patience long enough that the turn is seen before it stops."""
    early = {
        "type": "EarlyStopping",
        "monitor": "val_loss",
        "patience": 15,
        "restore_best_weights": True,
    }
    callback = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=15, restore_best_weights=True
    )
    _, rows, _ = fit(
        digits, units=[512, 512], train=60, batch_size=4, epochs=40, callbacks=[callback]
    )
    spec = {**NO_CALLBACKS, "callbacks": [early]}
    stop = "early_stopping" if len(rows) < 40 else "completed"
    insight = analyse(spec, rows, "succeeded", stop)
    assert [f.kind for f in insight.findings] == ["overfitting"], insight.findings
    remedy = insight.findings[0].remedy
    assert "EarlyStopping(monitor='val_loss', restore_best_weights=True)" not in remedy
    assert remedy.startswith(
        "the job's EarlyStopping (callbacks[0]) keeps the best epoch's weights; "
        "a patience below 15 would stop sooner"
    )
    # Without the callback, the same history gets the recommendation.
    bare = analyse(NO_CALLBACKS, rows, "succeeded", "completed").findings[0].remedy
    assert "EarlyStopping(monitor='val_loss', restore_best_weights=True)" in bare
