"""The pool process's warm-up fit leaves Keras as a fresh process has it.

That a job trained after the warm-up equals a plain script in a fresh process, epoch
by epoch and file by file, is tests/worker/test_fit_semantics.py's job: its worker
warms up every pool process before the job.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

keras = pytest.importorskip("keras")

from tests.conftest import ROOT  # noqa: E402
from worker.training.runner import warm_up  # noqa: E402


def test_warm_up_resets_the_layer_name_counters() -> None:
    keras.layers.Dense(1)  # whatever ran before in this process
    warm_up()
    # Checkpoint files hold layer names; a job must name its layers as a fresh process does.
    assert keras.layers.Dense(1).name == "dense"
    assert keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]).name == "sequential"


@pytest.mark.parametrize(("setting", "warmed"), [("true", True), ("false", False)])
def test_a_pool_process_warms_up_unless_fitq_worker_warm_up_is_false(
    setting: str, warmed: bool, tmp_path: Path
) -> None:
    # What Celery's worker_process_init runs in each new pool process, in a fresh one.
    code = (
        "import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stdout); "
        "import worker.celery_app as app; app._warm_up()"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FITQ_")}
    env.update(FITQ_WORKER_WARM_UP=setting, FITQ_DATA_DIR=str(tmp_path), TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert ("warmed up in" in done.stdout) is warmed, done.stdout[-2000:]
