"""Models with several inputs or outputs, and sample weights, train as a plain script.

The runner trains each job spec of ``tests/worker/plain_multi_io.py`` (a two-input
model with Concatenate; a two-output model with a loss dict and loss_weights; sample
weights by output with weighted_metrics), and the same model, arrays and arguments
run in that plain Keras script in a fresh process: every logged value of every epoch,
and the test metrics, agree within 1e-6. One case also runs end to end through the
real service, on both databases.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("keras")

from checks.validation import check_spec  # noqa: E402
from core.settings import Settings  # noqa: E402
from models.spec import JobSpec  # noqa: E402
from tests.conftest import Service  # noqa: E402
from tests.factories import plain_run
from tests.worker import plain_multi_io  # noqa: E402
from tests.worker.test_reporting import ListSink  # noqa: E402
from worker.training.runner import train  # noqa: E402

TOLERANCE = 1e-6
# The keys each case logs: Keras 3.15's names for several outputs.
LOGGED = {
    "two_inputs": {"loss", "accuracy"},
    "two_outputs": {"loss", "cls_loss", "reg_loss", "cls_accuracy", "reg_mae"},
    "sample_weights": {
        "loss",
        "cls_loss",
        "reg_loss",
        "cls_accuracy",
        "reg_mae",
        "cls_weighted_accuracy",
        "reg_weighted_mae",
    },
}


def plain(case: str) -> dict[str, Any]:
    return plain_run("plain_multi_io.py", case)


def assert_same(recorded: list[tuple[int, dict[str, Any]]], expected: list[Any]) -> None:
    """Same epochs, same keys, every value within ``TOLERANCE``."""
    assert [e for e, _ in recorded] == [e for e, _ in expected]
    for (epoch, got), (_, logs) in zip(recorded, expected, strict=True):
        assert set(got) == set(logs), epoch
        diffs = {k: abs(float(got[k]) - v) for k, v in logs.items()}
        assert max(diffs.values()) <= TOLERANCE, (epoch, diffs)


def spec_of(case: str) -> dict[str, Any]:
    return plain_multi_io.spec(case, plain_multi_io.config(case))


@pytest.mark.parametrize("case", list(LOGGED))
def test_the_runner_records_the_history_of_the_plain_script(case: str, tmp_path: Path) -> None:
    spec = JobSpec.model_validate(spec_of(case))
    check_spec(spec, Settings())  # the service would queue it as it is
    sink = ListSink()

    outcome = train(spec, tmp_path / "job", sink)

    assert (outcome.status, outcome.stop_reason) == ("succeeded", "completed"), outcome.error
    expected = plain(case)
    recorded = [(epoch, metrics) for epoch, metrics, _lr in sink.epochs]
    assert_same(recorded, expected["epochs"])
    assert {k.removeprefix("val_") for k in recorded[-1][1]} == LOGGED[case]
    assert outcome.test_metrics is not None
    assert set(outcome.test_metrics) == set(expected["test"])
    for key, value in expected["test"].items():
        assert abs(float(outcome.test_metrics[key] or 0.0) - value) <= TOLERANCE, key


@pytest.mark.e2e
def test_a_two_output_job_with_sample_weights_trains_as_the_plain_script(
    service: Service,
) -> None:
    # The loss dict, loss_weights, sample weights held out by validation_split with
    # the rows, and an EarlyStopping on val_cls_loss, through the API and a worker.
    job = service.submit(spec_of("two_outputs"))
    done = service.wait_for(job["id"], timeout=180)
    assert done["status"] == "succeeded", done["error"]
    expected = plain("two_outputs")
    rows = service.metrics(job["id"])
    assert_same([(r["epoch"], r["metrics"]) for r in rows], expected["epochs"])
    assert "val_cls_loss" in rows[0]["metrics"] and "val_reg_mae" in rows[0]["metrics"]
    test = done["test_metrics"]
    assert {k: abs(test[k] - v) <= TOLERANCE for k, v in expected["test"].items()} == {
        k: True for k in expected["test"]
    }


def test_an_uploaded_npz_of_named_arrays_trains_as_the_plain_script(tmp_path: Path) -> None:
    # The sample_weights case's arrays as an .npz: x, y/<output>, sample_weight/<output>
    # for each split; the runner reads them from the stored dataset.
    import io

    import numpy as np

    from storage.uploads import datasets_dir, store_npz

    arrays: dict[str, np.ndarray] = {}
    for suffix, (n, offset) in {"": (96, 1), "_val": (32, 2), "_test": (32, 3)}.items():
        x, y, weights = plain_multi_io.data("sample_weights", n, offset)
        arrays[f"x{suffix}"] = x
        for name in ("cls", "reg"):
            arrays[f"y{suffix}/{name}"] = y[name]
            arrays[f"sample_weight{suffix}/{name}"] = weights[name]
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    settings = Settings(data_dir=tmp_path / "data")
    dataset, *_ = store_npz(io.BytesIO(buf.getvalue()), settings)
    spec = spec_of("sample_weights")
    spec["data"] = {
        "train": {"dataset": dataset},
        "validation": {"dataset": dataset, "split": "validation"},
        "test": {"dataset": dataset, "split": "test"},
    }
    job = JobSpec.model_validate(spec)
    sink = ListSink()

    outcome = train(job, tmp_path / "job", sink, datasets_root=datasets_dir(settings))

    assert outcome.status == "succeeded", outcome.error
    expected = plain("sample_weights")
    assert_same([(e, m) for e, m, _ in sink.epochs], expected["epochs"])


def test_a_model_with_outputs_by_name_takes_labels_and_weights_by_name(tmp_path: Path) -> None:
    # keras.Model(a, {"reg": ..., "cls": ...}): Keras takes its sample weights as a dict
    # (a list fails), the other way round from a model with a list of outputs.
    import keras

    a = keras.Input(shape=(3,), name="a")
    h = keras.layers.Dense(8, activation="relu", name="hidden")(a)
    outputs = {
        "reg": keras.layers.Dense(1, name="reg")(h),
        "cls": keras.layers.Dense(3, activation="softmax", name="cls")(h),
    }
    config = json.loads(keras.Model(a, outputs).to_json())
    spec = plain_multi_io.spec("sample_weights", config)
    spec["compile"]["loss"] = {"cls": "sparse_categorical_crossentropy", "reg": "mse"}
    spec["compile"]["loss_weights"] = {"cls": 1.0, "reg": 0.25}
    spec["compile"]["metrics"] = {"cls": ["accuracy"], "reg": ["mae"]}
    job = JobSpec.model_validate(spec)
    check_spec(job, Settings())
    sink = ListSink()

    outcome = train(job, tmp_path / "job", sink)

    assert outcome.status == "succeeded", outcome.error
    assert {k.removeprefix("val_") for k in sink.epochs[-1][1]} == LOGGED["sample_weights"]
