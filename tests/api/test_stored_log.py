"""A job on another host: the event stream reads its log from the S3-compatible store.

The log's size is read at most once per ``FITQ_LIVE_SYNC_SECONDS`` for every stream of
the job; a size older than what a client already has must not send the log again from
its start, the read once the job has ended must see its last lines, and a store that
does not answer gives nothing (the stream asks again) rather than ending the stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from api.routes import events
from api.routes.events import _Cursor, _log_since
from core.settings import Settings
from storage.artifacts import artifact_store
from tests.conftest import S3Server


@pytest.fixture
def settings(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    url = f"s3://{s3_server.new_bucket()}/logs"
    monkeypatch.setattr(events, "_STORED_SIZES", {})
    yield Settings(data_dir=tmp_path / "api", artifacts_url=url, live_sync_seconds=60)


def upload(settings: Settings, tmp_path: Path, text: str) -> None:
    written = tmp_path / "worker-train.log"
    written.write_text(text)
    artifact_store(settings).put_file(written, "jobs/j1/train.log")


def test_a_remote_log_is_read_in_steps_from_the_store(settings: Settings, tmp_path: Path) -> None:
    upload(settings, tmp_path, "a" * 100)
    cur = _Cursor(epoch=0, log_offset=0)
    assert _log_since(settings, "j1", cur) == "a" * 100 and cur.log_offset == 100
    upload(settings, tmp_path, "a" * 100 + "b" * 50)
    # The size read above still holds for the interval: nothing new yet...
    assert _log_since(settings, "j1", cur) == "" and cur.log_offset == 100
    # ...but the read once the job has ended asks the store.
    assert _log_since(settings, "j1", cur, fresh=True) == "b" * 50 and cur.log_offset == 150


def test_a_client_ahead_of_the_kept_size_is_not_sent_the_log_again(
    settings: Settings, tmp_path: Path
) -> None:
    upload(settings, tmp_path, "a" * 100)
    assert _log_since(settings, "j1", _Cursor(epoch=0, log_offset=0)) == "a" * 100
    upload(settings, tmp_path, "a" * 100 + "b" * 50 + "c" * 10)
    # A client that read 150 bytes from /logs (fresh) follows from there.
    cur = _Cursor(epoch=0, log_offset=150)
    assert _log_since(settings, "j1", cur) == "c" * 10 and cur.log_offset == 160
    # A new attempt's shorter log, on another host, starts again from 0 once the kept
    # size has expired.
    upload(settings, tmp_path, "new attempt\n")
    assert _log_since(settings, "j1", cur) == "" and cur.log_offset == 160
    events._STORED_SIZES.clear()  # the interval has passed
    assert _log_since(settings, "j1", cur) == "new attempt\n" and cur.log_offset == 12


def test_a_store_that_does_not_answer_gives_nothing_this_time(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    away = settings.model_copy(update={"artifacts_url": "s3://away/logs"})
    cur = _Cursor(epoch=0, log_offset=0)
    assert _log_since(away, "j1", cur) == "" and cur.log_offset == 0
