"""Migrations build the schema, match the tables, and the API refuses an unmigrated database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from core.db import make_engine
from core.errors import DatabaseNotMigrated
from migrations.migrate import check_migrated, upgrade
from models.tables import Base
from tests.conftest import ROOT, Backend


def test_migrations_match_the_tables(migrated_backend: Backend) -> None:
    engine = make_engine(migrated_backend.database_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []


def test_check_migrated_names_the_command_to_run(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    with pytest.raises(DatabaseNotMigrated, match="fitq migrate"):
        check_migrated(make_engine(url))
    upgrade(url)
    check_migrated(make_engine(url))


def test_fitq_api_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    env = {"FITQ_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "fitq", "api", "--port", "1"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "run `fitq migrate`" in out.stderr


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
