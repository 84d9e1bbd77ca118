"""The threads a job runs on carry their names at the operating system's level, where
``top -H``, ``perf`` and the benchmarks' per-thread accounting read them."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import Backend
from tests.worker.test_writer_errors import claimed
from worker.fresh_stack import on_fresh_stack
from worker.thread_names import name_this_thread
from worker.writer import JobWriter

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="names threads on Linux only")


def os_name(native_id: int) -> str:
    return Path(f"/proc/self/task/{native_id}/comm").read_text().strip()


def test_a_thread_names_itself_with_its_first_15_bytes() -> None:
    seen: list[str] = []

    def run() -> None:
        name_this_thread("fitq-a-very-long-name")
        seen.append(os_name(threading.get_native_id()))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == ["fitq-a-very-lon"]
    assert os_name(threading.get_native_id()) != "fitq-a-very-lon"  # the caller's is its own


def test_the_training_thread_is_named_fitq_train() -> None:
    assert on_fresh_stack(lambda: os_name(threading.get_native_id())) == "fitq-train"


def test_the_writer_thread_is_named_fitq_writer(migrated_backend: Backend) -> None:
    _, store = claimed(migrated_backend)
    writer = JobWriter(store, heartbeat_seconds=30)
    try:
        writer.flush()  # the thread has started and run a write
        assert writer._thread.native_id is not None
        assert os_name(writer._thread.native_id) == "fitq-writer"
    finally:
        writer.close()
