"""A job's recorded error names the server's folders by their settings, not by path."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest

from tests.conftest import Service
from tests.factories import digits_spec

pytestmark = pytest.mark.e2e


def test_a_training_error_shows_no_server_path(service: Service) -> None:
    buf = io.BytesIO()
    np.savez(buf, x=np.zeros((20, 4)), y=np.arange(20) % 2)
    uploaded = service.client.post("/v1/datasets", files={"file": ("d.npz", buf.getvalue())})
    assert uploaded.status_code == 201, uploaded.text
    dataset = uploaded.json()["id"]
    # The files go missing after the upload was accepted: the worker fails to read them,
    # and the operating system's message holds the absolute path of the dataset folder.
    shutil.rmtree(service.data_dir / "artifacts" / "datasets" / dataset)
    spec = digits_spec(**{"data.train": {"dataset": dataset}, "data.validation": ...})
    job = service.wait_for(service.submit(spec)["id"])
    assert job["status"] == "failed"
    shown = job["error"]["message"] + job["error"]["traceback_tail"]
    assert "$FITQ_ARTIFACTS_DIR" in shown, shown
    assert str(service.data_dir.resolve()) not in shown, shown
