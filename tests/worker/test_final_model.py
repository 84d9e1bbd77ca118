"""The trained model a job keeps, from the runner on tiny real models: ``model.keras``
holds the weights ``fit()`` finished with, the test metrics are those weights'."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

keras = pytest.importorskip("keras")
np = pytest.importorskip("numpy")
tf = pytest.importorskip("tensorflow")

from models.spec import JobSpec  # noqa: E402
from tests.factories import digits_spec, nan_loss_spec  # noqa: E402
from tests.worker.plain_fit import digits, mlp  # noqa: E402
from tests.worker.test_reporting import ListSink  # noqa: E402
from worker.training.runner import train  # noqa: E402

EARLY_STOPPING = {
    "type": "EarlyStopping",
    "monitor": "val_loss",
    "patience": 2,
    "restore_best_weights": True,
}
# The early_stopping case of tests/worker/plain_fit.py: it stops well before epoch 40.
OVERFITS = {
    "fit.epochs": 40,
    "fit.batch_size": 16,
    "data.train.take": 60,
    "model.params": {"hidden_units": [128]},
    "compile.optimizer": {"class_name": "Adam", "config": {"learning_rate": 0.01}},
    "data.test": {"dataset": "builtin:digits", "split": "test", "take": 100},
}


def weights_of(path: Path) -> list[Any]:
    return list(keras.saving.load_model(path).get_weights())


def max_diff(a: list[Any], b: list[Any]) -> float:
    assert [w.shape for w in a] == [w.shape for w in b]
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b, strict=True))


def plain_restored_weights() -> list[Any]:
    """The weights a plain script's model holds after the same fit() with
    EarlyStopping(restore_best_weights=True)."""
    keras.utils.set_random_seed(7)
    tf.config.experimental.enable_op_determinism()
    (x, y), (xv, yv) = digits("train", 60), digits("validation", 100)
    model = mlp(128)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=0.01),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    model.fit(x, y, batch_size=16, epochs=40, verbose=0, validation_data=(xv, yv), callbacks=[stop])
    return list(model.get_weights())


def test_model_keras_holds_the_restored_best_weights_and_gave_the_test_metrics(
    tmp_path: Path,
) -> None:
    every_epoch = {"type": "ModelCheckpoint", "filepath": "e{epoch:02d}.keras", "monitor": "loss"}
    spec = JobSpec.model_validate(digits_spec(**OVERFITS, callbacks=[EARLY_STOPPING, every_epoch]))
    job_dir = tmp_path / "job"

    outcome = train(spec, job_dir, ListSink())

    assert (outcome.status, outcome.stop_reason) == ("succeeded", "early_stopping"), outcome.error
    val_loss = outcome.history["val_loss"]
    best, last = int(np.argmin(val_loss)) + 1, len(val_loss)
    assert best <= last - 2  # patience 2: the last epoch's weights are not the best's
    model_file = job_dir / "model.keras"
    data = model_file.read_bytes()
    assert outcome.model_file is not None
    assert outcome.model_file.size_bytes == len(data)
    assert outcome.model_file.sha256 == hashlib.sha256(data).hexdigest()

    saved = weights_of(model_file)
    assert max_diff(saved, weights_of(job_dir / f"checkpoints/e{best:02d}.keras")) == 0.0
    assert max_diff(saved, weights_of(job_dir / f"checkpoints/e{last:02d}.keras")) > 1e-3
    assert max_diff(saved, plain_restored_weights()) <= 1e-6

    x_test, y_test = digits("test", 100)
    again = keras.saving.load_model(model_file).evaluate(
        x_test, y_test, batch_size=16, verbose=0, return_dict=True
    )
    assert outcome.test_metrics is not None and set(outcome.test_metrics) == set(again)
    for key, value in again.items():
        assert abs(float(value) - float(outcome.test_metrics[key])) <= 1e-6, key
    assert "fitq: saved model.keras (" in (job_dir / "train.log").read_text()


def test_export_writes_a_savedmodel_that_predicts_as_the_model(tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    # What an earlier attempt may have left is replaced.
    (job_dir / "export").mkdir(parents=True)
    (job_dir / "export" / "stale.pb").write_bytes(b"old")
    (job_dir / "model.keras").write_bytes(b"old")
    spec = JobSpec.model_validate(
        digits_spec(**{"fit.epochs": 1, "data.train.take": 64, "output": {"export": True}})
    )

    outcome = train(spec, job_dir, ListSink())

    assert outcome.status == "succeeded", outcome.error
    export = job_dir / "export"
    assert (export / "saved_model.pb").is_file() and not (export / "stale.pb").exists()
    assert sorted(p.name for p in job_dir.iterdir() if "partial" in p.name) == []
    x, _ = digits("test", 20)
    expected = keras.saving.load_model(job_dir / "model.keras").predict(x, verbose=0)
    loaded = tf.saved_model.load(str(export))  # held: serve() reads its variables
    served = loaded.serve(tf.constant(x)).numpy()
    assert float(np.max(np.abs(served - expected))) <= 1e-6


def test_a_job_that_fails_keeps_no_model(tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    outcome = train(JobSpec.model_validate(nan_loss_spec()), job_dir, ListSink())
    assert (outcome.status, outcome.stop_reason) == ("failed", "nan_loss")
    assert outcome.model_file is None
    assert not (job_dir / "model.keras").exists()
