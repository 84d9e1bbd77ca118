"""The dashboard in real headless Chromium against a running API and worker.

Needs Debian's ``chromium`` package (``apt-get install chromium``); the tests skip
without it, and fail in CI (``CI=true``), where ``.ci/run`` installs it.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Service, make_backend
from tests.factories import digits_spec, nan_loss_spec

playwright_sync = pytest.importorskip("playwright.sync_api")

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.browser]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def chromium_path() -> str:
    found = os.environ.get("FITQ_CHROMIUM") or shutil.which("chromium")
    if found:
        return found
    reason = "Chromium not found: install Debian's chromium package (apt-get install chromium)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = chromium_path()
    with playwright_sync.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert not errors, f"the page raised: {errors}"


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("dash")
    service = Service(make_backend("sqlite", tmp, "fitq_dash"), tmp, f"dash-{uuid.uuid4().hex[:6]}")
    service.start()
    yield service
    service.stop()


def slow_spec(epochs: int, **overrides: Any) -> dict[str, Any]:
    """Epochs of about a second on this machine: long enough to watch."""
    return digits_spec(
        **{"fit.epochs": epochs, "fit.batch_size": 2, "data.train.take": 600, **overrides}
    )


def text_of(page: Any, selector: str) -> str:
    return str(page.locator(selector).inner_text())


def wait_for_change(page: Any, selector: str, before: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = text_of(page, selector)
        if now != before:
            return now
        page.wait_for_timeout(100)
    raise AssertionError(f"{selector} stayed {before!r} for {timeout}s")


def test_list_shows_progress_advancing_without_a_reload(svc: Service, page: Any) -> None:
    job = svc.submit(slow_spec(40, name="watch-list"))
    svc.wait_for(job["id"], ("running",), timeout=60)
    page.goto(svc.base_url + "/")
    page.wait_for_selector("body[data-ready=list]")
    page.evaluate("window.sameDocument = 'yes'")
    cell = f"tr[data-job='{job['id']}'] td.progress"
    page.wait_for_function(
        f"document.querySelector(\"{cell}\")?.innerText.includes('step')", timeout=30_000
    )
    seen = [text_of(page, cell)]
    for _ in range(3):
        seen.append(wait_for_change(page, cell, seen[-1], timeout=10))
    assert all("epoch" in s for s in seen), seen
    assert page.evaluate("window.sameDocument") == "yes", "the page reloaded"
    status = text_of(page, f"tr[data-job='{job['id']}'] .status")
    assert status == "Running"
    svc.client.post(f"/v1/jobs/{job['id']}/cancel")
    svc.wait_for(job["id"])


def test_job_page_draws_curves_that_grow_while_training(svc: Service, page: Any) -> None:
    job = svc.submit(slow_spec(40, name="watch-curves"))
    page.goto(f"{svc.base_url}/#/jobs/{job['id']}")
    page.wait_for_selector("body[data-ready=job]")
    page.wait_for_selector("figure[data-metric=loss] path[data-series=loss]", timeout=60_000)
    page.evaluate("window.sameDocument = 'yes'")
    loss = page.locator("figure[data-metric=loss] path[data-series=loss]")
    first = int(loss.get_attribute("data-count"))
    page.wait_for_function(
        "n => Number(document.querySelector("
        "'figure[data-metric=loss] path[data-series=loss]').dataset.count) > n",
        arg=first,
        timeout=20_000,
    )
    assert int(loss.get_attribute("data-count")) > first
    assert page.locator("figure[data-metric=loss] path[data-series=val_loss]").count() == 1
    assert page.locator("figure[data-metric=accuracy] svg").count() == 1
    assert page.evaluate("window.sameDocument") == "yes", "the page reloaded"
    svc.client.post(f"/v1/jobs/{job['id']}/cancel")
    svc.wait_for(job["id"])


def test_a_new_epoch_reaches_the_page_within_a_second(svc: Service, page: Any) -> None:
    job = svc.submit(slow_spec(40, name="latency"))
    page.goto(f"{svc.base_url}/#/jobs/{job['id']}")
    page.wait_for_selector("figure[data-metric=loss] path[data-series=loss]", timeout=60_000)
    delays = []
    for _ in range(3):
        count = int(page.locator("path[data-series=loss]").get_attribute("data-count"))
        page.wait_for_function(
            "n => Number(document.querySelector('path[data-series=loss]').dataset.count) > n",
            arg=count,
            timeout=20_000,
        )
        seen_at = dt.datetime.now(dt.UTC)
        epoch = svc.metrics(job["id"])[count]
        recorded = dt.datetime.fromisoformat(epoch["recorded_at"])
        delays.append((seen_at - recorded).total_seconds())
    svc.client.post(f"/v1/jobs/{job['id']}/cancel")
    svc.wait_for(job["id"])
    assert max(delays) < 1.0, f"seconds from an epoch's row to the page: {delays}"


def test_cancel_from_the_page(svc: Service, page: Any) -> None:
    job = svc.submit(slow_spec(100, name="cancel-me"))
    svc.wait_for(job["id"], ("running",), timeout=60)
    page.goto(f"{svc.base_url}/#/jobs/{job['id']}")
    page.wait_for_selector("#cancel")
    dialogs: list[str] = []

    def accept(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.click("#cancel")
    page.wait_for_function(
        "document.querySelector('#job-status')?.innerText.startsWith('Cancelled')",
        timeout=20_000,
    )
    assert dialogs and "cancel-me" in dialogs[0]
    assert svc.job(job["id"])["status"] == "cancelled"
    assert page.locator("#cancel").count() == 0


def test_declining_the_confirmation_leaves_the_job_running(svc: Service, page: Any) -> None:
    job = svc.submit(slow_spec(100, name="keep-me"))
    svc.wait_for(job["id"], ("running",), timeout=60)
    page.goto(f"{svc.base_url}/#/jobs/{job['id']}")
    page.wait_for_selector("#cancel")
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("#cancel")
    page.wait_for_timeout(1500)
    assert svc.job(job["id"])["status"] == "running"
    assert svc.job(job["id"])["cancel_requested"] is False
    svc.client.post(f"/v1/jobs/{job['id']}/cancel")
    svc.wait_for(job["id"])


def test_overfitting_job_page_shows_markers_findings_and_checkpoints(
    svc: Service, page: Any
) -> None:
    spec = digits_spec(
        **{
            "name": "overfit-demo",
            "model.params.hidden_units": [512, 512],
            "data.train.take": 60,
            "data.validation.take": 250,
            "fit.epochs": 40,
            "fit.batch_size": 4,
            "callbacks": [
                {
                    "type": "ModelCheckpoint",
                    "filepath": "epoch{epoch:02d}.keras",
                    "monitor": "val_loss",
                    "save_best_only": True,
                }
            ],
        }
    )
    job = svc.wait_for(svc.submit(spec)["id"], timeout=180)
    assert job["status"] == "succeeded", job
    onset = job["insight"]["overfitting_epoch"]
    assert onset is not None, job["insight"]
    page.goto(f"{svc.base_url}/#/jobs/{job['id']}")
    page.wait_for_selector("body[data-ready=job]")
    chart = "figure[data-metric=loss]"
    assert page.locator(f"{chart} line[data-marker=over]").get_attribute("data-epoch") == str(onset)
    best = job["insight"]["best_epoch"]
    assert page.locator(f"{chart} line[data-marker=best]").get_attribute("data-epoch") == str(best)
    finding = page.locator("#insight li[data-kind=overfitting]")
    assert finding.get_attribute("data-epoch") == str(onset)
    assert "EarlyStopping" in finding.inner_text()
    assert page.locator("#checkpoints .best-mark").count() == 1
    link = page.locator("#checkpoints a").last
    with page.expect_download() as download:
        link.click()
    assert Path(download.value.path()).stat().st_size > 0
    assert text_of(page, "#job-status") == "Succeeded"
    assert "Epoch 40/40" in text_of(page, "#log")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "job-page.png"), full_page=True)

    # The list with this module's jobs so far, and one training now.
    running = svc.submit(slow_spec(40, name="training-now"))
    svc.wait_for(running["id"], ("running",), timeout=60)
    page.goto(svc.base_url + "/")
    cell = f"tr[data-job='{running['id']}'] td.progress"
    page.wait_for_function(
        f"document.querySelector(\"{cell}\")?.innerText.includes('step')", timeout=30_000
    )
    page.screenshot(path=str(SCREENSHOTS / "jobs-list.png"))
    svc.client.post(f"/v1/jobs/{running['id']}/cancel")
    svc.wait_for(running["id"])


def test_a_warm_start_links_to_its_parent_job(svc: Service, page: Any) -> None:
    checkpoint = {"type": "ModelCheckpoint", "filepath": "best.keras", "monitor": "val_loss"}
    parent = svc.wait_for(
        svc.submit(digits_spec(name="parent", callbacks=[checkpoint], **{"fit.epochs": 1}))["id"]
    )
    assert parent["status"] == "succeeded", parent
    child = svc.submit(
        digits_spec(name="child", model={"from_job": parent["id"]}, **{"fit.epochs": 1})
    )
    page.goto(f"{svc.base_url}/#/jobs/{child['id']}")
    page.wait_for_selector("body[data-ready=job]")
    assert text_of(page, "#job-source").endswith(
        f"warm start from {parent['id']}, checkpoint {child['spec']['model']['checkpoint']}"
    )
    page.locator("#job-parent").click()
    page.wait_for_function(
        f"document.querySelector('#job-id')?.innerText.includes('{parent['id']}')",
        timeout=10_000,
    )
    assert "builtin mlp" in text_of(page, "#job-source")
    svc.wait_for(child["id"])


def test_a_failed_job_page_shows_its_error_and_the_divergence(svc: Service, page: Any) -> None:
    spec = nan_loss_spec(name="diverges")
    job = svc.wait_for(svc.submit(spec)["id"], timeout=120)
    assert job["status"] == "failed" and job["error"]["type"] == "NaNLoss"
    page.goto(f"{svc.base_url}/#/jobs/{job['id']}")
    page.wait_for_selector("body[data-ready=job]")
    assert text_of(page, "#job-status") == "Failed (nan loss)"
    error = text_of(page, "#error")
    assert "NaNLoss" in error and job["error"]["message"] in error
    assert page.locator("#insight li[data-kind=divergence]").count() == 1
    assert page.locator("#cancel").count() == 0


def test_the_job_page_links_the_trained_model_with_its_size(svc: Service, page: Any) -> None:
    import hashlib
    import tarfile

    spec = digits_spec(**{"fit.epochs": 1, "output": {"export": True}})
    job = svc.wait_for(svc.submit(spec)["id"], timeout=120)
    assert job["status"] == "succeeded", job["error"]
    page.goto(f"{svc.base_url}/#/jobs/{job['id']}")
    page.wait_for_selector("body[data-ready=job]")
    kib = job["final_model"]["size_bytes"] / 1024
    assert text_of(page, "#job-model") == (
        f"Trained model\nmodel.keras ({kib:.1f} KiB) · SavedModel (.tar.gz)"
    )
    with page.expect_download() as download:
        page.locator("#job-model a", has_text="model.keras").click()
    assert download.value.suggested_filename == f"model-{job['id']}.keras"
    data = Path(download.value.path()).read_bytes()
    assert hashlib.sha256(data).hexdigest() == job["final_model"]["sha256"]
    with page.expect_download() as download:
        page.locator("#job-model a", has_text="SavedModel").click()
    assert download.value.suggested_filename == f"savedmodel-{job['id']}.tar.gz"
    with tarfile.open(download.value.path()) as tar:
        assert f"savedmodel-{job['id']}/saved_model.pb" in tar.getnames()

    running = svc.submit(slow_spec(40))
    svc.wait_for(running["id"], ("running",), timeout=60)
    page.goto(f"{svc.base_url}/#/jobs/{running['id']}")
    page.wait_for_selector("body[data-ready=job]")
    assert text_of(page, "#job-model") == "Trained model\nsaved when the job succeeds"
    svc.client.post(f"/v1/jobs/{running['id']}/cancel")
    svc.wait_for(running["id"])


def _bulk_insert(svc: Service, jobs: int, epochs: int) -> str:
    """Many stored jobs and one job with many epochs, written straight to the database."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from models.tables import EpochMetric, Job

    engine = create_engine(svc.backend.database_url)
    spec = digits_spec(**{"fit.epochs": epochs, "queue": "bulk"})
    now = dt.datetime.now(dt.UTC)
    big = uuid.uuid4().hex
    with Session(engine) as s:
        for i in range(jobs):
            s.add(
                Job(
                    id=big if i == 0 else uuid.uuid4().hex,
                    name=f"bulk-{i}",
                    queue="bulk",
                    status="succeeded",
                    stop_reason="completed",
                    spec=spec,
                    spec_hash="bulk",
                    warnings=[],
                    created_at=now - dt.timedelta(seconds=i),
                    updated_at=now,
                    started_at=now - dt.timedelta(seconds=i + 60),
                    finished_at=now - dt.timedelta(seconds=i),
                    dispatched_at=now,
                    attempts=1,
                    cancel_requested=False,
                    progress_epoch=epochs,
                    latest_metrics={"loss": 0.1, "val_loss": 0.2},
                )
            )
        s.flush()
        for e in range(1, epochs + 1):
            s.add(
                EpochMetric(
                    job_id=big,
                    epoch=e,
                    attempt=1,
                    metrics={
                        "loss": 2.0 / e,
                        "accuracy": 1 - 1.0 / (e + 1),
                        "val_loss": 2.0 / e + (e / 1000) ** 2,
                        "val_accuracy": 0.9 - 1.0 / (e + 10),
                    },
                    lr=0.001,
                    duration_s=0.1,
                    recorded_at=now,
                )
            )
        s.commit()
    engine.dispose()
    return big


