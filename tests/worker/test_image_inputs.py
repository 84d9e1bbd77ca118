"""An uploaded image folder as training, validation and test data, on a tiny real CNN."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("keras")
np = pytest.importorskip("numpy")

from core.settings import Settings  # noqa: E402
from models.spec import JobSpec  # noqa: E402
from storage.images import store_images  # noqa: E402
from storage.uploads import datasets_dir  # noqa: E402
from tests.factories import digits_spec, image_zip  # noqa: E402
from tests.worker.test_reporting import ListSink  # noqa: E402
from worker.training.data import load_job_data  # noqa: E402
from worker.training.runner import train  # noqa: E402

PER_CLASS = 10  # two classes: 20 images


def image_job(tmp_path: Path, **overrides: Any) -> tuple[JobSpec, Path]:
    settings = Settings(data_dir=tmp_path / "data")
    dataset, *_ = store_images(io.BytesIO(image_zip(per_class=PER_CLASS)), settings)
    spec = digits_spec(
        **{
            "model": {"builtin": "cnn", "params": {"filters": [4], "dense_units": 8}},
            "data.train": {"dataset": dataset},
            "data.validation": ...,
            "data.test": {"dataset": dataset},
            "fit.epochs": 1,
            "fit.batch_size": 8,
            **overrides,
        }
    )
    return JobSpec.model_validate(spec), datasets_dir(settings)


@pytest.mark.parametrize("validation_split", [0.0, 0.25])
def test_the_test_set_is_the_whole_folder_whatever_the_validation_split(
    tmp_path: Path, validation_split: float
) -> None:
    # validation_split splits the training folder; a test folder is never split.
    spec, root = image_job(tmp_path, **{"fit.validation_split": validation_split})

    outcome = train(spec, tmp_path / "job", ListSink(), datasets_root=root)

    assert (outcome.status, outcome.stop_reason) == ("succeeded", "completed"), outcome.error
    assert outcome.test_metrics is not None
    assert set(outcome.test_metrics) == {"loss", "accuracy"}
    assert all(v is not None and math.isfinite(v) for v in outcome.test_metrics.values())
    test = load_job_data(spec.data, root).test
    assert test is not None
    batches = list(test.eval_inputs(spec, 8).x)
    assert sum(len(y) for _, y in batches) == 2 * PER_CLASS


@pytest.mark.slow
@pytest.mark.parametrize(
    ("memory_budget", "decodes_once", "validation_split"),
    [(2**62, True, 0.25), (1, False, 0.25), (2**62, True, 0.0)],
)
def test_an_image_folder_trains_as_a_plain_script_with_image_dataset_from_directory(
    tmp_path: Path, memory_budget: int, decodes_once: bool, validation_split: float
) -> None:
    # Decoded once and held (the folder fits the budget) or decoded each epoch (it
    # does not): the same batches in the same order as Keras' own reader, epoch by epoch.
    from tests.factories import plain_run
    from worker.training.inputs import ImageFolder

    spec, root = image_job(
        tmp_path,
        **{
            "model": {"builtin": "mlp", "params": {"hidden_units": [8]}},
            "data.test": ...,
            "fit.epochs": 3,
            "fit.validation_split": validation_split,
        },
    )
    folder = load_job_data(spec.data, root, memory_budget).train
    assert isinstance(folder, ImageFolder) and folder.decodes_once is decodes_once
    sink = ListSink()

    outcome = train(spec, tmp_path / "job", sink, datasets_root=root, memory_budget=memory_budget)

    assert outcome.status == "succeeded", outcome.error
    expected = plain_run("plain_images.py", str(folder.path), "8", "3", str(validation_split))[
        "epochs"
    ]
    assert [e for e, _, _ in sink.epochs] == [e for e, _ in expected]
    for (epoch, metrics, _), (_, logs) in zip(sink.epochs, expected, strict=True):
        assert set(logs) <= set(metrics)
        for key, value in logs.items():
            assert metrics[key] == pytest.approx(value, rel=1e-6, abs=1e-7), (epoch, key)


def test_an_image_folder_is_decoded_once_only_when_its_decoded_images_fit_the_budget(
    tmp_path: Path,
) -> None:
    from worker.training.inputs import ImageFolder

    spec, root = image_job(tmp_path)
    decoded = 2 * PER_CLASS * 16 * 16 * 3 * 4  # float32 pixels of every image, as resized
    for budget, once in [(decoded, True), (decoded - 1, False)]:
        folder = load_job_data(spec.data, root, budget).train
        assert isinstance(folder, ImageFolder)
        assert (folder.decoded_bytes, folder.decodes_once) == (decoded, once)
