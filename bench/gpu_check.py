"""GPU check: the same job on a CPU worker and on a worker pinned to GPU 0, and, with
two GPUs or more, on a worker with two GPUs (``resources: {gpus: 2}``).

Run it on a machine with an NVIDIA GPU (``bench/gpu_check.sh`` checks that first):

    .venv/bin/python bench/gpu_check.py [--epochs 10] [--out DIR]

It starts its own API and workers on the embedded default in a temporary folder:
``fitq worker --gpus 0`` (one worker pinned with CUDA_VISIBLE_DEVICES=0), a CPU
worker (CUDA_VISIBLE_DEVICES empty) and, with two GPUs, ``fitq worker --gpus 0,1
--gpus-per-worker 2``. It trains one job on each, one after the other, and records
per device: the status, the device the job's log names, the median epoch time
(epoch 1, which traces the graph, apart), GPU memory used by the training process
while it trains, and whether that process's GPU memory is gone once the job ends.
It prints a table and writes ``gpu_check.json`` to ``--out``. Exit status 0 when
every job succeeded on the device it was meant for.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


def job(queue: str, epochs: int, gpus: int = 1) -> dict[str, Any]:
    return {
        "name": f"gpu-check-{queue}",
        "queue": queue,
        "seed": 42,
        "model": {
            "builtin": "cnn",
            "params": {"filters": [64, 128], "dense_units": 256},
        },
        "compile": {
            "optimizer": "adam",
            "loss": "sparse_categorical_crossentropy",
            "metrics": ["accuracy"],
        },
        "data": {
            "train": {"dataset": "builtin:digits", "split": "train"},
            "validation": {"dataset": "builtin:digits", "split": "validation"},
        },
        "fit": {"batch_size": 64, "epochs": epochs},
        "resources": {"gpus": gpus},
    }


def gpus() -> list[str]:
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=True,
    )
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def gpu_memory_of(pids: set[int]) -> int:
    """MiB of GPU memory the processes ``pids`` hold, as nvidia-smi reports it."""
    out = subprocess.run(
        ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
    )
    total = 0
    for line in out.stdout.splitlines():
        pid, _, mib = line.partition(",")
        if pid.strip().isdigit() and int(pid) in pids:
            total += int(mib.strip() or 0)
    return total


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            try:
                kids = [int(p) for p in (task / "children").read_text().split()]
            except OSError:
                continue
            found.update(kids)
            todo.extend(kids)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_job(
    client: httpx.Client, spec: dict[str, Any], worker_pid: int, expect: str
) -> dict[str, Any]:
    created = client.post("/v1/jobs", json=spec)
    created.raise_for_status()
    job_id = created.json()["id"]
    peak_mib, training_pids = 0, set()
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        status = client.get(f"/v1/jobs/{job_id}").json()["status"]
        if status == "running":
            pids = descendants(worker_pid)
            training_pids |= pids
            peak_mib = max(peak_mib, gpu_memory_of(pids))
        if status in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.5)
    time.sleep(3.0)  # the pool process that trained exits after its one job
    left_mib = gpu_memory_of(training_pids)
    done = client.get(f"/v1/jobs/{job_id}").json()
    rows = client.get(f"/v1/jobs/{job_id}/metrics").json()["items"]
    log = client.get(f"/v1/jobs/{job_id}/logs").text
    device = next((ln for ln in log.splitlines() if ln.startswith("fitq: training on")), "")
    strategy = next((ln for ln in log.splitlines() if "MirroredStrategy" in ln), "")
    times = [r["duration_s"] for r in rows]
    return {
        "queue": spec["queue"],
        "gpus": spec["resources"]["gpus"],
        "status": done["status"],
        "error": done["error"],
        "device_line": device or strategy,
        "on_expected_device": expect in (device or strategy),
        "epochs": len(rows),
        "first_epoch_s": times[0] if times else None,
        "median_epoch_s": statistics.median(times[1:]) if len(times) > 1 else None,
        "val_accuracy": rows[-1]["metrics"].get("val_accuracy") if rows else None,
        "gpu_mib_while_training": peak_mib,
        "gpu_mib_after_job": left_mib,
    }


# long: one linear script of GPU checks, each step reported in order
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    args = parser.parse_args()
    found = gpus()
    multi = len(found) >= 2
    tmp = Path(tempfile.mkdtemp(prefix="fitq-gpu-check-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FITQ_")}
    env.update(
        FITQ_DATA_DIR=str(tmp),
        FITQ_AUTH="off",
        FITQ_MAX_GPUS_PER_WORKER="2" if multi else "1",
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONUNBUFFERED="1",
    )
    fitq = [sys.executable, "-m", "fitq"]
    subprocess.run([*fitq, "migrate"], env=env, check=True, cwd=tmp)
    port = free_port()
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(name: str, *argv: str, **extra: str) -> None:
        log = open(tmp / f"{name}.log", "wb")
        procs[name] = subprocess.Popen(
            [*fitq, *argv], env={**env, **extra}, cwd=tmp, stdout=log, stderr=subprocess.STDOUT
        )

    start("api", "api", "--port", str(port))
    start("cpu", "worker", "--queues", "check-cpu", CUDA_VISIBLE_DEVICES="")
    start("gpu", "worker", "--gpus", "0", "--queues", "check-gpu")
    if multi:
        start("multi", "worker", "--gpus", "0,1", "--gpus-per-worker", "2", "--queues", "check-2")
    results: list[dict[str, Any]] = []
    plan = [("check-cpu", "cpu", 1, "CPU"), ("check-gpu", "gpu", 1, "GPU:0")]
    if multi:
        plan.append(("check-2", "multi", 2, "2 replicas"))
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                workers = client.get("/v1/workers").json()["items"]
                if sum(w["alive"] for w in workers) >= len(procs) - 1:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            raise SystemExit(f"workers did not start; logs in {tmp}")
        time.sleep(20)  # each worker's pool process imports tensorflow before its first job
        for queue, name, n, expect in plan:
            results.append(run_job(client, job(queue, args.epochs, n), procs[name].pid, expect))
            print(json.dumps(results[-1]), flush=True)
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    cpu = next((r for r in results if r["queue"] == "check-cpu"), None)
    header = ("queue", "status", "median epoch s", "vs CPU", "GPU MiB")
    print("\n{:<10} {:<10} {:>14} {:>7} {:>8}  after".format(*header))
    for r in results:
        speedup = (
            f"{cpu['median_epoch_s'] / r['median_epoch_s']:.1f}x"
            if cpu and cpu["median_epoch_s"] and r["median_epoch_s"]
            else "-"
        )
        print(
            f"{r['queue']:<10} {r['status']:<10} {r['median_epoch_s'] or 0:>14.3f} "
            f"{speedup:>7} {r['gpu_mib_while_training']:>8}  {r['gpu_mib_after_job']}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(
        json.dumps({"gpus": found, "results": results, "logs": str(tmp)}, indent=2)
    )
    ok = all(
        r["status"] == "succeeded" and r["on_expected_device"] and r["gpu_mib_after_job"] == 0
        for r in results
    )
    return 0 if ok and len(results) == len(plan) else 1


if __name__ == "__main__":
    sys.exit(main())