def test_thousand_epochs_and_thousand_jobs_stay_responsive(svc: Service, page: Any) -> None:
    big = _bulk_insert(svc, jobs=1000, epochs=1000)
    ready = {}
    for label, url, kind in (
        ("job with 1,000 epochs", f"{svc.base_url}/#/jobs/{big}", "job"),
        ("list of 1,000 jobs", f"{svc.base_url}/#/?queue=bulk", "list"),
    ):
        times = []
        for _ in range(3):
            page.goto("about:blank")
            page.goto(url)
            page.wait_for_selector(f"body[data-ready={kind}]", timeout=10_000)
            times.append(page.evaluate("window.fitqReadyAt"))
        ready[label] = min(times)
        print(f"\n{label}: page ready after {[round(t) for t in times]} ms")
    page.goto(f"{svc.base_url}/#/jobs/{big}")
    page.wait_for_selector("body[data-ready=job]")
    points = page.locator("figure[data-metric=loss] svg").get_attribute("data-points")
    assert points == "2000"
    page.goto(f"{svc.base_url}/#/?queue=bulk")
    page.wait_for_selector("body[data-ready=list]")
    assert page.locator("#jobs tbody tr").count() == 50
    started = time.monotonic()
    for _ in range(3):
        first = page.locator("#jobs tbody tr").first.get_attribute("data-job")
        page.click("text=Older →")
        page.wait_for_function(
            "id => document.querySelector('#jobs tbody tr').dataset.job !== id", arg=first
        )
    per_page = (time.monotonic() - started) / 3
    print(f"next page: {per_page * 1000:.0f} ms")
    assert all(ms < 1000 for ms in ready.values()), ready
    assert per_page < 1.0


