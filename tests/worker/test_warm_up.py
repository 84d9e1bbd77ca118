"""The pool process's warm-up fit leaves Keras as a fresh process has it.

That a job trained after the warm-up equals a plain script in a fresh process, epoch
by epoch and file by file, is tests/worker/test_fit_semantics.py's job: its worker
warms up every pool process before the job.
"""

from __future__ import annotations

import pytest

keras = pytest.importorskip("keras")

from worker.training.runner import warm_up  # noqa: E402


def test_warm_up_resets_the_layer_name_counters() -> None:
    keras.layers.Dense(1)  # whatever ran before in this process
    warm_up()
    # Checkpoint files hold layer names; a job must name its layers as a fresh process does.
    assert keras.layers.Dense(1).name == "dense"
    assert keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]).name == "sequential"
