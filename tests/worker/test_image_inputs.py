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


class Sink(ListSink):
    def flush(self) -> None:
        pass


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

    outcome = train(spec, tmp_path / "job", Sink(), datasets_root=root)

    assert (outcome.status, outcome.stop_reason) == ("succeeded", "completed"), outcome.error
    assert outcome.test_metrics is not None
    assert set(outcome.test_metrics) == {"loss", "accuracy"}
    assert all(v is not None and math.isfinite(v) for v in outcome.test_metrics.values())
    test = load_job_data(spec.data, root).test
    assert test is not None
    batches = list(test.eval_inputs(spec, 8).x)
    assert sum(len(y) for _, y in batches) == 2 * PER_CLASS