def test_dashboard_with_tokens(tmp_path: Path, browser: Any) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from api.tokens import create_token
    from migrations.migrate import upgrade

    service = Service(
        make_backend("sqlite", tmp_path, "fitq_dash_auth"),
        tmp_path,
        "auth",
        extra_env={"FITQ_AUTH": "on"},
    )
    service.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(service.backend.database_url)
    engine = create_engine(service.backend.database_url)
    with Session(engine) as s:
        token = create_token(s, "alice")
    engine.dispose()
    import httpx

    from tests.conftest import free_port

    service.port = free_port()
    service.base_url = f"http://127.0.0.1:{service.port}"
    service.client = httpx.Client(
        base_url=service.base_url, timeout=30, headers={"Authorization": f"Bearer {token}"}
    )
    service.start_process("api", "api", "--port", str(service.port))
    try:
        service.wait_until(lambda: service._ready(), 60, "the API")
        job = service.submit(digits_spec(name="alice-job"))
        context = browser.new_context()
        pg = context.new_page()
        pg.goto(service.base_url + "/")
        pg.wait_for_selector("#token-form:not([hidden])")
        assert pg.locator("#jobs tbody tr").count() == 0
        pg.fill("#token-input", token)
        pg.click("#token-form button")
        pg.wait_for_selector(f"tr[data-job='{job['id']}']")
        pg.click(f"tr[data-job='{job['id']}'] a")
        pg.wait_for_selector("body[data-ready=job]")
        assert text_of(pg, "#job-status") == "Queued"
        pg.once("dialog", lambda dialog: dialog.accept())
        pg.click("#cancel")
        pg.wait_for_function(
            "document.querySelector('#job-status')?.innerText.startsWith('Cancelled')"
        )
        context.close()
    finally:
        service.stop()
