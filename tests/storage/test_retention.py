"""Checkpoint retention and artifact deletion on a real database (SQLite and
PostgreSQL) with real files: which checkpoints a rule keeps, what ``after_end`` and
``delete_artifacts`` remove, and the rows and events that say so."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from core.db import make_engine, make_session_factory
from core.errors import Conflict
from core.settings import Settings
from migrations.migrate import upgrade
from models.spec import JobSpec, RetentionSpec
from models.tables import Checkpoint, Job, JobEvent, utcnow
from storage.artifacts import artifact_store, job_key
from storage.removal import remove_artifacts, size_of
from storage.retention import after_end, default_retention, delete_artifacts, kept
from tests.conftest import Backend, S3Server, make_backend
from tests.dispatcher.test_dispatch import add_job
from tests.factories import digits_spec


def rows(values: list[float | None], monitor: str = "val_loss") -> list[Checkpoint]:
    return [
        Checkpoint(id=i + 1, epoch=i + 1, path=f"c/{i}", monitor=monitor, value=v)
        for i, v in enumerate(values)
    ]


def test_keep_best_ranks_by_the_monitors_direction_and_keep_last_by_epoch() -> None:
    losses = rows([0.9, 0.5, 0.7, 0.5, 0.8, None])
    rule = RetentionSpec(keep_best=2, keep_last=1)
    # 0.5 twice: epochs 2 and 4 (the earlier first); the newest is epoch 6.
    assert kept(losses, rule, {"val_loss": "min"}) == {2, 4, 6}
    assert kept(losses, RetentionSpec(keep_best=1), {"val_loss": "min"}) == {2}
    accuracy = rows([0.1, 0.9, 0.3, 0.9], "val_accuracy")
    assert kept(accuracy, RetentionSpec(keep_best=1), {"val_accuracy": "max"}) == {2}
    assert kept(accuracy, RetentionSpec(keep_last=2), {}) == {3, 4}
    # A monitor whose direction is unknown ranks nothing; keep_all keeps everything.
    assert kept(losses, RetentionSpec(keep_best=3), {}) == set()
    assert kept(losses, RetentionSpec(keep_all=True), {}) == {1, 2, 3, 4, 5, 6}


def test_nan_values_are_never_among_the_best() -> None:
    assert kept(
        rows([float("nan"), 0.4, 0.2]), RetentionSpec(keep_best=2), {"val_loss": "min"}
    ) == {
        2,
        3,
    }


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ({}, "expected keep_best, keep_last (or both), or keep_all"),
        ({"keep_all": True, "keep_best": 1}, "give either keep_all or keep_best/keep_last"),
        ({"keep_best": -1}, "greater than or equal to 0"),
        ({"keep_last": 1.0}, "valid integer"),
        ({"keep_first": 1}, "Extra inputs are not permitted"),
    ],
)
def test_a_retention_that_says_nothing_clear_is_refused(raw: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        JobSpec.model_validate(digits_spec(**{"output": {"retention": raw}}))


def test_the_server_default_counts_a_missing_half_as_zero() -> None:
    assert default_retention(Settings()) is None
    rule = default_retention(Settings(keep_last_checkpoints=2))
    assert rule == RetentionSpec(keep_best=0, keep_last=2)


def finished_job(
    factory: sessionmaker[Session], settings: Settings, retention: dict[str, Any] | None
) -> tuple[str, Path]:
    """A succeeded job with five checkpoints on disk (val_loss .5 .3 .4 .2 .6), a
    backup folder, a model, TensorBoard files and a log, as a worker leaves them."""
    job_id = add_job(factory, "succeeded")
    spec = digits_spec(
        seed=1, callbacks=[{"type": "ModelCheckpoint", "filepath": "e{epoch}.keras"}]
    )
    if retention is not None:
        spec["output"] = {"retention": retention}
    job_dir = settings.job_dir(job_id)
    for sub in ("checkpoints", "backup", "tensorboard/train"):
        (job_dir / sub).mkdir(parents=True)
    (job_dir / "backup" / "epoch-000005.bin").write_bytes(b"b" * 700)
    (job_dir / "tensorboard" / "train" / "events.out").write_bytes(b"t" * 300)
    (job_dir / "model.keras").write_bytes(b"m" * 500)
    (job_dir / "train.log").write_text("Epoch 1/5\n")
    with factory() as s, s.begin():
        s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(spec=spec, stop_reason="completed", finished_at=utcnow(), model_size_bytes=500)
        )
        for epoch, value in enumerate([0.5, 0.3, 0.4, 0.2, 0.6], start=1):
            rel = f"checkpoints/e{epoch}.keras"
            (job_dir / rel).write_bytes(b"c" * (100 + epoch))
            s.add(
                Checkpoint(
                    job_id=job_id,
                    epoch=epoch,
                    path=rel,
                    monitor="val_loss",
                    value=value,
                    is_best=epoch == 4,
                    size_bytes=100 + epoch,
                )
            )
    return job_id, job_dir


def checkpoints(factory: sessionmaker[Session], job_id: str) -> list[Checkpoint]:
    with factory() as s:
        return list(
            s.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id).order_by("epoch"))
        )


def events(factory: sessionmaker[Session], job_id: str) -> list[JobEvent]:
    with factory() as s:
        return list(s.scalars(select(JobEvent).where(JobEvent.job_id == job_id)))


def test_after_end_keeps_what_the_rule_says_and_marks_the_rest(
    migrated_backend: Backend, tmp_path: Path
) -> None:
    factory = make_session_factory(make_engine(migrated_backend.database_url))
    settings = Settings(data_dir=tmp_path)
    job_id, job_dir = finished_job(factory, settings, {"keep_best": 1, "keep_last": 1})

    with factory() as s:
        done = after_end(s, settings, job_id)
    assert (done.checkpoints, done.bytes) == (3, 101 + 102 + 103 + 700)
    assert sorted(p.name for p in (job_dir / "checkpoints").iterdir()) == ["e4.keras", "e5.keras"]
    assert not (job_dir / "backup").exists()
    assert (job_dir / "model.keras").is_file() and (job_dir / "tensorboard").is_dir()
    marked = {
        c.epoch: (c.removed_reason, c.removed_at is not None) for c in checkpoints(factory, job_id)
    }
    assert marked == {
        1: ("retention", True),
        2: ("retention", True),
        3: ("retention", True),
        4: (None, False),
        5: (None, False),
    }
    [event] = [e for e in events(factory, job_id) if e.kind == "retention"]
    assert event.message == (
        "removed 3 checkpoint(s) of epochs 1, 2, 3 (306 bytes) by output.retention "
        "{'keep_best': 1, 'keep_last': 1}; removed the resume backups (700 bytes)"
    )
    # Once is enough: a second call finds nothing more to remove and says nothing.
    with factory() as s:
        assert after_end(s, settings, job_id).checkpoints == 0
    assert len([e for e in events(factory, job_id) if e.kind == "retention"]) == 1


def test_without_retention_only_the_backups_go_and_a_running_job_is_left_alone(
    migrated_backend: Backend, tmp_path: Path
) -> None:
    factory = make_session_factory(make_engine(migrated_backend.database_url))
    settings = Settings(data_dir=tmp_path)
    job_id, job_dir = finished_job(factory, settings, None)
    with factory() as s:
        assert after_end(s, settings, job_id).checkpoints == 0
    assert len(list((job_dir / "checkpoints").iterdir())) == 5
    assert not (job_dir / "backup").exists()
    assert all(c.removed_at is None for c in checkpoints(factory, job_id))

    running, running_dir = finished_job(factory, settings, {"keep_last": 1})
    with factory() as s, s.begin():
        s.execute(update(Job).where(Job.id == running).values(status="running"))
    with factory() as s:
        assert after_end(s, settings, running).checkpoints == 0
    assert (running_dir / "backup").is_dir()
    assert len(list((running_dir / "checkpoints").iterdir())) == 5


def test_delete_artifacts_removes_all_but_the_log_and_marks_every_row(
    migrated_backend: Backend, tmp_path: Path
) -> None:
    factory = make_session_factory(make_engine(migrated_backend.database_url))
    settings = Settings(data_dir=tmp_path)
    job_id, job_dir = finished_job(factory, settings, {"keep_last": 1})
    with factory() as s:
        after_end(s, settings, job_id)
    left = size_of(job_dir) - size_of(job_dir / "train.log")
    with factory() as s:
        job = s.get(Job, job_id)
        assert job is not None
        done = delete_artifacts(s, settings, job)
    assert (done.checkpoints, done.bytes) == (1, left)
    assert [p.name for p in job_dir.iterdir()] == ["train.log"]
    reasons = [c.removed_reason for c in checkpoints(factory, job_id)]
    assert reasons == ["retention"] * 4 + ["deleted"]
    with factory() as s:
        job = s.get(Job, job_id)
        assert job is not None and job.artifacts_removed_at is not None
        s.execute(update(Job).where(Job.id == job_id).values(status="running"))
        s.commit()
        with pytest.raises(Conflict, match="is running; its artifacts can be deleted once"):
            delete_artifacts(s, settings, job)


def test_on_s3_retention_and_deletion_remove_the_objects_and_the_local_copies(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With a bucket as the store, ``after_end`` deletes the objects the rule does not
    keep and the backups, from the bucket and from this host's folder (a worker's
    copies); ``delete_artifacts`` leaves only the training log in the bucket."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    backend = make_backend("sqlite", tmp_path, "fitq_unit")
    upgrade(backend.database_url)
    factory = make_session_factory(make_engine(backend.database_url))
    url = f"s3://{s3_server.new_bucket()}/p"
    settings = Settings(data_dir=tmp_path / "data", artifacts_url=url)
    store = artifact_store(settings)
    job_id, job_dir = finished_job(factory, settings, {"keep_best": 1, "keep_last": 1})
    store.put_tree(job_dir, job_key(job_id))

    def stored() -> dict[str, int]:
        top = len(job_key(job_id)) + 1
        return {e.key[top:]: e.size for e in store.list(job_key(job_id))}

    with factory() as s:
        done = after_end(s, settings, job_id)
    assert (done.checkpoints, done.bytes) == (3, 101 + 102 + 103 + 700)
    assert sorted(stored()) == [
        "checkpoints/e4.keras",
        "checkpoints/e5.keras",
        "model.keras",
        "tensorboard/train/events.out",
        "train.log",
    ]
    assert sorted(p.name for p in (job_dir / "checkpoints").iterdir()) == ["e4.keras", "e5.keras"]
    assert not (job_dir / "backup").exists()

    left = sum(size for key, size in stored().items() if key != "train.log")
    with factory() as s:
        job = s.get(Job, job_id)
        assert job is not None
        done = delete_artifacts(s, settings, job)
    assert (done.checkpoints, done.bytes) == (2, left)
    assert list(stored()) == ["train.log"]
    assert [p.name for p in job_dir.iterdir()] == ["train.log"]


def test_remove_artifacts_skips_what_is_gone_and_never_follows_a_link(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.bin").write_bytes(b"k" * 10)
    inside = tmp_path / "job"
    inside.mkdir()
    (inside / "link").symlink_to(outside)
    (inside / "f.bin").write_bytes(b"f" * 42)
    freed = remove_artifacts([inside / "f.bin", inside / "missing", inside / "link"])
    assert freed == 42 + len(str(outside))  # the link itself: its size is its target's name
    assert (outside / "keep.bin").read_bytes() == b"k" * 10
    assert list(inside.iterdir()) == []
