"""A dataset four times the worker's memory budget trains from disk, within the budget."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import Backend, Service

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
BUDGET = 64 * 1024 * 1024


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_rss_while(svc: Service, job_id: str) -> tuple[dict[str, Any], int]:
    """Runs until the job ends, sampling its training process' resident memory."""
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            for pid in svc.pool_children():
                peak = max(peak, rss_kib(pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        done = svc.wait_for(job_id, timeout=600)
    finally:
        stop.set()
        sampler.join()
    return done, peak * 1024


def upload(svc: Service, path: Path) -> str:
    with open(path, "rb") as f:
        resp = svc.client.post("/v1/datasets", files={"file": (path.name, f)}, timeout=300)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def spec(dataset: str) -> dict[str, Any]:
    return {
        "seed": 3,
        "model": {"builtin": "mlp", "params": {"hidden_units": [16]}},
        "compile": {"optimizer": "adam", "loss": "sparse_categorical_crossentropy"},
        "data": {"train": {"dataset": dataset}},
        "fit": {"epochs": 2, "batch_size": 512, "validation_split": 0.1, "workers": 2},
    }


def test_data_larger_than_the_memory_budget_streams_from_disk(tmp_path: Path) -> None:
    svc = Service(
        Backend("sqlite", f"sqlite:///{tmp_path / 'fitq.db'}", None),
        tmp_path / "svc",
        f"stream-{uuid.uuid4().hex[:6]}",
        extra_env={"FITQ_WORKER_MEMORY_BUDGET": str(BUDGET)},
    )
    svc.start()
    try:
        rng = np.random.default_rng(0)
        features = 1024
        small, big = tmp_path / "small.npz", tmp_path / "big.npz"
        n_small = BUDGET // (features * 4) // 4  # a quarter of the budget: loaded whole
        np.savez(
            small,
            x=rng.random((n_small, features), dtype=np.float32),
            y=rng.integers(0, 4, n_small),
        )
        n_big = 4 * BUDGET // (features * 4)  # four times the budget: streamed
        x_big = np.lib.format.open_memmap(tmp_path / "x.npy", "w+", np.float32, (n_big, features))
        for start in range(0, n_big, 8192):
            x_big[start : start + 8192] = rng.random(
                (min(8192, n_big - start), features), dtype=np.float32
            )
        x_big.flush()
        np.savez(big, x=x_big, y=rng.integers(0, 4, n_big))
        del x_big
        baseline, base_peak = peak_rss_while(svc, svc.submit(spec(upload(svc, small)))["id"])
        assert baseline["status"] == "succeeded", baseline["error"]
        time.sleep(8)  # the next pool process imports tensorflow
        done, peak = peak_rss_while(svc, svc.submit(spec(upload(svc, big)))["id"])
        rows = svc.metrics(done["id"])
        print(
            f"\ndataset of {4 * BUDGET >> 20} MiB with a {BUDGET >> 20} MiB budget: "
            f"{done['status']}; training process peak RSS {peak >> 20} MiB, "
            f"{(peak - base_peak) >> 20} MiB above the same job on {n_small * features * 4 >> 20}"
            f" MiB loaded whole ({base_peak >> 20} MiB)"
        )
        assert done["status"] == "succeeded", done["error"]
        assert [r["epoch"] for r in rows] == [1, 2] and "val_loss" in rows[0]["metrics"]
        assert peak - base_peak < BUDGET
    finally:
        svc.stop()
