"""An in-process API (FastAPI's TestClient) on a migrated SQLite database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from core.settings import Settings
from migrations.migrate import upgrade


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'api.db'}")
    upgrade(s.resolved_database_url)
    return s


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The real app on a real (SQLite) database; jobs go to the embedded broker's folder."""
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[TestClient, Settings]]:
    """The app with FITQ_AUTH=on (tokens required); some test files give their own."""
    settings = Settings(
        data_dir=tmp_path / "d", database_url=f"sqlite:///{tmp_path / 'a.db'}", auth="on"
    )
    upgrade(settings.resolved_database_url)
    with TestClient(create_app(settings)) as client:
        yield client, settings
