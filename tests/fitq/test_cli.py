"""The real ``fitq`` CLI as a subprocess against a real service: every exit code."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, Backend, Service, free_port
from tests.factories import digits_spec, keras_layer, keras_sequential

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("cli")
    service = Service(
        Backend("sqlite", f"sqlite:///{tmp / 'fitq.db'}", None), tmp, f"cli-{uuid.uuid4().hex[:6]}"
    )
    service.start()
    yield service
    service.stop()


def spec_file(tmp_path: Path, svc: Service, **overrides: Any) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**digits_spec(**overrides), "queue": svc.queue}))
    return path


def fitq(
    svc: Service | None, *args: str, timeout: float = 300, url: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FITQ_API_URL": url or (svc.base_url if svc else "")}
    return subprocess.run(
        [sys.executable, "-m", "fitq", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=ROOT,
    )


def test_a_passing_job_exits_0_with_every_epoch_and_a_junit_report(
    svc: Service, tmp_path: Path
) -> None:
    junit = tmp_path / "report.xml"
    out = fitq(
        svc,
        "submit",
        str(spec_file(tmp_path, svc)),
        "--set",
        "fit.epochs=4",
        "--set",
        "fit.batch_size=16",
        "--set",
        "model.params.hidden_units=[64]",
        "--follow",
        "--require",
        "val_accuracy>=0.3",
        "--require",
        "best.val_loss<5",
        "--junit",
        str(junit),
        "--download-best",
        str(tmp_path / "best"),
    )
    assert out.returncode == 0, out.stderr
    epochs = [line for line in out.stdout.splitlines() if line.startswith("Epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/4", "2/4", "3/4", "4/4"]
    assert "gate PASS: final.val_accuracy" in out.stdout

    from junitparser import JUnitXml

    suite = next(iter(JUnitXml.fromfile(str(junit))))
    assert suite.tests == 2 and suite.failures == 0
    assert {case.name for case in suite} == {"val_accuracy>=0.3", "best.val_loss<5"}
    assert list((tmp_path / "best").glob("*.keras")) == []  # no ModelCheckpoint in this spec


def test_a_failing_gate_exits_3_and_is_a_junit_failure(svc: Service, tmp_path: Path) -> None:
    junit = tmp_path / "report.xml"
    out = fitq(
        svc,
        "submit",
        str(spec_file(tmp_path, svc)),
        "--wait",
        "--require",
        "val_accuracy>=1.01",
        "--junit",
        str(junit),
    )
    assert out.returncode == 3, out.stderr
    assert "gate FAIL" in out.stdout
    from junitparser import JUnitXml

    suite = next(iter(JUnitXml.fromfile(str(junit))))
    assert suite.failures == 1


def test_forbid_overfitting_fails_an_overfitting_job_and_names_the_epoch(
    svc: Service, tmp_path: Path
) -> None:
    junit = tmp_path / "report.xml"
    out = fitq(
        svc,
        "submit",
        str(spec_file(tmp_path, svc)),
        "--set",
        "model.params.hidden_units=[512, 512]",
        "--set",
        "data.train.take=60",
        "--set",
        "data.validation.take=250",
        "--set",
        "fit.epochs=30",
        "--set",
        "fit.batch_size=4",
        "--wait",
        "--forbid",
        "overfitting",
        "--forbid",
        "divergence",
        "--junit",
        str(junit),
        "--json",
    )
    assert out.returncode == 3, out.stderr
    import json

    summary = json.loads(out.stdout)
    onset = summary["insight"]["overfitting_epoch"]
    assert onset == summary["insight"]["best_epoch"] + 1
    gates = {g["gate"]: g for g in summary["gates"]}
    assert gates["no divergence"]["passed"] is True
    assert gates["no overfitting"]["passed"] is False
    assert f"overfitting from epoch {onset}" in gates["no overfitting"]["detail"]
    from junitparser import JUnitXml

    suite = next(iter(JUnitXml.fromfile(str(junit))))
    assert suite.tests == 2 and suite.failures == 1


def test_a_failed_job_exits_1(svc: Service, tmp_path: Path) -> None:
    # Fails in training: pixels of 1.0 index past an Embedding of one row.
    bad_model = keras_sequential(
        keras_layer("Embedding", input_dim=1, output_dim=2),
        keras_layer("Flatten"),
        keras_layer("Dense", units=10, activation="softmax"),
    )
    path = spec_file(tmp_path, svc, **{"model": {"keras_config": bad_model}})
    out = fitq(svc, "submit", str(path), "--download-model", str(tmp_path / "m.keras"))
    assert out.returncode == 1, out.stderr
    assert "failed" in out.stdout and "InvalidArgumentError" in out.stdout
    assert "failed: no trained model" in out.stderr and not (tmp_path / "m.keras").exists()


def test_a_refused_spec_exits_2_with_the_field_path(svc: Service, tmp_path: Path) -> None:
    out = fitq(svc, "submit", str(spec_file(tmp_path, svc)), "--set", "fit.epochs=0")
    assert out.returncode == 2
    assert "body.fit.epochs" in out.stderr
    dry = fitq(
        svc, "submit", str(spec_file(tmp_path, svc)), "--set", "fit.batch_size=2", "--dry-run"
    )
    assert dry.returncode == 0 and "very small" in dry.stdout


def test_a_timeout_exits_4_and_can_cancel(svc: Service, tmp_path: Path) -> None:
    out = fitq(
        svc,
        "submit",
        str(spec_file(tmp_path, svc)),
        "--set",
        "fit.epochs=500",
        "--set",
        "fit.batch_size=8",
        "--wait",
        "--timeout",
        "3",
        "--cancel-on-timeout",
        "--json",
    )
    assert out.returncode == 4, out.stderr
    job_id = next(line.split()[2] for line in out.stderr.splitlines() if "fitq: job " in line)
    assert svc.wait_for(job_id, timeout=30)["status"] == "cancelled"


def test_an_unreachable_service_exits_5(tmp_path: Path) -> None:
    out = fitq(None, "jobs", "ls", url=f"http://127.0.0.1:{free_port()}", timeout=120)
    assert out.returncode == 5 and "did not answer" in out.stderr


def test_the_same_idempotency_key_gives_one_job(svc: Service, tmp_path: Path) -> None:
    key = f"ci-{uuid.uuid4().hex}"
    path = str(spec_file(tmp_path, svc))
    ids = []
    for _ in range(2):
        out = fitq(svc, "submit", path, "--idempotency-key", key, "--json")
        assert out.returncode == 0, out.stderr
        ids.append(yaml.safe_load(out.stdout)["id"])
    assert ids[0] == ids[1]
    other = fitq(svc, "submit", path, "--set", "fit.epochs=2", "--idempotency-key", key)
    assert other.returncode == 2 and key in other.stderr


def test_follow_shows_every_epoch_once_across_a_server_restart(
    svc: Service, tmp_path: Path
) -> None:
    path = str(spec_file(tmp_path, svc, **{"fit.epochs": 30, "fit.batch_size": 8}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "fitq", "submit", path, "--follow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "FITQ_API_URL": svc.base_url},
    )
    time.sleep(6)
    restarter = threading.Thread(target=svc.restart_api)
    restarter.start()
    stdout, stderr = proc.communicate(timeout=300)
    restarter.join()
    assert proc.returncode == 0, stderr
    epochs = [
        int(line.split()[1].split("/")[0])
        for line in stdout.splitlines()
        if line.startswith("Epoch ")
    ]
    assert epochs == list(range(1, 31))


def test_jobs_and_datasets_commands(svc: Service, tmp_path: Path) -> None:
    import numpy as np

    np.savez(tmp_path / "d.npz", x=np.zeros((6, 2)), y=np.zeros(6))
    up = fitq(svc, "datasets", "upload", str(tmp_path / "d.npz"), "--name", "zeros")
    assert up.returncode == 0 and "6 training samples" in up.stdout
    assert "zeros" in fitq(svc, "datasets", "ls").stdout
    submitted = fitq(svc, "submit", str(spec_file(tmp_path, svc)), "--json")
    assert submitted.returncode == 0, submitted.stderr
    listed = fitq(svc, "jobs", "ls", "--json")
    assert listed.returncode == 0 and isinstance(yaml.safe_load(listed.stdout), list)
    job_id = yaml.safe_load(listed.stdout)[0]["id"]
    for cmd in ("show", "metrics", "checkpoints", "logs"):
        assert fitq(svc, "jobs", cmd, job_id).returncode == 0, cmd
    assert fitq(svc, "jobs", "show", "nope").returncode == 2


def test_the_trained_model_comes_down_with_submit_and_jobs_model(
    svc: Service, tmp_path: Path
) -> None:
    import hashlib
    import json
    import tarfile

    path = spec_file(tmp_path, svc, **{"fit.epochs": 2, "output": {"export": True}})
    target = tmp_path / "out" / "trained.keras"
    out = fitq(svc, "submit", str(path), "--download-model", str(target), "--json")
    assert out.returncode == 0, out.stderr
    job = json.loads(out.stdout)
    assert f"fitq: trained model saved to {target}" in out.stderr
    assert hashlib.sha256(target.read_bytes()).hexdigest() == job["final_model"]["sha256"]

    shown = fitq(svc, "jobs", "model", job["id"], "-o", str(tmp_path), "--json")
    assert shown.returncode == 0, shown.stderr
    saved = json.loads(shown.stdout)
    assert saved["path"] == str(tmp_path / f"model-{job['id']}.keras")
    assert Path(saved["path"]).read_bytes() == target.read_bytes()
    assert saved["size_bytes"] == job["final_model"]["size_bytes"]

    tarball = tmp_path / "sm.tar.gz"
    exported = fitq(svc, "jobs", "model", job["id"], "--format", "savedmodel", "-o", str(tarball))
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.strip() == f"saved {tarball} ({tarball.stat().st_size} bytes)"
    with tarfile.open(tarball) as tar:
        assert f"savedmodel-{job['id']}/saved_model.pb" in tar.getnames()

    plain = fitq(svc, "submit", str(spec_file(tmp_path, svc, **{"fit.epochs": 1})), "--json")
    plain_id = json.loads(plain.stdout)["id"]
    assert svc.wait_for(plain_id, timeout=120)["status"] == "succeeded"
    refused = fitq(svc, "jobs", "model", plain_id, "--format", "savedmodel", "-o", str(tmp_path))
    assert refused.returncode == 2
    assert "did not ask for one (output: {export: true})" in refused.stderr
    assert not list(tmp_path.glob("savedmodel-*")) and not list(tmp_path.glob(".*partial"))


def test_models_commands_and_the_lineage_of_a_warm_start(svc: Service, tmp_path: Path) -> None:
    keras = pytest.importorskip("keras")
    keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    ).save(tmp_path / "mine.keras")
    up = fitq(svc, "models", "upload", str(tmp_path / "mine.keras"), "--name", "mine", "--json")
    assert up.returncode == 0, up.stderr
    model_id = yaml.safe_load(up.stdout)["id"]
    listed = fitq(svc, "models", "ls").stdout
    assert model_id in listed and "650 weights" in listed and "mine" in listed

    checkpoint = {"type": "ModelCheckpoint", "filepath": "best.keras", "monitor": "val_loss"}
    parent_spec = spec_file(
        tmp_path, svc, model={"uploaded": model_id}, callbacks=[checkpoint], **{"fit.epochs": 1}
    )
    parent = fitq(svc, "submit", str(parent_spec), "--wait", "--json")
    assert parent.returncode == 0, parent.stderr
    parent_id = yaml.safe_load(parent.stdout)["id"]
    child_spec = spec_file(tmp_path, svc, model={"from_job": parent_id}, **{"fit.epochs": 1})
    child = fitq(svc, "submit", str(child_spec), "--wait", "--json")
    assert child.returncode == 0, child.stderr
    child_id = yaml.safe_load(child.stdout)["id"]
    line = next(x for x in fitq(svc, "jobs", "ls").stdout.splitlines() if x.startswith(child_id))
    assert line.endswith(f"(warm start from {parent_id})")
    shown = yaml.safe_load(fitq(svc, "jobs", "show", child_id).stdout)
    assert shown["parent_job_id"] == parent_id and shown["status"] == "succeeded"
