"""Functional models train through the runner exactly as in a plain Keras script.

Each case is a Functional model a user writes by hand (tests/worker/plain_fit.py: a
residual block of Dense or Conv2D layers, a layer called twice, a Sequential model
inside, BatchNormalization), fitted there with the same seed; fitq gets the config
``model.to_json()`` gave, checks it, and trains it through the runner. Every epoch's
every logged value must agree within 1e-6, and fitq's count of the weights must be
Keras'.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("keras")

from checks.model_size import model_size  # noqa: E402
from checks.validation import check_spec  # noqa: E402
from core.settings import Settings  # noqa: E402
from models.spec import JobSpec  # noqa: E402
from tests.factories import digits_spec  # noqa: E402
from tests.worker.test_fit_semantics import plain  # noqa: E402
from tests.worker.test_reporting import ListSink  # noqa: E402
from worker.training.runner import train  # noqa: E402

CASES = ["residual_dense", "residual_conv", "shared", "nested", "batch_norm"]


@pytest.mark.parametrize("case", CASES)
def test_a_functional_model_trains_as_in_a_plain_script(case: str, tmp_path: Path) -> None:
    expected = plain(case, tmp_path / "plain")
    config = expected["config"]
    assert config["class_name"] == "Functional"
    assert model_size(config, (8, 8, 1), ()).params == expected["params"]
    keras_model = {"model.builtin": ..., "model.params": ..., "model.keras_config": config}
    spec = JobSpec.model_validate(digits_spec(**keras_model))
    check_spec(spec, Settings())  # the allowlist and the size checks pass it

    sink = ListSink()
    outcome = train(spec, tmp_path / "job", sink)

    assert (outcome.status, outcome.stop_reason) == ("succeeded", "completed"), outcome.error
    assert [epoch for epoch, _, _ in sink.epochs] == [e for e, _ in expected["epochs"]]
    for (epoch, metrics, _), (_, logs) in zip(sink.epochs, expected["epochs"], strict=True):
        assert set(metrics) == set(logs), epoch
        for key, value in logs.items():
            got = metrics[key]
            assert got is not None and abs(got - value) <= 1e-6, (epoch, key, got, value)
