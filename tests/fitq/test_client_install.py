"""The client commands run on the base install, and refuse bad input with exit 2.

``fitq submit``, ``fitq jobs ...`` and ``fitq datasets ...`` are what a CI step
installs without the worker extra. A fresh interpreter in which TensorFlow, Keras,
scikit-learn, TensorBoard and the worker package cannot be imported runs them
against a real API, and then shows which modules they loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, Service, free_port
from tests.factories import digits_spec

WORKER_EXTRA = ("tensorflow", "keras", "sklearn", "tensorboard", "worker")
SERVICE_ONLY = ("api", "models", "celery", "sqlalchemy", "uvicorn", "alembic")

RUN_WITHOUT_THE_WORKER_EXTRA = """
import importlib.abc, json, sys

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"{{name}} is not installed")
        return None

sys.meta_path.insert(0, NotInstalled())
from fitq.cli import main

codes = {{" ".join(argv): main(argv) for argv in {commands!r}}}
loaded = sorted({{m.split(".")[0] for m in sys.modules}})
with open({report!r}, "w") as f:
    json.dump({{"codes": codes, "loaded": loaded}}, f)
"""


def test_client_commands_run_without_the_worker_extra(api_only: Service, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**digits_spec(), "queue": api_only.queue}))
    commands = [
        ["--help"],
        ["jobs", "--help"],
        ["submit", "--help"],
        ["jobs", "model", "--help"],
        ["jobs", "evaluate", "--help"],
        ["jobs", "predict", "--help"],
        ["submit", str(spec), "--json"],
        ["submit", str(spec), "--dry-run"],
        ["jobs", "ls", "--queue", api_only.queue],
        ["jobs", "ls", "--parent", "0" * 32],
        ["datasets", "ls"],
    ]
    report = tmp_path / "report.json"
    code = RUN_WITHOUT_THE_WORKER_EXTRA.format(
        blocked=WORKER_EXTRA, commands=commands, report=str(report)
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "FITQ_API_URL": api_only.base_url},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(report.read_text())
    assert result["codes"] == {" ".join(argv): 0 for argv in commands}, out.stderr[-3000:]
    assert "submitted job" not in out.stdout  # --json
    (job,) = api_only.client.get("/v1/jobs", params={"queue": api_only.queue}).json()["items"]
    assert job["id"] in out.stdout and job["status"] == "queued"
    loaded = set(result["loaded"])
    assert not loaded & set(WORKER_EXTRA)
    assert not loaded & set(SERVICE_ONLY)


def fitq(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    # Nothing answers at this address: whatever is refused is refused before asking.
    env = {**os.environ, "FITQ_API_URL": f"http://127.0.0.1:{free_port()}"}
    return subprocess.run(
        [sys.executable, "-m", "fitq", *args],
        capture_output=True,
        text=True,
        env=env,
        input=stdin,
        timeout=60,
        cwd=ROOT,
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["submit", "no-such-spec.yaml"], "no-such-spec.yaml"),
        (["submit", "-", "--require", "val_accuracy>>0.9"], "cannot read the gate"),
        (["submit", "-", "--set", "fit.epochs"], "cannot read --set 'fit.epochs'"),
        (["submit", "-", "--forbid", "boredom"], "'boredom'"),
        (["submit", "-", "--timeout", "soon"], "'soon'"),
        (["submit", "-", "--no-such-flag"], "--no-such-flag"),
        (["jobs", "ls", "--limit", "many"], "'many'"),
        (["jobs", "model", "ID", "--format", "h5"], "'h5' is not one of 'keras', 'savedmodel'"),
        (["jobs", "model"], "Missing argument 'ID'"),
        (["jobs"], "Missing command"),
        ([], "Missing command"),
    ],
)
def test_bad_input_exits_2_and_says_what_was_wrong(args: list[str], says: str) -> None:
    out = fitq(*args, stdin=yaml.safe_dump(digits_spec()))
    assert out.returncode == 2, out.stdout + out.stderr
    assert says in out.stderr
    assert "Traceback" not in out.stderr


def test_a_spec_that_is_no_mapping_exits_2() -> None:
    out = fitq("submit", "-", stdin="- just\n- a list\n")
    assert out.returncode == 2 and "does not hold a job spec" in out.stderr


def test_help_exits_0_with_the_exit_codes() -> None:
    out = fitq("submit", "-h")
    assert out.returncode == 0
    assert "5  the service could not be reached" in out.stdout
    assert "--idempotency-key KEY" in out.stdout
