"""What Keras 3 does in the cases fitq refuses or warns about, on tiny real models.

Each refusal in ``checks`` stands for a spec Keras would fail on at run time, each
warning in ``checks.advice`` describes what Keras then does; these tests hold them to
Keras' behaviour, so that a Keras upgrade that changes it shows here.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import pytest

keras = pytest.importorskip("keras")
np = pytest.importorskip("numpy")
tf = pytest.importorskip("tensorflow")

from checks.validation import check_spec  # noqa: E402
from core.errors import SpecError  # noqa: E402
from core.settings import Settings  # noqa: E402
from models.spec import CHECKPOINT_SUFFIXES, JobSpec  # noqa: E402
from tests.checks.test_loss_labels import OUTPUT_FITS, Fit  # noqa: E402
from tests.checks.test_loss_labels import X as LABELLED_X  # noqa: E402
from tests.factories import digits_spec  # noqa: E402

N = 100
X = np.random.RandomState(0).rand(N, 4).astype("float32")
Y = np.random.RandomState(1).randint(0, 3, N)


def softmax_model(units: int = 3) -> Any:
    keras.utils.set_random_seed(1)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(units, activation="softmax")])


class Batches(keras.callbacks.Callback):  # type: ignore[misc]
    """Counts the batches of each epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.per_epoch: list[int] = []

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.per_epoch.append(0)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.per_epoch[-1] += 1


def test_a_categorical_loss_on_class_indices_fails_in_keras_and_is_refused() -> None:
    model = softmax_model()
    model.compile("adam", "categorical_crossentropy")
    with pytest.raises(ValueError, match="must have the same rank"):
        model.fit(X, Y, epochs=1, verbose=0)
    # On a one-unit softmax (a built-in model sized to one label column) it runs and
    # learns nothing: the loss is 0 whatever the weights.
    model = softmax_model(1)
    model.compile("adam", "categorical_crossentropy")
    history = model.fit(X, Y.astype("float32"), epochs=2, verbose=0).history
    assert history["loss"] == [0.0, 0.0]
    with pytest.raises(SpecError):
        check_spec(
            JobSpec.model_validate(digits_spec(**{"compile.loss": "categorical_crossentropy"})),
            Settings(),
        )


def test_a_sparse_loss_on_one_hot_rows_fails_in_keras() -> None:
    model = softmax_model()
    model.compile("adam", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError):
        model.fit(X, np.eye(3)[Y], epochs=1, verbose=0)


@pytest.mark.parametrize("case", OUTPUT_FITS, ids=lambda c: f"{c.loss}-{c.units}-{c.y[0]}")
def test_keras_trains_the_models_whose_output_fits_and_fails_on_the_others(case: Fit) -> None:
    """The table fitq's output check is tested on (tests/checks/test_loss_labels.py)."""
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(case.units, activation=case.activation)]
    )
    model.compile("adam", case.loss)
    x, y = np.asarray(LABELLED_X, dtype="float32"), np.asarray(case.y)
    assert len(x) not in (case.units, 1)  # a batch of that size would broadcast
    if case.runs:
        history = model.fit(x, y, epochs=1, verbose=0).history
        assert math.isfinite(history["loss"][0])
    else:
        with pytest.raises((ValueError, tf.errors.InvalidArgumentError)):
            model.fit(x, y, epochs=1, verbose=0)


def test_steps_per_epoch_beyond_the_batches_ends_each_epoch_when_data_runs_out() -> None:
    model = softmax_model()
    model.compile("sgd", "sparse_categorical_crossentropy")
    batches = Batches()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(
            X, Y, batch_size=10, steps_per_epoch=15, epochs=3, verbose=0, callbacks=[batches]
        ).history
    assert batches.per_epoch == [10, 10, 10]
    assert len(history["loss"]) == 3
    ran_out = [w for w in caught if "Your input ran out of data" in str(w.message)]
    assert len(ran_out) == 3


