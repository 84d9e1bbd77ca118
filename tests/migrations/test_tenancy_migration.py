"""Idempotency keys, token names and stored class histograms across migration 0007,
on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import Connection, insert, select, text
from sqlalchemy.exc import IntegrityError

from api.jobs import create_job, spec_hash
from api.tokens import Principal, authenticate, create_token, digest, revoke_token
from core.db import make_engine, make_session_factory
from core.errors import Conflict
from core.settings import Settings
from migrations.migrate import upgrade
from models.spec import JobSpec
from models.tables import ApiToken, Dataset, Job, utcnow
from tests.conftest import Backend, make_backend
from tests.factories import digits_spec

# (id, owner, the key as fitq stored it before 0007)
OLD_ROWS = [
    ("a" * 32, "team", "team:ml:K"),
    ("b" * 32, None, ":open-key"),
    ("c" * 32, "alice", "alice:k1"),
    ("d" * 32, None, "before-owners"),
    ("e" * 32, "bob", None),
]


@pytest.fixture(params=["sqlite", "postgres"])
def at_0006(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    backend = make_backend(request.param, tmp_path, "fitq_tenancy")
    upgrade(backend.database_url, "0006")
    return backend


def _spec() -> JobSpec:
    return JobSpec.model_validate(digits_spec())


def _insert(conn: Connection, job_id: str, owner: str | None, **keys: str | None) -> None:
    spec = _spec()
    conn.execute(
        insert(Job.__table__),
        {
            "id": job_id,
            "owner": owner,
            "queue": "default",
            "status": "succeeded",
            "spec": spec.model_dump(mode="json"),
            "spec_hash": spec_hash(spec),
            "created_at": utcnow(),
            "updated_at": utcnow(),
            **keys,
        },
    )


def test_stored_keys_split_into_owner_and_key(at_0006: Backend) -> None:
    engine = make_engine(at_0006.database_url)
    with engine.begin() as conn:
        for job_id, owner, key in OLD_ROWS:
            _insert(conn, job_id, owner, idempotency_key=key)
    upgrade(at_0006.database_url)

    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT id, idempotency_owner, idempotency_key FROM jobs ORDER BY id")
        ).all()
    assert [tuple(r) for r in rows] == [
        ("a" * 32, "team", "ml:K"),
        ("b" * 32, "", "open-key"),
        ("c" * 32, "alice", "k1"),
        ("d" * 32, None, "before-owners"),
        ("e" * 32, None, None),
    ]

    spec, settings = _spec(), Settings(database_url=at_0006.database_url)
    with make_session_factory(engine)() as s:
        for owner, key, expected in (
            ("team", "ml:K", "a" * 32),
            (None, "open-key", "b" * 32),
            ("alice", "k1", "c" * 32),
        ):
            job, created = create_job(s, spec, settings, key, Principal(owner, owner is None))
            assert (job.id, created) == (expected, False)
        # The key of another owner, or one stored before owners existed, finds nothing.
        for owner, key in (("team:ml", "K"), (None, "before-owners"), ("bob", "k1")):
            job, created = create_job(s, spec, settings, key, Principal(owner, owner is None))
            assert created and job.id not in {r[0] for r in OLD_ROWS}
        assert len(s.scalars(select(Job)).all()) == len(OLD_ROWS) + 3
    engine.dispose()


def test_one_owner_and_key_is_one_row(at_0006: Backend) -> None:
    upgrade(at_0006.database_url)
    engine = make_engine(at_0006.database_url)
    with engine.begin() as conn:
        _insert(conn, "a" * 32, "team", idempotency_owner="team", idempotency_key="K")
        _insert(conn, "b" * 32, "team:ml", idempotency_owner="team:ml", idempotency_key="K")
        _insert(conn, "c" * 32, None, idempotency_owner="", idempotency_key="K")
    with pytest.raises(IntegrityError), engine.begin() as conn:
        _insert(conn, "d" * 32, "team", idempotency_owner="team", idempotency_key="K")
    engine.dispose()


def test_a_revoked_name_is_issued_again_once(at_0006: Backend) -> None:
    upgrade(at_0006.database_url)
    engine = make_engine(at_0006.database_url)
    with make_session_factory(engine)() as s:
        old = create_token(s, "alice")
        revoke_token(s, "alice")
        new = create_token(s, "alice")
        with pytest.raises(Conflict, match="alice"):
            create_token(s, "alice")
        assert authenticate(s, old) is None
        assert authenticate(s, new) == Principal("alice", False)
        s.add(ApiToken(name="alice", token_hash=digest("x"), admin=False, created_at=utcnow()))
        with pytest.raises(IntegrityError):
            s.commit()
        s.rollback()
        revoke_token(s, "alice")
        third = create_token(s, "alice")
        assert authenticate(s, third) == Principal("alice", False)
        assert [t.revoked_at is None for t in s.scalars(select(ApiToken))] == [False, False, True]
    engine.dispose()


@pytest.mark.parametrize("name", ["", "x" * 101, "tab\there"])
def test_token_names_are_bounded_and_printable(tmp_path: Path, name: str) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    upgrade(url)
    with make_session_factory(make_engine(url))() as s, pytest.raises(ValueError, match="1 to 100"):
        create_token(s, name)


def test_stored_class_histograms_past_the_cap_give_way_to_the_range(at_0006: Backend) -> None:
    # Past FITQ_MAX_LABEL_CLASSES (8192 by default).
    hostile = {"n_samples": 2, "n_classes": 10000, "class_counts": [0, 1] + [0] * 9997 + [1]}
    small = {"n_samples": 3, "n_classes": 2, "class_counts": [1, 2]}
    images = {"n_samples": 2000, "class_names": [f"c{i}" for i in range(2000)]}
    images |= {"n_classes": 2000, "class_counts": [1] * 2000}
    rows = {
        "a" * 32: {"train": hostile, "validation": small},
        "b" * 32: {"train": small},
        "c" * 32: {"train": images},
    }
    engine = make_engine(at_0006.database_url)
    with engine.begin() as conn:
        for dataset_id, info in rows.items():
            conn.execute(
                insert(Dataset.__table__),
                {
                    "id": dataset_id,
                    "kind": "npz",
                    "created_at": utcnow(),
                    "size_bytes": 1,
                    "sha256": "0" * 64,
                    "info": info,
                },
            )
    upgrade(at_0006.database_url)
    with make_session_factory(engine)() as s:
        after = {d.id: d.info for d in s.scalars(select(Dataset))}
    engine.dispose()
    assert after["a" * 32]["train"] == {
        "n_samples": 2,
        "n_classes": None,
        "class_counts": None,
        "y_min": 1,
        "y_max": 9999,
    }
    assert after["a" * 32]["validation"] == small
    assert after["b" * 32] == rows["b" * 32] and after["c" * 32] == rows["c" * 32]
    assert len(json.dumps(after["a" * 32])) < 1000
