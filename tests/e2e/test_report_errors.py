"""A report the worker cannot write for a reason other than the database (here, an
epoch's backup) fails the job at once with that error and frees the worker, through a
real API and worker."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import Service
from tests.factories import digits_spec

pytestmark = pytest.mark.e2e


def test_a_backup_that_cannot_be_written_fails_the_job_and_the_worker_goes_on(
    service: Service,
) -> None:
    job = service.submit(digits_spec(**{"fit.epochs": 3}))
    # A file where the job's backup folder goes, in place long before the first epoch
    # ends (the worker has yet to start a process, load and build).
    job_dir = service.data_dir / "artifacts" / "jobs" / job["id"]
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "backup").write_text("in the way")

    done = service.wait_for(job["id"], timeout=45)
    assert (done["status"], done["stop_reason"]) == ("failed", "error"), done
    assert done["error"]["type"] == "FileExistsError"
    assert "backup" in done["error"]["message"]
    # No epoch is recorded without its backup.
    assert service.metrics(job["id"]) == []
    log = service.client.get(f"/v1/jobs/{job['id']}/logs").text
    assert "fitq: succeeded" not in log, log
    match = re.search(r"\(pid (\d+)\)$", log, flags=re.M)
    assert match, log
    pid = int(match.group(1))
    service.wait_until(lambda: not Path(f"/proc/{pid}").exists(), 30, f"pool process {pid} to exit")

    nxt = service.submit(digits_spec(**{"fit.epochs": 1}))
    assert service.wait_for(nxt["id"], timeout=120)["status"] == "succeeded"
    assert service.job(job["id"])["attempts"] == 1
