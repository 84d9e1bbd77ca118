"""GPU selection, a worker's devices and the queues they let it serve."""

from __future__ import annotations

import pytest

from queueing.devices import Devices, gpu_groups, queues_for, routed_queue, worker_devices


def two_gpus() -> list[str]:
    return ["0", "1"]


def no_gpu() -> list[str]:
    return []


@pytest.mark.parametrize(
    ("selection", "per_worker", "discover", "expected"),
    [
        ("all", 1, two_gpus, ["0", "1"]),
        ("all", 2, two_gpus, ["0,1"]),
        ("all", 1, no_gpu, []),
        ("0,1", 1, no_gpu, ["0", "1"]),
        ("3, 1", 1, no_gpu, ["3", "1"]),
        ("0,1,2,3", 2, no_gpu, ["0,1", "2,3"]),
    ],
)
def test_gpu_groups(selection: str, per_worker: int, discover: object, expected: list[str]) -> None:
    assert gpu_groups(selection, per_worker, discover) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("selection", "per_worker", "message"),
    [
        ("gpu0", 1, "expected 'all' or GPU indices"),
        ("0,0", 1, "names a GPU twice"),
        ("0,1,2", 2, "do not divide into workers of --gpus-per-worker 2"),
        ("all", 0, "expected at least 1"),
    ],
)
def test_gpu_groups_refuses_with_what_it_received(
    selection: str, per_worker: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        gpu_groups(selection, per_worker, two_gpus)


def test_a_pinned_worker_counts_its_pinned_gpus() -> None:
    assert worker_devices({"CUDA_VISIBLE_DEVICES": "2,3"}, 1, two_gpus) == Devices("gpu", 2, "2,3")


def test_hidden_or_absent_gpus_leave_the_logical_cpus() -> None:
    assert worker_devices({"CUDA_VISIBLE_DEVICES": ""}, 2, two_gpus) == Devices("cpu", 2)
    assert worker_devices({"CUDA_VISIBLE_DEVICES": "-1"}, 1, two_gpus) == Devices("cpu", 1)
    assert worker_devices({}, 3, no_gpu) == Devices("cpu", 3)


def test_an_unpinned_worker_counts_every_gpu_of_the_machine() -> None:
    assert worker_devices({}, 1, two_gpus) == Devices("gpu", 2)


def test_queues_of_a_larger_worker_include_those_of_jobs_needing_fewer_devices() -> None:
    assert routed_queue("gpu", 1) == "gpu"
    assert routed_queue("gpu", 4) == "gpu.gpus4"
    assert queues_for(["gpu", "default"], 1) == ["gpu", "default"]
    assert queues_for(["gpu"], 3) == ["gpu", "gpu.gpus2", "gpu.gpus3"]
