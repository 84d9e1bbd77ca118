"""docs/from-keras.md tells the truth: its script and its fitq job train the same.

The page's two Python blocks run as they are written, one after the other, in a fresh
process: the plain Keras script (a Functional model with two outputs, a loss dict
with loss_weights, sample weights, a weighted metric and an ExponentialDecay
schedule), then the code that uploads its arrays and submits the same job to a real
service (on the test worker's queue). Every logged value of every epoch must agree.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import ROOT, Service

PAGE = ROOT / "docs" / "from-keras.md"
REPORT = """
import json as _json
print("FITQ-PAGE " + _json.dumps({"plain": history.history, "rows": rows, "job": job}))
"""


def page_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)


def run_page(service: Service) -> dict[str, Any]:
    script, on_fitq = page_blocks()[:2]
    # The one change: the test service's worker serves its own queue, not "default".
    submit = "job = client.wait(client.submit(spec)"
    assert submit in on_fitq
    on_fitq = on_fitq.replace(submit, f"spec['queue'] = {service.queue!r}\n{submit}")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FITQ_API_URL": service.base_url}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", script + "\n" + on_fitq + REPORT],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        jobs = service.client.get("/v1/jobs").json()["items"]
        pytest.fail(f"the page's code ran past 300 s; the service's jobs: {jobs}"[:4000])
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("FITQ-PAGE "))
    result: dict[str, Any] = json.loads(line[len("FITQ-PAGE ") :])
    return result


def test_the_page_has_the_script_and_the_job() -> None:
    script, on_fitq = page_blocks()[:2]
    assert "model.fit(" in script and "fitq" not in script
    assert "client.submit(spec)" in on_fitq


def test_the_pages_job_trains_as_its_script(service: Service) -> None:
    result = run_page(service)
    job, rows, plain = result["job"], result["rows"], result["plain"]
    assert job["status"] == "succeeded", job["error"]
    epochs = len(plain["loss"])
    assert [r["epoch"] for r in rows] == list(range(1, epochs + 1))
    assert "digit_loss" in plain and "val_big_loss" in plain  # two outputs, validated
    for row in rows:
        assert set(row["metrics"]) == set(plain), row["epoch"]
        for key, values in plain.items():
            got, want = row["metrics"][key], values[row["epoch"] - 1]
            assert got == pytest.approx(want, rel=1e-6, abs=1e-7), (row["epoch"], key)
    # The schedule, at each epoch's first step: 38 batches of 32 an epoch (1200 samples).
    expected = [0.01 * 0.9 ** (38 * e / 40) for e in range(epochs)]
    assert [r["lr"] for r in rows] == pytest.approx(expected, rel=1e-6)
