"""The job's best, each checkpoint's is_best and the files Keras kept agree.

The metric is AUC renamed ``score``: a name that says nothing of its direction
(no "loss", "acc" or "auc" in it). Keras' ModelCheckpoint(save_best_only=True) in
``auto`` mode maximises it, as AUC's metric object says, and writes a file only
when it improves; fitq's ``best``, ``is_best`` and the API's insight must follow the
same rule, not a guess from the name.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import Service
from tests.factories import digits_spec

pytestmark = pytest.mark.e2e


def test_a_renamed_metric_is_maximised_as_keras_maximises_it(service: Service) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(240, 6))
    y = (x[:, 0] + 0.8 * rng.normal(size=240) > 0).astype(int)
    spec = digits_spec(
        **{
            "model.params": {"hidden_units": [8]},
            "compile": {
                "optimizer": {"class_name": "Adam", "config": {"learning_rate": 0.003}},
                "loss": "binary_crossentropy",
                "metrics": [{"class_name": "AUC", "config": {"name": "score"}}],
            },
            "data.train": {"x": x[:160].tolist(), "y": y[:160].tolist()},
            "data.validation": {"x": x[160:].tolist(), "y": y[160:].tolist()},
            "fit.epochs": 8,
            "callbacks": [
                {
                    "type": "ModelCheckpoint",
                    "filepath": "m{epoch:02d}.keras",
                    "monitor": "val_score",
                    "save_best_only": True,
                }
            ],
        }
    )
    job = service.wait_for(service.submit(spec)["id"])
    assert job["status"] == "succeeded", job["error"]
    scores = {r["epoch"]: r["metrics"]["val_score"] for r in service.metrics(job["id"])}

    # What Keras kept: a file for each epoch that beat every earlier one (maximising).
    kept, best = [], -np.inf
    for epoch, value in sorted(scores.items()):
        if value > best:
            kept.append(epoch)
            best = value
    folder = service.data_dir / "artifacts" / "jobs" / job["id"] / "checkpoints"
    on_disk = sorted(int(p.stem[1:]) for p in folder.glob("m*.keras"))
    assert on_disk == kept
    assert len(kept) >= 2, scores  # the run improved more than once: the rule is exercised

    rows = service.client.get(f"/v1/jobs/{job['id']}/checkpoints").json()["items"]
    assert [r["epoch"] for r in rows] == kept
    assert [r["epoch"] for r in rows if r["is_best"]] == [kept[-1]]
    assert job["best"] == {"epoch": kept[-1], "monitor": "val_score", "value": scores[kept[-1]]}
    assert (job["insight"]["mode"], job["insight"]["best_epoch"]) == ("max", kept[-1])