def test_steps_per_epoch_below_the_batches_goes_on_with_the_same_pass() -> None:
    """Keras keeps one iterator across epochs: epoch 2 starts where epoch 1 stopped, and
    the epoch that reaches the end of the data ends there."""
    firsts: list[float] = []

    ids = np.arange(N, dtype="float32").reshape(-1, 1)

    class Record(keras.layers.Layer):  # type: ignore[misc]
        def call(self, x: Any) -> Any:
            firsts.append(float(keras.ops.convert_to_numpy(x)[0, 0]))
            return x

        def compute_output_shape(self, shape: Any) -> Any:
            return shape  # so that building the model does not call ``call``

    inputs = keras.Input((1,))
    model = keras.Model(inputs, keras.layers.Dense(1)(Record()(inputs)))
    model.compile("sgd", "mse", run_eagerly=True)
    batches = Batches()
    model.fit(
        ids,
        ids,
        batch_size=10,
        steps_per_epoch=4,
        epochs=3,
        shuffle=False,
        verbose=0,
        callbacks=[batches],
    )
    assert batches.per_epoch == [4, 4, 2]
    # Ten batches in three epochs: one pass, in order, and no more.
    assert firsts == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90]


def test_without_a_batch_size_keras_sizes_array_batches_from_the_steps() -> None:
    model = softmax_model()
    model.compile("sgd", "sparse_categorical_crossentropy")
    batches = Batches()
    model.fit(X, Y, steps_per_epoch=4, epochs=1, verbose=0, callbacks=[batches])
    assert batches.per_epoch == [4]  # batches of ceil(100 / 4) = 25


def test_a_val_monitor_on_epochs_without_validation(tmp_path: Path) -> None:
    """EarlyStopping warns and skips the epoch; ModelCheckpoint(save_best_only) saves."""
    model = softmax_model()
    model.compile("adam", "sparse_categorical_crossentropy")
    best = tmp_path / "best.keras"
    written: list[int] = []

    class Written(keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if best.exists():
                written.append(best.stat().st_mtime_ns)
                best.unlink()

    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=1),
        keras.callbacks.ModelCheckpoint(str(best), monitor="val_loss", save_best_only=True),
        Written(),
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(
            X, Y, epochs=4, validation_split=0.2, validation_freq=2, verbose=0, callbacks=callbacks
        )
    messages = [str(w.message) for w in caught]
    assert sum("Early stopping conditioned on metric `val_loss`" in m for m in messages) == 2
    assert sum("Can save best model only with val_loss available" in m for m in messages) == 2
    assert len(written) >= 2  # epochs 1 and 3, which do not validate, are saved


def test_a_val_placeholder_on_epochs_without_validation_fails_in_keras(tmp_path: Path) -> None:
    model = softmax_model()
    model.compile("adam", "sparse_categorical_crossentropy")
    path = str(tmp_path / "e{epoch:02d}-{val_loss:.3f}.keras")
    checkpoint = keras.callbacks.ModelCheckpoint(path, monitor="val_loss", save_best_only=True)
    with pytest.raises(KeyError, match="Failed to format this callback filepath"):
        model.fit(
            X,
            Y,
            epochs=2,
            validation_split=0.2,
            validation_freq=2,
            verbose=0,
            callbacks=[checkpoint],
        )


def test_the_checkpoint_suffixes_are_those_keras_writes_a_model_to(tmp_path: Path) -> None:
    model = softmax_model()
    model.compile("adam", "sparse_categorical_crossentropy")
    for suffix in CHECKPOINT_SUFFIXES:
        path = tmp_path / f"e{{epoch:02d}}{suffix}"
        model.fit(
            X,
            Y,
            epochs=1,
            verbose=0,
            callbacks=[keras.callbacks.ModelCheckpoint(str(path), monitor="loss")],
        )
        saved = keras.models.load_model(tmp_path / f"e01{suffix}")
        for a, b in zip(saved.get_weights(), model.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="must end in"):
        keras.callbacks.ModelCheckpoint(str(tmp_path / "m.hdf5"))


def test_callbacks_take_any_verbose_count() -> None:
    assert keras.callbacks.EarlyStopping(verbose=2).verbose == 2
    assert keras.callbacks.ReduceLROnPlateau(verbose=2).verbose == 2
    assert keras.callbacks.ModelCheckpoint("m.keras", verbose=2).verbose == 2
