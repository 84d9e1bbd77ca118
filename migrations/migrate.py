"""Runs Alembic migrations and tells whether a database is at the latest one."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

import migrations
from core.errors import DatabaseNotMigrated


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Migrates the database at ``url`` to ``revision`` (the latest by default)."""
    command.upgrade(alembic_config(url), revision)


def head_revision(url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def check_migrated(engine: Engine) -> None:
    """Raises ``DatabaseNotMigrated`` unless the schema is at the latest migration."""
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    head = head_revision(str(engine.url))
    if current != head:
        raise DatabaseNotMigrated(
            f"the database at {engine.url.render_as_string(hide_password=True)} is at migration "
            f"{current or 'none'}, expected {head}: run `fitq migrate` (or start with `fitq up`, "
            "which migrates for you)"
        )
